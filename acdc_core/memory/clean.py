"""Turn an LLM's answer into exactly one diffusion prompt (pure functions, no model, no I/O).

Chat models wrap their answer in many ways: reasoning blocks (``<think>...</think>``), code fences,
quotes, labels ("Rewritten prompt:"), list markers ("1.", "- "), a polite preamble ("Sure! Here is the
prompt:") or notes after it. :func:`clean_prompt` keeps only the answer, on one line; it returns ``""``
when nothing usable is left, and :func:`clean_answer` then falls back to the raw story sentence.
:func:`parse_numbered_list` reads the whole-story answer (one numbered line per sentence).
"""
from __future__ import annotations

import logging
import re
import unicodedata
from typing import Optional

logger = logging.getLogger("acdc_core.memory")

__all__ = ["strip_reasoning", "clean_line", "clean_prompt", "clean_answer", "parse_numbered_list"]

_REASONING_TAGS = r"(?:think|thinking|reasoning|reflection|analysis)"
# A complete reasoning block anywhere in the text.
_REASONING_BLOCK = re.compile(rf"<({_REASONING_TAGS})\b[^>]*>.*?</\1\s*>", re.S | re.I)
# A closing tag without its opener (the chat template already emitted "<think>"): keep what follows.
_ORPHAN_CLOSE = re.compile(rf"^.*</{_REASONING_TAGS}\s*>", re.S | re.I)
# An opener that is never closed (answer cut off while reasoning): drop it and everything after it.
_UNCLOSED_OPEN = re.compile(rf"<{_REASONING_TAGS}\b[^>]*>.*\Z", re.S | re.I)
# Leaked end-of-turn / special tokens: nothing after them belongs to the answer.
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,40}\|>.*\Z|</?(?:s|eos|end_of_turn|start_of_turn)>.*\Z", re.S | re.I)
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[\w+.-]*[ \t]*$", re.M)
_INLINE_FENCE = re.compile(r"```[\w+.-]*")

_HEADING = re.compile(r"^\s*(?:#{1,6}|>+)\s*")
_EMPHASIS = re.compile(r"\*\*|__")
_BULLET = re.compile(r"^\s*[-*\u2022\u2013+]\s+")
_NUMBER = re.compile(r"^\s*(?:\(\d{1,3}\)|\[\d{1,3}\]|\d{1,3}[.):\]](?!\d))\s*")
_LABEL = re.compile(
    r"""^\s*
    (?:(?:final|rewritten|revised|refined|improved|updated|new|self-contained|complete|full|
          image|text-to-image|diffusion|dm|sd|generated|your|the|my|here(?:'s|\s+is))[\s-]+)*
    (?:prompts?|answer|output|caption|description|response|result|frame|sentence|scene|panel)
    (?:\s*\#?\s*\d{1,3})?
    \s*(?:[:\uff1a]|\s[-\u2013\u2014]\s)\s*""",
    re.I | re.X,
)
# "Sure! Here is the rewritten prompt:" and friends. Only short lines, so a real prompt is never dropped.
_ACK = re.compile(
    r"^(?:sure|okay|ok|certainly|of course|absolutely|got it|here(?:'s|\s+is|\s+are)|here you go)\b", re.I
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "`": "`",
                "\u201e": "\u201c", "\u201d": "\u201d"}
_QUOTE_CHARS = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e"
_SENTENCE_END = (".", "!", "?", "\u3002")


def strip_reasoning(text: str) -> str:
    """Remove reasoning blocks, leaked special tokens and code fences; keep everything else."""
    text = _REASONING_BLOCK.sub("\n", text)
    text = _ORPHAN_CLOSE.sub("", text)
    text = _UNCLOSED_OPEN.sub("", text)
    text = _SPECIAL_TOKEN.sub("", text)
    text = _FENCE.sub("", text)
    return _INLINE_FENCE.sub("", text)


