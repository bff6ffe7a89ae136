"""The paper's story set (App. C): stories written by an LLM from 3 examples drawn from 10 hand-written ones, at
temperature 1.0, six prompts each -- the first names the character, its species and the background; the later ones
say what happens, without restating it all.

``generate_stories`` asks any of the memory's chat backends (an OpenAI-compatible endpoint, a local model) for one
story per request, keeps the answers that parse into a valid story, drops repeats, and writes the item set JSONL
(``items.py``) as it goes, so a long run that stops is continued by running it again. Seeded: request k draws its
examples and samples with seeds from ``seed`` and k, so the same seed and backend give the same set.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from .items import BenchItem, write_items

__all__ = ["EXAMPLES", "load_examples", "story_messages", "parse_story", "generate_stories"]

EXAMPLES = Path(__file__).resolve().parent / "data" / "story_examples.jsonl"
FRAMES, SHOWN = 6, 3
SYSTEM = ("You write short picture stories for an illustrator. A story is exactly six sentences, one per picture, "
          "one per line, numbered 1. to 6. Sentence 1 names the main character, says what kind of animal or being "
          "it is, and describes the place. Sentences 2 to 6 each describe one new action or change, and do not "
          "repeat the character's description or the place. Write nothing else.")


def load_examples(path=EXAMPLES) -> list[tuple[str, ...]]:
    stories = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            prompts = tuple(json.loads(line)["prompts"])
            if parse_story("\n".join(prompts)) != prompts:
                raise InvalidInputError(f"{path}: an example story is not a valid story: {prompts[0]!r}.")
            stories.append(prompts)
    return stories


def story_messages(examples: Sequence[Sequence[str]]) -> list[dict]:
    shots = "\n\n".join(f"Example {k + 1}:\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(story))
                        for k, story in enumerate(examples))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{shots}\n\nWrite one new story, with a different character and place."}]


_NUMBER = re.compile(r"^\s*(?:[-*]\s*)?(?:\(?\d+[.):]\s*)?")


def parse_story(text: str) -> Optional[tuple[str, ...]]:
    """The six prompts of an answer (numbering, bullets and quotes stripped), or None when it is not a story: not
    six lines, a line under 3 or over 60 words, a repeated line, or a first line under 8 words (it must name the
    character, its kind and the place)."""
    lines = [_NUMBER.sub("", line).strip().strip('"').strip() for line in str(text).splitlines()]
    lines = [line for line in lines if line and not re.match(r"(?i)^(example|story)\b.*:$", line)]
    if len(lines) != FRAMES:
        return None
    words = [len(line.split()) for line in lines]
    if min(words) < 3 or max(words) > 60 or words[0] < 8:
        return None
    if len({_key(line) for line in lines}) != FRAMES:
        return None
    return tuple(lines)


def _key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _state_file(out: Path) -> Path:
    return out.with_name(out.name + ".progress.json")


def generate_stories(backend, out, count: int, *, seed: int = 0, examples: Optional[Sequence] = None,
                     max_requests: Optional[int] = None, temperature: float = 1.0,
                     log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
                     ) -> list[BenchItem]:
    """Write ``count`` stories to ``out`` (JSONL items ``story-0000``..., item k with seed ``1000 + k``), continuing
    an earlier run of the same command there. ``max_requests`` (default 3 x count) bounds the LLM requests."""
    out = Path(out)
    examples = list(examples) if examples is not None else load_examples()
    if len(examples) < SHOWN:
        raise InvalidInputError(f"the story generator needs at least {SHOWN} example stories, got {len(examples)}.")
    if count < 1:
        raise InvalidInputError(f"--count must be >= 1, got {count}.")
    limit = max_requests if max_requests is not None else 3 * count
    state = {"seed": seed, "count": count, "requests": 0, "stories": []}
    progress = _state_file(out)
    if progress.is_file():
        earlier = json.loads(progress.read_text(encoding="utf-8"))
        if (earlier.get("seed"), earlier.get("count")) != (seed, count):
            raise InvalidInputError(f"{out} is being written by another run (seed {earlier.get('seed')}, count "
                                    f"{earlier.get('count')}); use the same --seed and --count, or another --out.")
        state = earlier
    seen = {_key(" ".join(s)) for s in state["stories"]} | {_key(" ".join(s)) for s in examples}
    firsts = {_key(s[0]) for s in state["stories"]} | {_key(s[0]) for s in examples}
    while len(state["stories"]) < count:
        k = state["requests"]
        if k >= limit:
            raise InvalidInputError(f"{k} requests gave {len(state['stories'])} valid, new stories of {count}; the "
                                    "LLM's answers are not six-line stories often enough (or repeat). Raise "
                                    "--max-requests or use another model.")
        rng = np.random.default_rng([seed, k])
        shown = [examples[i] for i in rng.choice(len(examples), SHOWN, replace=False)]
        answer = backend.chat(story_messages(shown), max_new_tokens=400, temperature=temperature,
                              seed=int(rng.integers(0, 2 ** 31)))
        story = parse_story(answer)
        state["requests"] = k + 1
        if story is None:
            log(f"  request {k + 1}: not a six-line story; skipped")
        elif _key(" ".join(story)) in seen or _key(story[0]) in firsts:
            log(f"  request {k + 1}: a repeat; skipped")
        else:
            seen.add(_key(" ".join(story)))
            firsts.add(_key(story[0]))
            state["stories"].append(list(story))
        tmp = progress.with_name(f".{progress.name}.tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(progress)
        if (k + 1) % 10 == 0:
            log(f"{len(state['stories'])}/{count} stories after {k + 1} requests")
    items = [BenchItem(f"story-{i:04d}", tuple(s), 1000 + i) for i, s in enumerate(state["stories"])]
    write_items(out, items)
    return items
