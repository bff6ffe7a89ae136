"""LLM Memory Prompt (ACDC step 3): a self-contained prompt y_i for the diffusion model, from the story so far."""
from __future__ import annotations

from acdc_core.story import memory_prompt
from .widgets import tooltip
from .wires import CATEGORY, DM, MEMORY, STORY


class LLMMemoryPrompt:
    DESCRIPTION = ("ACDC step 3: the memory LLM rewrites the next frame's story line into a self-contained prompt "
                   "for the diffusion model, from the earlier frames' prompts (\"He jumps over a log\" -> \"Benny, "
                   "the golden retriever, jumps over a log in a sunny meadow\").")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "prompt"
    RETURN_TYPES = ("STRING", "BOOLEAN")
    RETURN_NAMES = ("prompt", "fell_back")
    OUTPUT_TOOLTIPS = ("The diffusion model's prompt for the next frame.",
                       "True where the LLM gave nothing usable (an empty answer, an unclosed <think>) and the prompt is "
                       "the story line as is; the memory loader's strict option makes that an error instead.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "memory": (MEMORY, tooltip("From Load Memory LLM or Memory LLM Endpoint.")),
                "story": (STORY, tooltip("The story so far (from Loop Frame (open)).")),
            },
            "optional": {
                "dm": (DM, tooltip("The diffusion model the prompt is for: the prompt is cut, at a word, to fit its "
                                   "text encoder (77 tokens for CLIP).")),
            },
        }

    def prompt(self, memory, story, dm=None):
        module = memory.use()
        if story.next_index == 0:
            module.check()  # an unreachable endpoint fails here, on the first frame, with a clear message
        answer = memory_prompt(story, module, dm.engine if dm is not None else None)
        return (answer.text, answer.fallback)


NODES = {"ACDC_LLMMemoryPrompt": (LLMMemoryPrompt, "LLM Memory Prompt (ACDC)")}