def _printable(text: str) -> str:
    """Control characters become spaces, undecodable bytes (U+FFFD) and format characters go."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\ufffd" or cat in ("Cf", "Co", "Cs", "Cn"):
            continue
        out.append(" " if cat == "Cc" else ch)
    return "".join(out)


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] in _QUOTE_PAIRS and text[-1] == _QUOTE_PAIRS[text[0]]:
        text = text[1:-1].strip()
    # An unbalanced quote at one end only (answer cut off, or quote around the first words only).
    if text and text[0] in _QUOTE_CHARS and text.count(text[0]) == 1:
        text = text[1:].strip()
    if text and text[-1] in _QUOTE_CHARS and text.count(text[-1]) == 1:
        text = text[:-1].strip()
    return text


def clean_line(line: str) -> str:
    """One line without list markers, labels, markdown emphasis and surrounding quotes; whitespace collapsed."""
    text = " ".join(_printable(line).split())
    for _ in range(6):  # "1. **Prompt:** "Benny ..."" needs several passes; stop when nothing changes
        before = text
        text = _HEADING.sub("", text)
        text = _EMPHASIS.sub("", text).strip()
        text = _BULLET.sub("", text)
        text = _NUMBER.sub("", text)
        text = _LABEL.sub("", text)
        text = _strip_quotes(text)
        if text == before:
            break
    return text


def _is_preamble(line: str) -> bool:
    """A line that introduces the answer instead of being it ("Here is the prompt:", "Sure!")."""
    if line.endswith((":", "\uff1a")):
        return True
    return bool(_ACK.match(line)) and len(line.split()) <= 8


def _is_list_item(raw_line: str) -> bool:
    stripped = _EMPHASIS.sub("", raw_line).strip()
    return bool(_BULLET.match(stripped) or _NUMBER.match(stripped) or _LABEL.match(stripped))


def clean_prompt(raw: str) -> str:
    """The first answer in ``raw`` as one line, or ``""`` when nothing usable is there.

    A hard-wrapped answer (next line in the same paragraph, previous line not ending a sentence) is
    joined back together; anything after the answer (notes, alternatives) is dropped.
    """
    lines = strip_reasoning(raw).splitlines()
    for k, raw_line in enumerate(lines):
        line = clean_line(raw_line)
        if not line or _is_preamble(line):
            continue
        parts = [line]
        for nxt in lines[k + 1:]:
            if not nxt.strip() or parts[-1].endswith(_SENTENCE_END) or _is_list_item(nxt):
                break
            more = clean_line(nxt)
            if not more:
                break
            parts.append(more)
        return _strip_quotes(" ".join(" ".join(parts).split()))
    return ""


def clean_answer(raw: str, fallback: str, *, what: str = "memory prompt") -> tuple[str, bool]:
    """(:func:`clean_prompt` of ``raw``, False), or, when nothing usable is left (an empty answer, an unclosed
    ``<think>`` block), (``fallback`` with its whitespace collapsed, True) and a logged warning."""
    cleaned = clean_prompt(raw)
    if cleaned:
        return cleaned, False
    logger.warning("The LLM gave no usable %s (answer was %d characters); using the story sentence as is.",
                   what, len(raw))
    return " ".join(fallback.split()), True


_NUMBERED = re.compile(
    r"""^\s*(?:[#>]+\s*)?
    (?:(?:prompt|frame|sentence|scene|panel|shot|image)\s*\#?\s*)?
    [(\[]?(\d{1,3})\s*(?:[.):\]](?!\d)|\s[-\u2013\u2014]\s)\s*(.*)$""",
    re.I | re.X,
)


def parse_numbered_list(raw: str, n: int) -> list[Optional[str]]:
    """Read ``n`` prompts from a numbered answer; an entry is ``None`` where no usable prompt was found.

    Accepts "1. x", "1) x", "(1) x", "1: x", "1 - x", "**1.** x", "Frame 1: x", "Prompt 1 - x", a
    header line ("Frame 1:") followed by the prompt, and 0-based numbering. Without any numbers, a list of
    exactly ``n`` plain or bulleted lines is taken in order. Anything else leaves the entries ``None``.
    """
    lines = strip_reasoning(raw).splitlines()
    items: dict[int, list[str]] = {}
    current: Optional[list[str]] = None
    for raw_line in lines:
        line = _EMPHASIS.sub("", _printable(raw_line))
        match = _NUMBERED.match(line)
        if match:
            number = int(match.group(1))
            current = [] if number in items else items.setdefault(number, [])  # duplicates: keep the first
            text = clean_line(match.group(2))
            if text:
                current.append(text)
            continue
        if current is None:
            continue  # preamble before the list
        if not line.strip():
            if current:  # a blank line ends an item that has text; a header waits for its text
                current = None
            continue
        if current and current[-1].endswith(_SENTENCE_END):
            current = None  # a note after the item, not part of it
            continue
        text = clean_line(line)
        if text and not _is_preamble(text):
            current.append(text)

    if items:
        offset = 1 if (0 in items and n not in items) else 0
        out: list[Optional[str]] = []
        for k in range(1, n + 1):
            parts = items.get(k - offset)
            text = _strip_quotes(" ".join(" ".join(parts).split())) if parts else ""
            out.append(text or None)
        return out

    plain = [clean_line(line) for line in lines]
    plain = [line for line in plain if line and not _is_preamble(line)]
    if len(plain) == n:
        return list(plain)
    return [None] * n
