"""External evaluators: metrics whose packages cannot be installed beside this project (their pins conflict with
transformers 5), each run in its own virtual environment over a benchmark's frames, its scores merged into the same
tables.

    acdc bench external-setup --evaluator imagereward --env ENV      # once: makes ENV and installs the package
    acdc bench external --out OUT --evaluator imagereward --python ENV/bin/python --weights ... (its files)
    acdc bench merge --out OUT --metrics toy imagereward              # the scores beside the other metrics

``external`` writes ``OUT/external/<evaluator>/manifest.json`` (every frame of every finished item, once per
distinct frame and prompt), runs the evaluator's script (the ``*_eval.py`` files beside this one, never imported
here) with the environment's Python, without network or secrets (a clean environment: no API keys, the hub
offline), checks what it wrote and keeps ``scores.json``. A frame's key is the sha256 of its pixels and prompt
(``frame_key``), so the merge finds each frame's score from the frame itself, and a frame that changed since (an
item redone) has none: the merge then says to run ``external`` again.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ...errors import InvalidInputError

__all__ = ["Evaluator", "EVALUATORS", "frame_key", "frame_prompt", "setup_commands", "setup_environment",
           "write_manifest", "run_external", "ExternalScores"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Evaluator:
    name: str
    script: str
    packages: tuple[str, ...]           # pinned: what the environment installs beside torch
    files: tuple[tuple[str, str], ...]  # (manifest field, what to place there)
    column: str


EVALUATORS = {
    "imagereward": Evaluator(
        "imagereward", "imagereward_eval.py",
        # what image-reward 1.5 needs and does not pin (its BLIP code needs transformers 4, its AestheticScore
        # imports OpenAI's clip, which imports pkg_resources.packaging, gone from setuptools 70), pinned to the set
        # it ran with on 2026-12-04 (its scores equal its own ImageReward.load + score there)
        ("image-reward==1.5", "transformers==4.49.0", "huggingface_hub==0.36.2", "timm==0.6.13", "fairscale==0.4.13",
         "openai-clip==1.0.1", "setuptools==69.5.1", "datasets==2.21.0", "diffusers==0.32.2"),
        (("weights", "ImageReward-v1.0's state dict as safetensors (THUDM/ImageReward's ImageReward.pt, converted "
                     "once by you: safetensors.torch.save_file(torch.load(PT, weights_only=True), FILE))"),
         ("med_config", "its med_config.json (THUDM/ImageReward)"),
         ("tokenizer", "a bert-base-uncased tokenizer folder (google-bert/bert-base-uncased: vocab.txt, "
                       "tokenizer_config.json)")),
        "imagereward"),
}
# torch for the environment: torchvision (which ImageReward needs) must match it; these two are a matching pair.
DEFAULT_TORCH = ("torch==2.14.1", "torchvision==0.29.1")


def evaluator_named(name: str) -> Evaluator:
    if name not in EVALUATORS:
        raise InvalidInputError(f"unknown external evaluator {name!r}; choose from {', '.join(EVALUATORS)}.")
    return EVALUATORS[name]


def frame_key(frame: np.ndarray, prompt: str) -> str:
    """The key of a frame [H, W, 3] uint8 with its prompt: sha256 of its shape, pixels and prompt."""
    a = np.ascontiguousarray(np.asarray(frame, dtype=np.uint8))
    digest = hashlib.sha256(repr(a.shape).encode())
    digest.update(a.tobytes())
    digest.update(prompt.encode("utf-8"))
    return digest.hexdigest()


def frame_prompt(item, k: int) -> str:
    """The prompt frame k is scored against: the story's sentence k (a video's prompt, or its window's)."""
    if item.video:
        return item.prompts[0] if len(item.prompts) == 1 else item.prompts[min(k * len(item.prompts) // item.frames,
                                                                               len(item.prompts) - 1)]
    return item.prompts[k]


def setup_commands(evaluator: Evaluator, env: Path, torch_spec: Sequence[str] = DEFAULT_TORCH,
                   python: str = sys.executable) -> list[list[str]]:
    env = Path(env)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install"]
    return [[python, "-m", "venv", str(env)], pip + list(torch_spec), pip + list(evaluator.packages)]


def setup_environment(evaluator: Evaluator, env, *, torch_spec: Sequence[str] = DEFAULT_TORCH,
                      run: Callable = subprocess.run, log=sys.stderr) -> Path:
    """Make ``env`` (a new virtual environment) and install the evaluator's pinned packages there; returns its
    Python. This is the one place this project installs anything, and only when asked to by this command."""
    env = Path(env).expanduser()
    if env.exists() and any(env.iterdir()) and not (env / "pyvenv.cfg").is_file():
        raise InvalidInputError(f"{env} exists and is not a virtual environment; give a new folder for --env.")
    for command in setup_commands(evaluator, env, torch_spec):
        print("acdc bench external-setup: " + " ".join(command), file=log, flush=True)
        if run(command).returncode:
            raise InvalidInputError(f"setting up {env} failed at: {' '.join(command)} (see pip's message above).")
    return env / "bin" / "python"


