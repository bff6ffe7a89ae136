// ACDC for ComfyUI: the browser side.
//  * Inpaint Physical Fix and ARM Token Inpaint: a row of frame buttons under the node's previews. Pressing a frame shows it and
//    puts it in the node's `image` widget, which is what ComfyUI's mask editor opens ("Open in MaskEditor"
//    in the node's menu). Painted masks are kept per frame (`masks`); "Clear" drops the current frame's.
//    The two fields that hold this state (`masks`, `image`) are hidden: the buttons are how they are set.
//    A painted frame's button reads "3●" as soon as the mask editor saves (it writes `image` directly).
//  * Validation errors of the pack's nodes: each message once, on the input it is about (acdc_errors.js).
//  * Loop Frame (close): a line saying "making frame k / N", "story done" or, after Cancel, what is kept.
// The state lives in the node's widgets (saved with the workflow); the rules are in acdc_masks.js.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { dedupeNodeErrors } from "./acdc_errors.js";
import {
  afterRun, cancelledText, clearFrame, dropLivePreviews, frameButtons, framesFromOutput, mergePreviews, progressText,
  selectFrame, watchValue,
} from "./acdc_masks.js";

const FIX = "ACDC_InpaintFix";
const PAINTED = new Set([FIX, "ACDC_ARMTokenInpaint"]);   // nodes painted on (nodes/masks.py PAINTED)
const CLOSE = "ACDC_LoopClose";

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function readState(node) {
  return {
    paint_frame: Number(widget(node, "paint_frame")?.value ?? 1),
    image: String(widget(node, "image")?.value ?? ""),
    masks: String(widget(node, "masks")?.value ?? ""),
  };
}

function writeState(node, state) {
  for (const name of ["paint_frame", "masks", "image"]) {
    const w = widget(node, name);
    if (w && w.value !== state[name]) w.value = state[name];
  }
  node._acdcLastFrame = state.paint_frame;
  showFrame(node, state.paint_frame);
  renderBar(node);
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas(true, true);
}

/** Show one frame large among the node's previews (the frontend's image grid honours imageIndex). */
function showFrame(node, frame) {
  const frames = node._acdcFrameOrder ?? [];
  const index = frames.indexOf(frame);
  if (index >= 0 && node.imgs?.length === frames.length) node.imageIndex = index;
}

function renderBar(node) {
  const bar = node._acdcBar;
  if (!bar) return;
  bar.replaceChildren();
  const label = document.createElement("span");
  label.textContent = "Paint frame:";
  label.title = "Press a frame, then right-click the node > Open in MaskEditor and paint over the error. " +
    "● marks a frame with a painted mask; Queue again to fix it.";
  label.style.cssText = "opacity:.8;margin-right:4px";
  bar.append(label);
  for (const entry of frameButtons(readState(node), node._acdcFrameOrder ?? [])) {
    const b = document.createElement("button");
    b.textContent = entry.label;
    b.title = entry.title;
    b.dataset.frame = String(entry.frame);
    b.className = "acdc-frame" + (entry.current ? " acdc-current" : "");
    b.style.cssText = "margin:0 2px;padding:1px 6px;border-radius:4px;cursor:pointer;border:1px solid #666;" +
      (entry.current ? "background:#3f789e;color:#fff" : "background:#222;color:#ddd");
    b.onclick = () => writeState(node, selectFrame(readState(node), entry.frame, node._acdcPreviews ?? {}));
    bar.append(b);
  }
  const clear = document.createElement("button");
  clear.textContent = "Clear";
  clear.title = "Remove the painted mask of the frame being painted";
  clear.className = "acdc-clear";
  clear.style.cssText = "margin-left:8px;padding:1px 6px;border-radius:4px;cursor:pointer;border:1px solid #666;background:#222;color:#ddd";
  clear.onclick = () => {
    const now = readState(node);
    writeState(node, clearFrame(now, now.paint_frame, node._acdcPreviews ?? {}));
  };
  bar.append(clear);
}

/** Hide a widget the extension drives (as ComfyUI's own extensions do); its value is still saved and sent. */
function hideWidget(w) {
  if (!w) return;
  w.hidden = true;
  w.options = { ...(w.options ?? {}), hidden: true };
}

/** Make the node tall enough to show its preview at a readable size under the widgets. */
function fitPreview(node, previewHeight = 260) {
  const minimum = node.computeSize?.() ?? node.size;
  const width = Math.max(node.size[0], minimum[0], 300);
  const height = Math.max(node.size[1], minimum[1] + previewHeight);
  if (width !== node.size[0] || height !== node.size[1]) node.setSize?.([width, height]);
}

function setupFixNode(node) {
  const bar = document.createElement("div");
  bar.className = "acdc-frame-bar";
  bar.style.cssText = "display:flex;flex-wrap:wrap;align-items:center;gap:2px;font:12px sans-serif;color:#ddd;padding:2px 4px";
  node._acdcBar = bar;
  if (node.addDOMWidget) {
    node.addDOMWidget("acdc_frames", "acdc_frame_bar", bar, { serialize: false, hideOnZoom: false,
      getMinHeight: () => 28, getMaxHeight: () => 56 });
  }
  // Typing a number into paint_frame behaves like pressing that frame's button.
  const paint = widget(node, "paint_frame");
  if (paint) {
    const original = paint.callback;
    paint.callback = function (value, ...rest) {
      const result = original?.call(this, value, ...rest);
      const previous = node._acdcLastFrame ?? value;
      if (Number(value) !== previous) {
        const state = { ...readState(node), paint_frame: previous };
        writeState(node, selectFrame(state, Number(value), node._acdcPreviews ?? {}));
      }
      return result;
    };
  }
  node._acdcLastFrame = Number(paint?.value ?? 1);
  // The mask editor assigns `image` directly when it saves; the buttons follow at once.
  for (const name of ["image", "masks"]) {
    const w = widget(node, name);
    hideWidget(w);
    watchValue(w, "value", () => renderBar(node));
  }
  renderBar(node);
}

