// Pure logic of the mask-painting UI of "Inpaint Physical Fix (ACDC)": which frame the mask editor paints,
// and which painted file belongs to which frame. No browser or ComfyUI objects here, so Node's test runner
// checks it (web/tests). The same rules are in nodes/fix.py (effective_masks, dump_masks, is_painted).
//
// The node's widgets hold the whole state, so it is saved with the workflow:
//   paint_frame  the frame the mask editor paints (1-based)
//   image        what the mask editor opens: that frame's preview ("... [temp]"), and after painting the
//                file the mask editor saved ("clipspace-painted-masked-123.png [input]")
//   masks        JSON {"frame": "painted file"} for frames painted earlier
// A painted file in `image` always applies to `paint_frame`; switching frames moves it into `masks`.

const ANNOTATION = /^(.*?)\s*\[(input|output|temp)\]$/;

/** "input", "output" or "temp": the ComfyUI folder an annotated file name points at (input by default). */
export function annotationType(value) {
  const match = ANNOTATION.exec(String(value ?? "").trim());
  return match ? match[2] : "input";
}

/** A painted mask is a file in ComfyUI's input folder; a frame preview (temp/output) is not. */
export function isPainted(value) {
  return typeof value === "string" && value.trim() !== "" && annotationType(value) === "input";
}

/** The `masks` widget text -> {frame: file}. Invalid text gives {} (the server reports it properly). */
export function parseMasks(text) {
  if (!text || !String(text).trim()) return {};
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return {};
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) return {};
  const out = {};
  for (const [key, value] of Object.entries(data)) {
    const frame = Number(key);
    if (Number.isInteger(frame) && frame >= 1 && typeof value === "string" && value.trim()) {
      out[frame] = value.trim();
    }
  }
  return out;
}

/** {frame: file} -> canonical `masks` text: frames in order, no spaces, "" when empty (as the server). */
export function dumpMasks(masks) {
  const frames = Object.keys(masks).map(Number).sort((a, b) => a - b);
  if (frames.length === 0) return "";
  return "{" + frames.map((f) => `${JSON.stringify(String(f))}:${JSON.stringify(masks[f])}`).join(",") + "}";
}

/** A ui image entry {filename, subfolder, type} -> the annotated name a widget holds. */
export function refToValue(ref) {
  if (!ref || !ref.filename) return "";
  const path = ref.subfolder ? `${ref.subfolder}/${ref.filename}` : ref.filename;
  return `${path} [${ref.type || "output"}]`;
}

/** The node's last output -> {frame: preview value}: images numbered by `acdc_frames`. */
export function framesFromOutput(output) {
  const images = output?.images ?? [];
  const numbers = output?.acdc_frames ?? [];
  const frames = {};
  images.forEach((ref, i) => {
    const frame = Number(numbers[i] ?? i + 1);
    if (Number.isInteger(frame) && frame >= 1) frames[frame] = refToValue(ref);
  });
  return frames;
}

/**
 * Merge a run's preview messages: each copy of the fix node reports the frames made so far (1..k), and
 * cached copies report again in any order; keep the latest image of every frame, in frame order.
 * Returns {frames: [1, 2, ...], images: [ref, ...]}.
 */
export function mergePreviews(known, output) {
  const merged = { ...(known ?? {}) };
  const images = output?.images ?? [];
  const numbers = output?.acdc_frames ?? [];
  images.forEach((ref, i) => {
    const frame = Number(numbers[i] ?? i + 1);
    if (Number.isInteger(frame) && frame >= 1) merged[frame] = ref;
  });
  const frames = Object.keys(merged).map(Number).sort((a, b) => a - b);
  return { byFrame: merged, frames, images: frames.map((f) => merged[f]) };
}

/** Every frame's painted file: `masks`, with a painted `image` for `paint_frame`. */
export function effectiveMasks(state) {
  const masks = parseMasks(state.masks);
  if (isPainted(state.image)) masks[Number(state.paint_frame)] = state.image.trim();
  return masks;
}

/** Frames that have a painted mask, in order. */
export function maskedFrames(state) {
  return Object.keys(effectiveMasks(state)).map(Number).sort((a, b) => a - b);
}

/**
 * Switch the frame to paint. The painted file of the frame left behind goes into `masks`; `image` becomes
 * the new frame's painted file (the mask editor reopens it with the strokes) or else its preview.
 * Returns a new state; `state` is not changed.
 */