def _clean_environment() -> dict:
    """What the evaluator's process sees: no API keys or other secrets, the hub offline."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "OMP_NUM_THREADS") if k in os.environ}
    return {**keep, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}


def write_manifest(out, evaluator: Evaluator, models: dict, *, device: str = "cpu") -> tuple[Path, int]:
    """The manifest of every finished item's frames (shown and context, every variant), each distinct frame and
    prompt once. Returns (its path, the number of frames)."""
    from ..merge import KINDS, collect
    from ..store import item_dir, read_frames
    from ..variants import slug

    _, items, variants = collect(out)
    missing = [f"--{field.replace('_', '-')} ({what})" for field, what in evaluator.files if not models.get(field)]
    if missing:
        raise InvalidInputError(f"the {evaluator.name} evaluator needs {'; '.join(missing)}.")
    for field, what in evaluator.files:
        if not Path(models[field]).expanduser().exists():
            raise InvalidInputError(f"{models[field]} does not exist: --{field.replace('_', '-')} is {what}.")
    frames, seen = [], set()
    for v in variants:
        for item in items:
            folder = item_dir(out, slug(v), item.id)
            for kind in KINDS:
                for k, frame in enumerate(read_frames(folder, kind)):
                    prompt = frame_prompt(item, k)
                    key = frame_key(frame, prompt)
                    if key not in seen:
                        seen.add(key)
                        frames.append({"key": key, "image": str(folder / "frames" / f"{kind}_{k + 1:02d}.png"),
                                       "prompt": prompt})
    target = Path(out) / "external" / evaluator.name
    target.mkdir(parents=True, exist_ok=True)
    manifest = {**{f: str(Path(models[f]).expanduser().resolve()) for f, _ in evaluator.files}, "device": device,
                "frames": frames}
    path = target / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path, len(frames)


def run_external(out, evaluator_name: str, python, models: dict, *, device: str = "cpu",
                 log=sys.stderr) -> Path:
    """Score every finished frame of ``out`` with the evaluator in its environment (``python``); returns the scores
    file, written only once every frame has a finite score."""
    evaluator = evaluator_named(evaluator_name)
    python = Path(python).expanduser()
    if not python.is_file():
        raise InvalidInputError(f"no Python at {python}: make the evaluator's environment first (`acdc bench "
                                f"external-setup --evaluator {evaluator.name} --env ENV`) and give ENV/bin/python.")
    manifest, n = write_manifest(out, evaluator, models, device=device)
    raw = manifest.with_name("scores.partial.json")
    print(f"acdc bench external: {evaluator.name} on {n} frames with {python}", file=log, flush=True)
    done = subprocess.run([str(python), str(HERE / evaluator.script), str(manifest), str(raw)],
                          env=_clean_environment(), cwd=manifest.parent)
    if done.returncode:
        raise InvalidInputError(f"the {evaluator.name} evaluator failed (exit {done.returncode}; its message is "
                                f"above); nothing was merged.")
    try:
        result = json.loads(raw.read_text(encoding="utf-8"))
        scores = result["scores"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InvalidInputError(f"the {evaluator.name} evaluator wrote no readable scores ({raw}).") from None
    wanted = {f["key"] for f in json.loads(manifest.read_text(encoding="utf-8"))["frames"]}
    bad = [k for k in wanted if not isinstance(scores.get(k), (int, float)) or not math.isfinite(scores[k])]
    if bad or set(scores) != wanted:
        raise InvalidInputError(f"the {evaluator.name} evaluator's scores do not cover the frames asked for "
                                f"({len(bad)} missing or not finite, {len(set(scores) - wanted)} unknown).")
    final = manifest.with_name("scores.json")
    os.replace(raw, final)
    return final


class ExternalScores:
    """An external evaluator's scores as a benchmark metric: each frame's score found by its key."""

    def __init__(self, evaluator: Evaluator, scores: dict, source: Path) -> None:
        self.name, self.columns = evaluator.name, (evaluator.column,)
        self.scores, self.source = scores, source

    @classmethod
    def from_bench(cls, out, name: str) -> "ExternalScores":
        evaluator = evaluator_named(name)
        path = Path(out) / "external" / name / "scores.json"
        if not path.is_file():
            raise InvalidInputError(f"{out} has no {name} scores: run `acdc bench external --out {out} --evaluator "
                                    f"{name} ...` first.")
        return cls(evaluator, json.loads(path.read_text(encoding="utf-8"))["scores"], path)

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        values: list[Optional[float]] = []
        for k, frame in enumerate(frames):
            value = self.scores.get(frame_key(frame, frame_prompt(item, k)))
            if value is None:
                raise InvalidInputError(f"frame {k + 1} of {item.id} has no {self.name} score in {self.source} (it "
                                        "changed since, or was made after): run `acdc bench external` again.")
            values.append(float(value))
        return {self.columns[0]: values}