/** Run `setup(node)` on every new node of this type, after the frontend's own creation. */
function afterCreated(nodeType, setup) {
  const created = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = created?.apply(this, arguments);
    setup(this);
    return result;
  };
}

app.registerExtension({
  name: "acdc.story",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === CLOSE) afterCreated(nodeType, setupCloseNode);
    if (PAINTED.has(nodeData.name)) {
      afterCreated(nodeType, setupFixNode);
      const configured = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const result = configured?.apply(this, arguments);
        this._acdcLastFrame = Number(widget(this, "paint_frame")?.value ?? 1);
        renderBar(this);
        return result;
      };
      const executed = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        if (output?.acdc_frames) {
          // Each frame's copy of this node reports frames 1..k (cached copies again, in any order): show
          // them all. The output object is the one the frontend just stored for this node, so the node's
          // preview follows the merged list.
          const merged = mergePreviews(this._acdcRun ?? {}, output);
          this._acdcRun = merged.byFrame;
          output.images = merged.images;
          output.acdc_frames = merged.frames;
          this._acdcPreviews = framesFromOutput(output);
          this._acdcFrameOrder = merged.frames;
          dropLivePreviews(app.nodePreviewImages, this.id);   // the frames, not a copy's last live step
        }
        const result = executed?.apply(this, arguments);
        if (output?.acdc_frames) {
          writeState(this, afterRun(readState(this), this._acdcPreviews));
          fitPreview(this);
        }
        return result;
      };
    }
  },

  async setup() {
    // ComfyUI repeats a node's validation message for every input its VALIDATE_INPUTS names: show it once.
    if (typeof api.queuePrompt === "function" && !api.queuePrompt.acdc) {
      const queue = api.queuePrompt;
      const wrapped = async function (...args) {
        try {
          const answer = await queue.apply(this, args);
          return answer?.node_errors ? { ...answer, node_errors: dedupeNodeErrors(answer.node_errors) } : answer;
        } catch (error) {
          if (error?.response?.node_errors) error.response.node_errors = dedupeNodeErrors(error.response.node_errors);
          throw error;
        }
      };
      wrapped.acdc = true;
      api.queuePrompt = wrapped;
    }
    // A new run starts a new set of frames on every fix node.
    api.addEventListener("execution_start", () => {
      for (const node of app.graph?._nodes ?? app.graph?.nodes ?? []) {
        if (PAINTED.has(node.type)) node._acdcRun = {};
        if (node.type === CLOSE) setLine(node, "", null);
        if (node._acdcFailed) {
          node._acdcFailed = false;
          node.has_errors = false;
        }
      }
    });
    // A step inside the story loop failed: ComfyUI marks Loop Frame (close), which made the copy; mark the
    // node the user placed (the copy's original) too, and say on the close node which frame stopped where.
    api.addEventListener("acdc.failed", ({ detail }) => {
      const node = findNode(detail?.node);
      if (node) {
        node._acdcFailed = true;
        node.has_errors = true;
        node.setDirtyCanvas?.(true, true);
      }
      const close = findNode(detail?.loop);
      if (close?.type === CLOSE) {
        setLine(close, String(detail.message ?? `frame ${detail.frame} stopped`), null);
      }
    });
    api.addEventListener("acdc.frame", ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node || node.type !== CLOSE) return;
      setLine(node, progressText(detail.done, detail.total), { done: Number(detail.done), total: Number(detail.total) });
    });
    // Cancel: ComfyUI lists the job as failed; the close node says what was kept and how to go on.
    api.addEventListener("execution_interrupted", () => {
      for (const node of app.graph?._nodes ?? app.graph?.nodes ?? []) {
        if (node.type !== CLOSE) continue;
        const text = cancelledText(node._acdcLast);
        if (!text) continue;
        setLine(node, text, null);
        app.extensionManager?.toast?.add?.({ severity: "info", summary: "Story cancelled", detail: text, life: 8000 });
      }
    });
  },
});

/** A node of the open graph by the id ComfyUI's server uses for it. */
function findNode(id) {
  if (id === undefined || id === null) return null;
  return app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id) ?? null;
}

function setupCloseNode(node) {
  const line = document.createElement("div");
  line.className = "acdc-progress";
  line.style.cssText = "font:12px sans-serif;color:#9cf;padding:2px 4px;white-space:normal";
  node._acdcLine = line;
  node.addDOMWidget?.("acdc_progress", "acdc_progress", line, { serialize: false, hideOnZoom: false,
    getMinHeight: () => 20, getMaxHeight: () => 40 });
}

/** The close node's line ("making frame k / N" ...) and the last progress message it came from. */
function setLine(node, text, last) {
  node._acdcLast = last;
  if (node._acdcLine) node._acdcLine.textContent = text;
  node.setDirtyCanvas?.(true, true);
}
