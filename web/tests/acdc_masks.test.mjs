// node --test web/tests/ : the mask-painting logic of the web extension.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  afterRun,
  annotationType,
  clearFrame,
  dumpMasks,
  effectiveMasks,
  framesFromOutput,
  isPainted,
  maskedFrames,
  mergePreviews,
  parseMasks,
  refToValue,
  selectFrame,
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