export function selectFrame(state, frame, previews = {}) {
  const masks = effectiveMasks(state);
  const target = Math.max(1, Math.floor(Number(frame) || 1));
  return {
    paint_frame: target,
    masks: dumpMasks(masks),
    image: masks[target] ?? previews[target] ?? "",
  };
}

/** Remove a frame's painted mask; if it is the frame being painted, show its preview again. */
export function clearFrame(state, frame, previews = {}) {
  const masks = effectiveMasks(state);
  delete masks[frame];
  const current = Number(state.paint_frame);
  return {
    paint_frame: current,
    masks: dumpMasks(masks),
    image: current === frame ? previews[frame] ?? "" : (masks[current] ?? state.image ?? ""),
  };
}

/** After a run: keep the state, but point an unpainted `image` at the current frame's fresh preview. */
export function afterRun(state, previews) {
  if (isPainted(state.image)) return { ...state };
  return { ...state, image: previews[Number(state.paint_frame)] ?? state.image ?? "" };
}

/**
 * The frame buttons under the fix node: one per frame shown (and per painted frame), "3●" for a frame with a
 * painted mask (including one the mask editor has just saved into `image`), the current frame marked.
 * `frames`: the frames the node's previews show, in any order (may be empty before the first run).
 */
export function frameButtons(state, frames = []) {
  const masked = new Set(maskedFrames(state));
  const current = Number(state.paint_frame);
  const all = [...new Set([...frames.map(Number), ...masked, current])].filter((f) => Number.isInteger(f) && f >= 1);
  return all.sort((a, b) => a - b).map((frame) => ({
    frame,
    label: masked.has(frame) ? `${frame}●` : String(frame),
    title: masked.has(frame) ? `Frame ${frame} (has a painted mask)` : `Paint frame ${frame}`,
    current: frame === current,
  }));
}

/**
 * Call `onChange(value)` after every assignment to `target[name]`, whoever makes it (the mask editor assigns
 * the `image` widget's value directly, with no callback). Keeps the property's own getter/setter, or its
 * stored value, working as before. Calling it again on the same property adds nothing.
 */
export function watchValue(target, name, onChange) {
  if (!target) return;
  const marker = `__acdcWatch_${name}`;
  if (target[marker]) return;
  let owner = target, descriptor;
  while (owner && !(descriptor = Object.getOwnPropertyDescriptor(owner, name))) owner = Object.getPrototypeOf(owner);
  let stored = target[name];
  const get = descriptor?.get ? () => descriptor.get.call(target) : () => stored;
  const set = descriptor?.set ? (v) => descriptor.set.call(target, v) : (v) => { stored = v; };
  Object.defineProperty(target, name, {
    configurable: true,
    enumerable: descriptor?.enumerable ?? true,
    get,
    set(value) {
      const before = get();
      set(value);
      if (get() !== before) onChange(get());
    },
  });
  Object.defineProperty(target, marker, { value: true });
}

/** The story line on Loop Frame (close): from the loop's "acdc.frame" message ({done, total}). */
export function progressText(done, total) {
  done = Number(done);
  total = Number(total);
  return done >= total ? `story done: ${total} frame(s)` : `making frame ${done + 1} / ${total}`;
}

/** What Loop Frame (close) says after Cancel, given the last "acdc.frame" message (or null). */
export function cancelledText(last) {
  if (!last || Number(last.done) >= Number(last.total)) return "";
  const done = Number(last.done);
  const kept = done === 0 ? "no frame was finished" : `frames 1-${done} are kept (cached)`;
  return `cancelled during frame ${done + 1} / ${Number(last.total)}: ${kept}; Queue again to go on`;
}

// The live previews the frontend keeps for a node (app.nodePreviewImages, by node locator id: "17" on the root
// graph, "<subgraph>:17" inside one) are shown instead of its outputs. The frontend drops them when the node
// itself starts running, which a story-loop copy never does, so after a run the last MaskGIT or sampling step
// would hide the node's frame previews. Removes this node's entries; returns how many there were.
export function dropLivePreviews(previews, nodeId) {
  if (!previews) return 0;
  const id = String(nodeId);
  const keys = Object.keys(previews).filter((key) => key === id || key.endsWith(`:${id}`));
  for (const key of keys) delete previews[key];
  return keys.length;
}
