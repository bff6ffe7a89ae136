"""The memory module: the LLM that writes a self-contained diffusion prompt ``y_i`` for every story frame.

Step 3 of ACDC. A later story sentence ("He jumps over a log") does not say who "he" is or where the
story takes place; the diffusion model only sees its own prompt, so the memory module rewrites the
sentence from the earlier prompts ("Benny, the golden retriever, jumps over a log in a sunlit meadow").

Three modes, all behind one object:

* ``off`` -- the ablation: the DM gets the raw story sentence.
* ``per-frame`` -- one chat query per frame: the earlier memory prompts ``y_0..y_{i-1}`` plus the new
  sentence ``u_i``. Uses nothing after frame ``i``.
* ``whole-story`` -- ONE query with the whole list of sentences, asking the LLM to rewrite them causally
  (prompt ``k`` from sentences ``1..k`` only). By design this query sees the whole list, as in the paper;
  causality is asked of the LLM, not enforced. Frames the answer does not cover are filled in per frame.

The system prompts are data (``system_prompt.txt``, ``system_prompt_whole_story.txt``) and can be replaced
through :class:`MemorySettings`. Every prompt is cleaned to one line and then passed through ``fit``
(the DM corrector's ``fit_prompt``, which fits it to the DM's text window).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Literal, Optional, Protocol, Sequence, runtime_checkable

from ..errors import InvalidInputError, MemoryAnswerError, check_number, check_seed, quote_head
from .backends import ChatBackend, Message
from .clean import clean_answer, parse_numbered_list

logger = logging.getLogger("acdc_core.memory")

__all__ = ["Memory", "MemoryAnswer", "MemoryMode", "MEMORY_MODES", "MemorySettings", "MemoryModule", "DEFAULT_SYSTEM_PROMPT",
           "DEFAULT_WHOLE_STORY_SYSTEM_PROMPT", "load_prompt_text", "per_frame_messages", "whole_story_messages",
           "validate_story"]

MemoryMode = Literal["off", "per-frame", "whole-story"]
MEMORY_MODES: tuple[str, ...] = ("off", "per-frame", "whole-story")


def load_prompt_text(name: str) -> str:
    """A prompt text file shipped in this package (e.g. ``system_prompt.txt``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8").strip()


DEFAULT_SYSTEM_PROMPT: str = load_prompt_text("system_prompt.txt")
DEFAULT_WHOLE_STORY_SYSTEM_PROMPT: str = load_prompt_text("system_prompt_whole_story.txt")


@dataclass(frozen=True)
class MemorySettings:
    """How the memory module queries its LLM. ``temperature`` 0 means greedy (then ``seed`` has no effect).

    An answer with no usable prompt (empty, or all inside an unclosed ``<think>``) falls back to the story
    sentence as is, marked ``MemoryAnswer.fallback`` (and in run.json); ``strict`` makes it an error instead.

    ``max_new_tokens`` is per prompt: the whole-story query gets ``max_new_tokens`` per sentence plus a
    little room for the numbering.
    """

    mode: MemoryMode = "per-frame"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 96
    temperature: float = 0.0
    seed: int = 0
    whole_story_system_prompt: str = DEFAULT_WHOLE_STORY_SYSTEM_PROMPT
    strict: bool = False     # an answer with no usable prompt is an error, not a fallback to the story sentence

    def validate(self) -> "MemorySettings":
        if self.mode not in MEMORY_MODES:
            raise InvalidInputError(f"memory mode must be one of {', '.join(MEMORY_MODES)}; got {self.mode!r}.")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}.")
        check_number(self.temperature, "the memory LLM's temperature", minimum=0, hint=" 0 means greedy.")
        check_seed(self.seed, "the memory LLM's seed")
        if not isinstance(self.system_prompt, str) or not isinstance(self.whole_story_system_prompt, str):
            raise InvalidInputError("The memory system prompts must be strings.")
        return self


def validate_story(story_prompts: Sequence[str], upto: Optional[int] = None) -> None:
    """Raise InvalidInputError on an empty story or an empty sentence (checks frames ``0..upto``)."""
    if isinstance(story_prompts, str):
        raise InvalidInputError("The story must be a list of sentences, one per frame, not a single string.")
    if len(story_prompts) == 0:
        raise InvalidInputError("The story is empty: give at least one sentence (one per frame).")
    last = len(story_prompts) - 1 if upto is None else upto
    for k, prompt in enumerate(story_prompts[: last + 1]):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError(f"Story sentence for frame {k} (0-based) is empty; every frame needs a sentence.")


