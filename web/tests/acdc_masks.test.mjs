// node --test web/tests/ : the mask-painting logic of the web extension.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  afterRun,
  annotationType,
  cancelledText,
  clearFrame,
  dumpMasks,
  effectiveMasks,
  frameButtons,
  framesFromOutput,
  isPainted,
  maskedFrames,
  mergePreviews,
  parseMasks,
  progressText,
  refToValue,
  selectFrame,
  watchValue,
} from "../acdc_masks.js";

const PREVIEWS = { 1: "acdc/frame_a.png [temp]", 2: "acdc/frame_b.png [temp]", 3: "acdc/frame_c.png [temp]" };
const PAINTED = "clipspace-painted-masked-1700000000000.png [input]";

test("annotated names: painted files live in input, previews in temp", () => {
  assert.equal(annotationType("a.png [temp]"), "temp");
  assert.equal(annotationType("sub/a.png [output]"), "output");
  assert.equal(annotationType("clipspace/a.png"), "input");
  assert.ok(isPainted(PAINTED));
  assert.ok(!isPainted(PREVIEWS[1]));
  assert.ok(!isPainted(""));
  assert.ok(!isPainted(undefined));
});

test("masks text round-trips in the server's canonical form", () => {
  const masks = { 3: "b.png [input]", 1: "a.png [input]" };
  const text = dumpMasks(masks);
  assert.equal(text, '{"1":"a.png [input]","3":"b.png [input]"}'); // json.dumps(..., separators=(",", ":"))
  assert.deepEqual(parseMasks(text), { 1: "a.png [input]", 3: "b.png [input]" });
  assert.equal(dumpMasks({}), "");
  assert.deepEqual(parseMasks(""), {});
  assert.deepEqual(parseMasks("not json"), {});
  assert.deepEqual(parseMasks('{"0":"x","a":"y","2":""}'), {});
});

test("the node's output numbers its preview images by frame", () => {
  const output = {
    images: [
      { filename: "frame_a.png", subfolder: "acdc", type: "temp" },
      { filename: "frame_b.png", subfolder: "acdc", type: "temp" },
    ],
    acdc_frames: [1, 2],
  };
  assert.deepEqual(framesFromOutput(output), { 1: PREVIEWS[1], 2: PREVIEWS[2] });
  assert.equal(refToValue({ filename: "x.png", type: "input" }), "x.png [input]");
  assert.deepEqual(framesFromOutput(undefined), {});
});

test("picking a frame puts its preview in `image` for the mask editor", () => {
  const state = { paint_frame: 1, image: PREVIEWS[1], masks: "" };
  assert.deepEqual(selectFrame(state, 3, PREVIEWS), { paint_frame: 3, masks: "", image: PREVIEWS[3] });
});

test("a painted frame keeps its mask when another frame is picked, and reopens with it", () => {
  const painted = { paint_frame: 3, image: PAINTED, masks: "" };
  assert.deepEqual(maskedFrames(painted), [3]);
  const moved = selectFrame(painted, 2, PREVIEWS);
  assert.deepEqual(moved, { paint_frame: 2, masks: `{"3":"${PAINTED}"}`, image: PREVIEWS[2] });
  assert.deepEqual(effectiveMasks(moved), { 3: PAINTED }); // the same masks as before the switch
  const back = selectFrame(moved, 3, PREVIEWS);
  assert.equal(back.image, PAINTED);
  assert.deepEqual(effectiveMasks(back), { 3: PAINTED });
  assert.deepEqual(painted, { paint_frame: 3, image: PAINTED, masks: "" }); // inputs are not changed
});

test("clearing a frame drops its mask and shows its preview again", () => {
  const state = { paint_frame: 3, image: PAINTED, masks: '{"1":"a.png [input]"}' };
  assert.deepEqual(clearFrame(state, 3, PREVIEWS), { paint_frame: 3, masks: '{"1":"a.png [input]"}', image: PREVIEWS[3] });
  assert.deepEqual(clearFrame(state, 1, PREVIEWS), { paint_frame: 3, masks: `{"3":"${PAINTED}"}`, image: PAINTED });
});

test("after a run an unpainted frame shows its new preview; a painted one keeps its file", () => {
  const fresh = { 1: "acdc/frame_new.png [temp]" };
  assert.equal(afterRun({ paint_frame: 1, image: PREVIEWS[1], masks: "" }, fresh).image, fresh[1]);
  assert.equal(afterRun({ paint_frame: 1, image: PAINTED, masks: "" }, fresh).image, PAINTED);
  assert.equal(afterRun({ paint_frame: 4, image: "", masks: "" }, fresh).image, "");
});

