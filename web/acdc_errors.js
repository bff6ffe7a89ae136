// Pure logic: ComfyUI's validation answer for the pack's nodes, as a person should read it. No browser or
// ComfyUI objects here, so Node's test runner checks it (web/tests).
//
// ComfyUI reports a message returned by a node's VALIDATE_INPUTS once for every input that function names
// ("llm - LLM folder ... was not found", "mode - LLM folder ... was not found", ...), and the frontend marks
// each of those inputs as wrong. For the pack's nodes keep one line per message, on the input it is about.

const PACK = /^ACDC_/;

/** The message of one "custom_validation_failed" error without ComfyUI's "<input> - " prefix. */
export function messageOf(error) {
  const details = String(error?.details ?? "");
  const name = error?.extra_info?.input_name;
  return name && details.startsWith(`${name} - `) ? details.slice(name.length + 3) : details;
}

/** The input a message is about: the first of `names` it mentions as a word (else the first name). */
export function inputConcerned(message, names) {
  const words = (name) => new RegExp(`(^|[^A-Za-z0-9_])${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}([^A-Za-z0-9_]|$)`);
  let best = null;
  for (const name of names) {
    const match = words(name).exec(message);
    if (match && (best === null || match.index < best.index)) best = { name, index: match.index };
  }
  return best ? best.name : names[0];
}

/**
 * `node_errors` of a /prompt answer -> the same with each of the pack's repeated messages once, on the input it
 * is about. Other nodes' errors, and errors of other types, are kept as they are. Returns a new object.
 */
export function dedupeNodeErrors(nodeErrors) {
  if (!nodeErrors || typeof nodeErrors !== "object") return nodeErrors;
  const out = {};
  for (const [id, entry] of Object.entries(nodeErrors)) {
    if (!PACK.test(String(entry?.class_type ?? "")) || !Array.isArray(entry?.errors)) {
      out[id] = entry;
      continue;
    }
    const groups = new Map();   // message -> [errors]
    const kept = [];
    for (const error of entry.errors) {
      if (error?.type !== "custom_validation_failed") {
        kept.push(error);
        continue;
      }
      const message = messageOf(error);
      if (!groups.has(message)) {
        groups.set(message, []);
        kept.push(message);   // placeholder keeps the order
      }
      groups.get(message).push(error);
    }
    out[id] = {
      ...entry,
      errors: kept.map((item) => {
        if (typeof item !== "string") return item;
        const group = groups.get(item);
        const names = group.map((e) => e?.extra_info?.input_name).filter(Boolean);
        const name = inputConcerned(item, names);
        return group.find((e) => e?.extra_info?.input_name === name) ?? group[0];
      }),
    };
  }
  return out;
}