def _numbered(lines: Sequence[str]) -> str:
    return "\n".join(f"{k}. {' '.join(line.split())}" for k, line in enumerate(lines, start=1))


def per_frame_messages(system_prompt: str, earlier_memory_prompts: Sequence[str], sentence: str) -> list[Message]:
    """The chat for one frame: the earlier memory prompts (numbered) and the new story sentence."""
    earlier = (f"Earlier prompts:\n{_numbered(earlier_memory_prompts)}" if earlier_memory_prompts
               else "Earlier prompts: none (this is the first frame).")
    user = f"{earlier}\nNew sentence: {' '.join(sentence.split())}\nAnswer:"
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    return messages + [{"role": "user", "content": user}]


def whole_story_messages(system_prompt: str, story_prompts: Sequence[str]) -> list[Message]:
    """The single chat for the whole story: all sentences numbered, one numbered answer line each."""
    n = len(story_prompts)
    user = (f"Story sentences:\n{_numbered(story_prompts)}\n"
            f"Rewrite all {n} sentences. Answer with exactly {n} numbered lines, 1. to {n}.\nAnswer:")
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    return messages + [{"role": "user", "content": user}]


def _identity(prompt: str) -> str:
    return prompt


@dataclass(frozen=True)
class MemoryAnswer:
    """One frame's DM prompt and whether it is the fallback (the LLM gave nothing usable: the story sentence)."""

    text: str
    fallback: bool = False


@runtime_checkable
class Memory(Protocol):
    """What the story loop needs from the memory module (``MemoryModule`` meets it)."""

    @property
    def mode(self) -> MemoryMode:
        """off, per-frame or whole-story."""
        ...

    def check(self) -> None:
        """Raise before any frame is made if the memory cannot answer (an endpoint that is down)."""
        ...

    def answer_for(self, i: int, story_prompts: Sequence[str],
                   earlier_memory_prompts: Sequence[str] = ()) -> MemoryAnswer:
        """The DM prompt y_i of frame ``i`` (0-based), marked where it is the fallback."""
        ...

    def answers_for_story(self, story_prompts: Sequence[str]) -> list[MemoryAnswer]:
        """Every frame's DM prompt (whole-story memory: from one query)."""
        ...

    def to(self, device: Any) -> "Memory":
        """Move the LLM's weights, if any (the story loop offloads it while another stage runs)."""
        ...

    def modules(self) -> dict[str, Any]:
        """The torch modules holding the LLM's weights, for a host's memory manager (empty: none here)."""
        ...


