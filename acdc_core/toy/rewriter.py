"""The rule-based memory baseline for the toy world: resolves a story's pronouns and changes by parsing
its closed vocabulary, and writes the self-contained prompt in exactly ``world.full_prompt``'s words.

    rewrite(["Meet Mia, a red rabbit. She stands on the left of a meadow by day."], "She hops to the right.")
    -> "Mia, a red rabbit, jumps on the right of a meadow by day."

``RuleBasedChat`` wraps it as a memory ``ChatBackend``: it reads the chat that ``MemoryModule`` builds
(per-frame or whole-story) and answers like an LLM would, so it plugs into ``MemoryModule`` unchanged.
"""
from __future__ import annotations

import logging
import re
from typing import Optional, Sequence

from ..errors import InvalidInputError
from ..memory.backends import Weightless
from .world import COLOURS, NAMES, PLACES, POSITIONS, SPECIES, Scene, full_prompt

logger = logging.getLogger("acdc_core.toy")

__all__ = ["parse_sentence", "rewrite", "RuleBasedChat"]

# Phrase -> (attribute, value). Checked in order; a later match of the same attribute wins, so
# "It gets dark" is night (not "gets up") and "walks to the left" is standing + left.
_PHRASES: tuple[tuple[str, str, str], ...] = (
    *((rf"\b{n}\b", "name", n) for n in NAMES),
    *((rf"\b{s}\b", "species", s) for s in SPECIES),
    *((rf"\b{c}\b", "colour", c) for c in COLOURS),
    *((rf"\b{p}\b", "place", p) for p in PLACES),
    *((rf"\b{p}\b", "position", p) for p in POSITIONS),
    (r"\bby day\b|\bsun rises\b|\bmorning\b", "time", "day"),
    (r"\bat night\b|\bnight falls\b|\bgets dark\b", "time", "night"),
    (r"\bstands?\b|\bgets up\b|\bwalks\b|\bruns\b", "pose", "standing"),
    (r"\bjumps?\b|\bhops\b", "pose", "jumping"),
    (r"\blies\b|\blying\b", "pose", "lying"),
)
_FIELDS = ("name", "species", "colour", "place", "time", "position", "pose")


def parse_sentence(sentence: str, state: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``state`` updated with every attribute ``sentence`` mentions (a new dict)."""
    out = dict(state or {})
    for pattern, field, value in _PHRASES:
        if re.search(pattern, sentence, flags=re.I):
            out[field] = value
    return out


def rewrite(earlier: Sequence[str], new_prompt: str) -> str:
    """The self-contained prompt for ``new_prompt``, given the story so far: ``earlier`` may be the
    earlier story sentences or the earlier self-contained prompts (or a mix). Raises InvalidInputError
    when the story never says some attribute (e.g. no name)."""
    state: dict[str, str] = {}
    for sentence in list(earlier) + [new_prompt]:
        state = parse_sentence(sentence, state)
    missing = [f for f in _FIELDS if f not in state]
    if missing:
        raise InvalidInputError(f"The story so far never says the character's {', '.join(missing)}; "
                                f"cannot rewrite {new_prompt!r}.")
    return full_prompt(Scene(**state))


_NUMBERED_LINE = re.compile(r"^\s*\d+\.\s*(.*\S)\s*$")


def _numbered(block: str) -> list[str]:
    return [m.group(1) for m in map(_NUMBERED_LINE.match, block.splitlines()) if m]


class RuleBasedChat(Weightless):
    """A memory ``ChatBackend`` that answers MemoryModule's chats with :func:`rewrite` (no model).

    Reads the last user message: a per-frame chat ("Earlier prompts: ... New sentence: ...") gets one
    prompt back, a whole-story chat ("Story sentences: 1. ...") gets numbered lines. A chat it cannot
    parse gets the new sentence back unchanged (MemoryModule then uses it as is), with a warning.
    """

    def __repr__(self) -> str:
        return "RuleBasedChat()"


    def chat(self, messages: list[dict[str, str]], *, max_new_tokens: int = 96, temperature: float = 0.0,
             seed: int = 0) -> str:
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        if not users:
            raise InvalidInputError("RuleBasedChat needs a user message.")
        text = users[-1]
        if "Story sentences:" in text:  # whole-story chat: rewrite each sentence from the ones before it
            block = text[text.rfind("Story sentences:") + len("Story sentences:"):]
            sentences = _numbered(block.split("\nRewrite all")[0])
            try:
                return "\n".join(f"{k}. {rewrite(sentences[:k - 1], s)}" for k, s in enumerate(sentences, 1))
            except InvalidInputError as exc:
                logger.warning("RuleBasedChat could not rewrite the story: %s", exc)
                return "\n".join(f"{k}. {s}" for k, s in enumerate(sentences, 1))
        start, marker = text.rfind("Earlier prompts:"), text.rfind("New sentence:")
        if marker < 0:
            raise InvalidInputError("RuleBasedChat expects MemoryModule's chat format ('New sentence: ...').")
        sentence = text[marker + len("New sentence:"):].split("\nAnswer:")[0].strip()
        earlier = _numbered(text[start:marker]) if 0 <= start < marker else []
        try:
            return rewrite(earlier, sentence)
        except InvalidInputError as exc:
            logger.warning("RuleBasedChat passes the sentence through: %s", exc)
            return sentence
