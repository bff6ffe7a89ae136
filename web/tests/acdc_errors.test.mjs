// node --test web/tests/ : how the pack's validation errors are shown.
import assert from "node:assert/strict";
import { test } from "node:test";

import { dedupeNodeErrors, inputConcerned, messageOf } from "../acdc_errors.js";

const repeated = (message, names) => names.map((name) => ({
  type: "custom_validation_failed", message: "Custom validation failed for node", details: `${name} - ${message}`,
  extra_info: { input_name: name },
}));

test("a message ComfyUI repeats for every input VALIDATE_INPUTS names is shown once, on its input", () => {
  // As ComfyUI 0.33 answered for Load Memory LLM with a folder that is not there (four lines, four red inputs).
  const missing = "LLM folder 'missing-llm' was not found in /models/LLM. Put it there and press R to refresh the lists.";
  const nan = "temperature must be a finite number in [0, 2]; got nan.";
  const answer = {
    4: { errors: [...repeated(missing, ["mode", "llm", "temperature", "trust_remote_code"]),
                  ...repeated(nan, ["mode", "llm", "temperature", "trust_remote_code"])],
         dependent_outputs: ["14"], class_type: "ACDC_LoadMemoryLLM" },
    9: { errors: repeated("something", ["a", "b"]), class_type: "KSampler" },   // not the pack's: as it was
  };
  const before = JSON.stringify(answer);
  const shown = dedupeNodeErrors(answer);
  assert.equal(JSON.stringify(answer), before);                                 // a new object
  assert.deepEqual(shown[4].errors.map((e) => [e.extra_info.input_name, messageOf(e)]),
    [["llm", missing], ["temperature", nan]]);
  assert.deepEqual(shown[4].dependent_outputs, ["14"]);
  assert.equal(shown[9], answer[9]);
});

test("other error types and single errors are kept", () => {
  const answer = { 3: { class_type: "ACDC_SDEditCorrect", errors: [
    { type: "value_smaller_than_min", details: "steps", extra_info: { input_name: "steps" } },
    ...repeated("correct_frames must be 'all' or frame numbers", ["correct_frames"]),
  ] } };
  assert.deepEqual(dedupeNodeErrors(answer), answer);
  assert.equal(dedupeNodeErrors(null), null);
});

test("the input a message is about: the first named as a word, else the first", () => {
  assert.equal(inputConcerned("the mask painted in the image field: gone.png", ["masks", "image"]), "image");
  assert.equal(inputConcerned("the masks field is not valid JSON", ["masks", "image"]), "masks");
  assert.equal(inputConcerned("t_prime must be in [0.01, 1]", ["cfg", "t_prime"]), "t_prime");
  assert.equal(inputConcerned("nothing named", ["cfg", "t_prime"]), "cfg");
});