class MemoryModule:
    """Writes the DM prompt for each frame. Holds a backend, settings and ``fit``; no global state.

    The only state is a small memo of whole-story answers keyed by the tuple of story sentences, so the
    story loop can call :meth:`prompt_for` frame by frame and still make one LLM query per story.
    """

    _MEMO_SIZE = 8

    def __init__(self, backend: Optional[ChatBackend], settings: MemorySettings = MemorySettings(),
                 fit: Callable[[str], str] = _identity) -> None:
        self.backend, self.settings = None, settings
        settings.validate()
        if backend is None and settings.mode != "off":
            raise InvalidInputError(f"Memory mode {settings.mode!r} needs an LLM backend (a local LLM or an "
                                    "OpenAI-compatible endpoint); use mode 'off' to pass story sentences through.")
        if backend is not None and not isinstance(backend, ChatBackend):
            missing = [m for m in ("chat", "check", "to", "modules") if not callable(getattr(backend, m, None))]
            raise InvalidInputError(f"The memory backend {type(backend).__name__} lacks {', '.join(missing)}() "
                                    "(see acdc_core.memory.ChatBackend).")
        self.backend = backend
        self.settings = settings
        self.fit = fit
        self._memo: "OrderedDict[tuple[str, ...], tuple[MemoryAnswer, ...]]" = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryModule(mode={self.settings.mode!r}, backend={self.backend!r})"

    # -- public API ---------------------------------------------------------------------------------------
    @property
    def mode(self) -> MemoryMode:
        return self.settings.mode

    def check(self) -> None:
        """Fail early (before expensive work) if the backend cannot answer, e.g. an endpoint that is down."""
        if self.settings.mode != "off" and self.backend is not None:
            self.backend.check()

    def to(self, device: Any) -> "MemoryModule":
        if self.backend is not None:
            self.backend.to(device)
        return self

    def modules(self) -> dict[str, Any]:
        return {} if self.backend is None or self.settings.mode == "off" else self.backend.modules()

    def prompt_for(self, i: int, story_prompts: Sequence[str], earlier_memory_prompts: Sequence[str] = ()) -> str:
        """The text of :meth:`answer_for`."""
        return self.answer_for(i, story_prompts, earlier_memory_prompts).text

    def prompts_for_story(self, story_prompts: Sequence[str]) -> list[str]:
        """The texts of :meth:`answers_for_story`."""
        return [a.text for a in self.answers_for_story(story_prompts)]

    def answer_for(self, i: int, story_prompts: Sequence[str],
                   earlier_memory_prompts: Sequence[str] = ()) -> MemoryAnswer:
        """The DM prompt ``y_i`` for frame ``i`` (0-based).

        ``story_prompts`` may be the whole story; per-frame and off use only ``story_prompts[:i+1]`` and
        ``earlier_memory_prompts[:i]``. Whole-story answers from one query over the whole list (memoised)
        and ignores ``earlier_memory_prompts``.
        """
        if isinstance(story_prompts, str) or len(story_prompts) == 0:
            validate_story(story_prompts)  # raises the right message
        if not 0 <= i < len(story_prompts):
            raise InvalidInputError(f"Frame index {i} is out of range for a story of {len(story_prompts)} sentences.")
        mode = self.settings.mode
        if mode == "whole-story":
            return self.answers_for_story(story_prompts)[i]
        validate_story(story_prompts, upto=i)
        if mode == "off":
            return MemoryAnswer(self.fit(story_prompts[i]))
        if len(earlier_memory_prompts) < i:
            raise InvalidInputError(f"Frame {i} needs the {i} earlier memory prompts, got "
                                    f"{len(earlier_memory_prompts)}.")
        earlier = list(earlier_memory_prompts[:i])
        if not all(isinstance(p, str) for p in earlier):
            raise InvalidInputError(f"The earlier memory prompts for frame {i} must all be strings.")
        return self._query_frame(i, story_prompts[i], earlier)

    def answers_for_story(self, story_prompts: Sequence[str]) -> list[MemoryAnswer]:
        """All DM prompts: off passes through, per-frame queries frame by frame, whole-story queries once."""
        validate_story(story_prompts)
        prompts = tuple(story_prompts)
        mode = self.settings.mode
        if mode == "off":
            return [MemoryAnswer(self.fit(p)) for p in prompts]
        if mode == "per-frame":
            out: list[MemoryAnswer] = []
            for i, sentence in enumerate(prompts):
                out.append(self._query_frame(i, sentence, [a.text for a in out]))
            return out
        with self._lock:
            cached = self._memo.get(prompts)
            if cached is None:
                cached = tuple(self._query_story(prompts))
                self._memo[prompts] = cached
                while len(self._memo) > self._MEMO_SIZE:
                    self._memo.popitem(last=False)
            else:
                self._memo.move_to_end(prompts)
        return list(cached)

    # -- queries ------------------------------------------------------------------------------------------
    def _chat(self, messages: list[Message], max_new_tokens: int) -> str:
        assert self.backend is not None
        s = self.settings
        raw = self.backend.chat(messages, max_new_tokens=max_new_tokens, temperature=s.temperature, seed=s.seed)
        logger.debug("memory LLM answer: %r", raw)
        return raw if isinstance(raw, str) else ""

    def _query_frame(self, i: int, sentence: str, earlier: Sequence[str]) -> MemoryAnswer:
        messages = per_frame_messages(self.settings.system_prompt, earlier, sentence)
        raw = self._chat(messages, self.settings.max_new_tokens)
        text, fallback = clean_answer(raw, sentence, what=f"memory prompt for frame {i + 1}")
        if fallback and self.settings.strict:
            raise MemoryAnswerError(
                f"the memory LLM gave no usable prompt for frame {i + 1} (its answer: {quote_head(raw)}). Strict "
                "memory makes this an error; turn strict off to use the story sentence as is for such frames.")
        return MemoryAnswer(self.fit(text), fallback)

    def _query_story(self, prompts: tuple[str, ...]) -> list[MemoryAnswer]:
        n = len(prompts)
        messages = whole_story_messages(self.settings.whole_story_system_prompt, prompts)
        raw = self._chat(messages, self.settings.max_new_tokens * n + 8 * n)
        parsed = parse_numbered_list(raw, n)
        out: list[MemoryAnswer] = []
        missing: list[int] = []
        for i, (sentence, item) in enumerate(zip(prompts, parsed)):
            if item:
                out.append(MemoryAnswer(self.fit(item)))
            else:
                missing.append(i)
                out.append(self._query_frame(i, sentence, [a.text for a in out]))
        if missing:
            logger.warning("The whole-story LLM answer gave usable prompts for %d of %d sentences; frames %s "
                           "(0-based) were queried one by one instead.", n - len(missing), n, missing)
        return out