test("frame numbers are whole and at least 1", () => {
  assert.equal(selectFrame({ paint_frame: 1, image: "", masks: "" }, 0).paint_frame, 1);
  assert.equal(selectFrame({ paint_frame: 1, image: "", masks: "" }, "4").paint_frame, 4);
});

test("preview messages from the frame copies merge into every frame, whatever their order", () => {
  const ref = (f) => ({ filename: `frame_${f}.png`, subfolder: "acdc", type: "temp" });
  let state = mergePreviews({}, { images: [ref(1), ref(2), ref(3)], acdc_frames: [1, 2, 3] });
  state = mergePreviews(state.byFrame, { images: [ref(1)], acdc_frames: [1] }); // a cached copy, late
  assert.deepEqual(state.frames, [1, 2, 3]);
  const fixed = { ...ref(2), filename: "frame_2_fixed.png" };
  state = mergePreviews(state.byFrame, { images: [ref(1), fixed], acdc_frames: [1, 2] });
  assert.deepEqual(state.images.map((r) => r.filename), ["frame_1.png", "frame_2_fixed.png", "frame_3.png"]);
});

// The mask editor's save, as ComfyUI's frontend (1.49) does it: it assigns the `image` widget's value directly
// (no callback) with the painted file; widgets keep their value behind a getter/setter on their class.
class FakeWidget {
  #value;
  constructor(name, value) { this.name = name; this.#value = value; this.sets = 0; }
  get value() { return this.#value; }
  set value(v) { this.sets += 1; this.#value = v; }
}

test("a mask saved in the mask editor turns the frame's button into 3● at once", () => {
  const widgets = {
    paint_frame: new FakeWidget("paint_frame", 3),
    image: new FakeWidget("image", PREVIEWS[3]),
    masks: new FakeWidget("masks", ""),
  };
  const state = () => ({ paint_frame: widgets.paint_frame.value, image: widgets.image.value, masks: widgets.masks.value });
  const labels = () => frameButtons(state(), [1, 2, 3]).map((b) => b.label);
  const drawn = [];
  watchValue(widgets.image, "value", () => drawn.push(labels()));
  watchValue(widgets.image, "value", () => drawn.push("twice"));   // a second watch adds nothing
  assert.deepEqual(labels(), ["1", "2", "3"]);

  widgets.image.value = PAINTED;                                  // what the mask editor's Save does
  assert.deepEqual(drawn, [["1", "2", "3●"]]);
  assert.equal(widgets.image.value, PAINTED);                     // the widget's own setter still ran
  assert.equal(widgets.image.sets, 1);
  widgets.image.value = PAINTED;                                  // the same value again: nothing to redraw
  assert.equal(drawn.length, 1);
  assert.deepEqual(frameButtons(state(), [1, 2, 3]).find((b) => b.frame === 3),
    { frame: 3, label: "3●", title: "Frame 3 (has a painted mask)", current: true });
});

test("watchValue also works on a plain data property", () => {
  const w = { value: "a" };
  const seen = [];
  watchValue(w, "value", (v) => seen.push(v));
  w.value = "b";
  assert.deepEqual(seen, ["b"]);
  assert.equal(w.value, "b");
  assert.deepEqual(Object.keys(w), ["value"]);
});

test("frame buttons: frames shown, painted frames and the current one, in order", () => {
  const state = { paint_frame: 5, image: "", masks: dumpMasks({ 2: PAINTED }) };
  assert.deepEqual(frameButtons(state, [3, 1]).map((b) => [b.label, b.current]),
    [["1", false], ["2●", false], ["3", false], ["5", true]]);
  assert.deepEqual(frameButtons({ paint_frame: 1, image: "", masks: "" }).map((b) => b.label), ["1"]);
});

test("the close node's line: progress, done, and what Cancel kept", () => {
  assert.equal(progressText(2, 6), "making frame 3 / 6");
  assert.equal(progressText(6, 6), "story done: 6 frame(s)");
  assert.equal(cancelledText({ done: 2, total: 6 }),
    "cancelled during frame 3 / 6: frames 1-2 are kept (cached); Queue again to go on");
  assert.match(cancelledText({ done: 0, total: 6 }), /no frame was finished/);
  assert.equal(cancelledText({ done: 6, total: 6 }), "");   // finished before Cancel: nothing to say
  assert.equal(cancelledText(null), "");
});

test("a painted node's leftover live previews are dropped so its frame previews show", async () => {
  const { dropLivePreviews } = await import("../acdc_masks.js");
  const previews = { 17: ["blob:a"], "sub-1:17": ["blob:b"], 170: ["blob:c"], 6: ["blob:d"] };
  assert.equal(dropLivePreviews(previews, 17), 2);
  assert.deepEqual(Object.keys(previews).sort(), ["170", "6"]);
  assert.equal(dropLivePreviews(undefined, 17), 0);
});
