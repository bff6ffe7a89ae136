// ACDC for ComfyUI: the browser side.
//  * Inpaint Physical Fix: a row of frame buttons under the node's previews. Pressing a frame shows it and
//    puts it in the node's `image` widget, which is what ComfyUI's mask editor opens ("Open in MaskEditor"
//    in the node's menu). Painted masks are kept per frame (`masks`); "Clear" drops the current frame's.
//  * Loop Frame (close): shows "frame k / N" while a story is being made.
// The state lives in the node's widgets (saved with the workflow); the rules are in acdc_masks.js.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { afterRun, clearFrame, framesFromOutput, maskedFrames, mergePreviews, selectFrame } from "./acdc_masks.js";

const FIX = "ACDC_InpaintFix";
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
  const state = readState(node);
  const masked = new Set(maskedFrames(state));
  const frames = node._acdcFrameOrder?.length ? node._acdcFrameOrder : [...masked, state.paint_frame];
  const unique = [...new Set(frames)].sort((a, b) => a - b);
  bar.replaceChildren();
  const label = document.createElement("span");
  label.textContent = "Paint frame:";
  label.style.cssText = "opacity:.8;margin-right:4px";
  bar.append(label);
  for (const frame of unique) {
    const b = document.createElement("button");
    b.textContent = masked.has(frame) ? `${frame}●` : String(frame);
    b.title = masked.has(frame) ? `Frame ${frame} (has a painted mask)` : `Paint frame ${frame}`;
    b.dataset.frame = String(frame);
    b.className = "acdc-frame" + (frame === state.paint_frame ? " acdc-current" : "");
    b.style.cssText = "margin:0 2px;padding:1px 6px;border-radius:4px;cursor:pointer;border:1px solid #666;" +
      (frame === state.paint_frame ? "background:#3f789e;color:#fff" : "background:#222;color:#ddd");
    b.onclick = () => writeState(node, selectFrame(readState(node), frame, node._acdcPreviews ?? {}));
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
  renderBar(node);
}

app.registerExtension({
  name: "acdc.story",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === FIX) {
      const created = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = created?.apply(this, arguments);
        setupFixNode(this);
        return result;
      };
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
        }
        const result = executed?.apply(this, arguments);
        if (output?.acdc_frames) writeState(this, afterRun(readState(this), this._acdcPreviews));
        return result;
      };
    }
  },

  async setup() {
    // A new run starts a new set of frames on every fix node.
    api.addEventListener("execution_start", () => {
      for (const node of app.graph?._nodes ?? app.graph?.nodes ?? []) {
        if (node.type === FIX) node._acdcRun = {};
      }
    });
    api.addEventListener("acdc.frame", ({ detail }) => {
      const node = app.graph?.getNodeById?.(Number(detail?.node)) ?? app.graph?.getNodeById?.(detail?.node);
      if (!node || node.type !== CLOSE) return;
      const done = Number(detail.done), total = Number(detail.total);
      node._acdcProgress = done >= total ? `story done: ${total} frame(s)` : `making frame ${done + 1} / ${total}`;
      node.setDirtyCanvas?.(true, true);
    });
  },

  async nodeCreated(node) {
    if (node.type !== CLOSE) return;
    const draw = node.onDrawForeground;
    node.onDrawForeground = function (ctx) {
      const result = draw?.apply(this, arguments);
      if (this._acdcProgress && !this.flags?.collapsed) {
        ctx.save();
        ctx.font = "12px sans-serif";
        ctx.fillStyle = "#9cf";
        ctx.textAlign = "right";
        ctx.fillText(this._acdcProgress, this.size[0] - 8, -8);
        ctx.restore();
      }
      return result;
    };
  },
});
