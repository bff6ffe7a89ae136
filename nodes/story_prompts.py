"""Story Prompts: the story, one line per frame, typed in a node."""
from __future__ import annotations

from acdc_core.errors import InvalidInputError
from acdc_core.state import story_lines
from .graph import PROMPTS
from .widgets import EMPTY_STORY, check_story_text, tooltip
from .wires import CATEGORY, DEFAULT_STORY

class StoryPrompts:
    DESCRIPTION = ("The story: one line per frame. The first line should name the main character, its species "
                   "and the place; later lines may say \"he\" or \"she\" (the memory LLM fills in who). Blank lines "
                   "and lines starting with # are skipped.")
    CATEGORY = CATEGORY
    FUNCTION = "prompts"
    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("prompts", "frames")
    OUTPUT_TOOLTIPS = ("The story lines, one per frame.", "How many frames the story has.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", tooltip("One line per frame.", default=DEFAULT_STORY,
                                                        multiline=True))}}

    @classmethod
    def VALIDATE_INPUTS(cls, text):
        return check_story_text(text)

    def prompts(self, text):
        lines = story_lines(text)
        if not lines:
            raise InvalidInputError(EMPTY_STORY)
        return ("\n".join(lines), len(lines))


NODES = {PROMPTS: (StoryPrompts, "Story Prompts (ACDC)")}
