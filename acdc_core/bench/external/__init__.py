"""External evaluators: metrics whose packages cannot be installed beside this project (their pins conflict with
transformers 5), each run in its own virtual environment over a benchmark's frames, its scores merged into the same
tables.

    acdc bench external-setup --evaluator imagereward --env ENV      # once: makes ENV and installs the package
    acdc bench external --out OUT --evaluator imagereward --python ENV/bin/python --weights ... (its files)
    acdc bench merge --out OUT --metrics toy imagereward              # the scores beside the other metrics

Evaluators: ``imagereward`` (a score per frame and prompt), ``inception`` (FID's features per frame, ``--fid
inception``) and ``vbench``, the official VBench 0.1.5 (its dimensions per video and per frames L+1..N as a video of
their own, ``acdc bench merge --vbench``).

``external`` writes ``OUT/external/<evaluator>/manifest.json`` (every frame of every finished item, once per
distinct frame and prompt; for ``vbench`` every video and segment once), runs the evaluator's script (the
``*_eval.py`` files beside this one, never imported here) with the environment's Python, without network or secrets
(a clean environment: no API keys, the hub offline), checks what it wrote and keeps ``scores.json``. A frame's key
is the sha256 of its pixels and prompt (``frame_key``; a video's, of its frames' keys), so the merge finds each
frame's score from the frame itself, and a frame that changed since (an item redone) has none: the merge then says
to run ``external`` again. Weights files are read (their header) before the evaluator starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ...errors import InvalidInputError
from ..store import MIN_VIDEO_FRAMES, video_segments, window_of

__all__ = ["Evaluator", "EVALUATORS", "external_files", "video_key",
           "frame_key", "frame_prompt", "setup_commands", "setup_environment", "write_manifest", "run_external",
           "ExternalScores", "ExternalFeatures", "ExternalVideoScores"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Evaluator:
    name: str
    script: str
    packages: tuple[str, ...]           # pinned: what the environment installs beside torch
    files: tuple[tuple[str, str], ...]  # (manifest field, what to place there)
    column: str
    kind: str = "scores"                # "scores": one number per frame and prompt; "features": a vector per frame;
    #                                     "videos": {dimension: number} per video (and segment, ``video_segments``)
    dimensions: tuple[tuple[str, tuple[str, ...]], ...] = ()   # "videos": (dimension, the files it needs)
    weights: tuple[str, ...] = ()       # the fields that are safetensors weights files (their header is read first)
    folders: tuple[tuple[str, str], ...] = ()  # (field, a file the folder must hold)

    @property
    def merge_flag(self) -> str:
        """How ``acdc bench merge`` takes this evaluator's output."""
        return {"scores": f"--metrics ... {self.name}", "features": f"--fid {self.name}", "videos": "--vbench"}[self.kind]

    @property
    def output(self) -> str:
        return "features.safetensors" if self.kind == "features" else "scores.json"

    def chosen_dimensions(self, models: dict) -> dict[str, dict[str, str]]:
        """{dimension: {field: path}} for every dimension whose files were all given (a clear error for one given in
        part, or none)."""
        chosen, what = {}, dict(self.files)
        for dimension, fields in self.dimensions:
            given = [f for f in fields if models.get(f)]
            if given and len(given) < len(fields):
                missing = [f"--{f.replace('_', '-')} ({what[f]})" for f in fields if f not in given]
                raise InvalidInputError(f"{self.name}'s {dimension} also needs {'; '.join(missing)}.")
            if given:
                chosen[dimension] = {f: str(Path(models[f]).expanduser().resolve()) for f in fields}
        if not chosen:
            raise InvalidInputError(f"give the {self.name} evaluator the files of at least one dimension: " + "; ".join(
                f"{d}: " + ", ".join(f"--{f.replace('_', '-')}" for f in fields) for d, fields in self.dimensions))
        return chosen


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
        "imagereward", weights=("weights",), folders=(("tokenizer", "vocab.txt"),)),
    "inception": Evaluator(
        "inception", "inception_eval.py", ("torchmetrics==1.9.0", "torch-fidelity==0.3.0"),
        (("weights", "torch-fidelity's Inception-v3 weights as safetensors (its release "
                     "weights-inception-2015-12-05-6726825d.pth, converted once by you: "
                     "safetensors.torch.save_file(torch.load(PTH, weights_only=True), FILE))"),),
        "inception", kind="features", weights=("weights",)),
    "vbench": Evaluator(
        "vbench", "vbench_eval.py",
        # vbench 0.1.5 and what it resolved to on 2026-12-04 beside torch 2.14.1 (its clip imports pkg_resources)
        ("vbench==0.1.5", "transformers==4.33.2", "numpy==1.26.4", "pyiqa==0.1.10", "timm==1.0.12", "decord==0.6.0",
         "openai-clip==1.0.1", "omegaconf==2.4.0", "easydict==1.14", "setuptools==69.5.1"),
        (("dino_weights", "DINO ViT-B/16's state dict as safetensors (dino_vitbase16_pretrain.pth from "
                          "facebookresearch/dino, converted once by you: "
                          "safetensors.torch.save_file(torch.load(PTH, weights_only=True), FILE))"),
         ("dino_repo", "a local copy of github.com/facebookresearch/dino (its hubconf.py builds the model)"),
         ("clip_b32_weights", "OpenAI CLIP ViT-B/32's state dict as safetensors (ViT-B-32.pt, converted once by you: "
                              "save_file(torch.jit.load(PT, map_location='cpu').state_dict(), FILE))"),
         ("clip_l14_weights", "OpenAI CLIP ViT-L/14's state dict as safetensors (ViT-L-14.pt, converted the same way)"),
         ("aesthetic_head", "LAION's sa_0_4_vit_l_14_linear.pth as safetensors (LAION-AI/aesthetic-predictor)"),
         ("musiq_weights", "pyiqa's MUSIQ-SPAQ weights as safetensors (musiq_spaq_ckpt-358bb6af.pth, "
                           "chaofengc/IQA-PyTorch's release)"),
         ("raft_weights", "RAFT's raft-things.pth as safetensors (princeton-vl/RAFT's models.zip)"),
         ("amt_weights", "AMT-S's weights as safetensors: the 'state_dict' entry of amt-s.pth (lalala125/AMT)")),
        "vbench", kind="videos",
        dimensions=(("subject_consistency", ("dino_weights", "dino_repo")),
                    ("background_consistency", ("clip_b32_weights",)),
                    ("aesthetic_quality", ("clip_l14_weights", "aesthetic_head")),
                    ("imaging_quality", ("musiq_weights",)),
                    ("dynamic_degree", ("raft_weights",)),
                    ("motion_smoothness", ("amt_weights",))),
        weights=("dino_weights", "clip_b32_weights", "clip_l14_weights", "aesthetic_head", "musiq_weights",
                 "raft_weights", "amt_weights"),
        folders=(("dino_repo", "hubconf.py"),)),
}
# torch for the environment: torchvision (which ImageReward needs) must match it; these two are a matching pair.
DEFAULT_TORCH = ("torch==2.14.1", "torchvision==0.29.1")


def external_files() -> list[tuple[str, str]]:
    """(field, help) of every evaluator's files, each field once: what ``acdc bench external`` takes as flags."""
    files: dict[str, list[str]] = {}
    for evaluator in EVALUATORS.values():
        for field, what in evaluator.files:
            files.setdefault(field, []).append(f"{evaluator.name}: {what}")
    return [(field, "; ".join(whats)) for field, whats in files.items()]


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


def _key(evaluator: Evaluator, frame: np.ndarray, prompt: str) -> str:
    return frame_key(frame, prompt if evaluator.kind == "scores" else "")


def frame_prompt(item, k: int, window: Optional[int] = None) -> str:
    """The prompt frame k is scored against: the story's sentence k; a video's prompt, or (one prompt per window)
    its window's, ``window`` being the benchmark's L."""
    if not item.video:
        return item.prompts[k]
    return item.prompts[0] if len(item.prompts) == 1 else item.prompts[k // window]


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


def video_key(frames: Sequence[np.ndarray]) -> str:
    """The key of a video (or segment): sha256 of its frames' keys, in order."""
    return hashlib.sha256("".join(frame_key(f, "") for f in frames).encode()).hexdigest()


def _check_files(evaluator: Evaluator, models: dict) -> dict:
    """The manifest's file fields: every required file (or, for a videos evaluator, the chosen dimensions')."""
    if evaluator.kind == "videos":
        fields = {"dimensions": evaluator.chosen_dimensions(models)}
        given = {f: p for d in fields["dimensions"].values() for f, p in d.items()}
    else:
        missing = [f"--{field.replace('_', '-')} ({what})" for field, what in evaluator.files if not models.get(field)]
        if missing:
            raise InvalidInputError(f"the {evaluator.name} evaluator needs {'; '.join(missing)}.")
        given = fields = {f: str(Path(models[f]).expanduser().resolve()) for f, _ in evaluator.files}
    from ...weights import check_safetensors

    what, folders = dict(evaluator.files), dict(evaluator.folders)
    for field, path in given.items():
        flag = "--" + field.replace("_", "-")
        if not Path(path).exists():
            raise InvalidInputError(f"{path} does not exist: {flag} is {what[field]}.")
        if field in evaluator.weights:          # read its header here, before the evaluator starts
            if not Path(path).is_file():
                raise InvalidInputError(f"{path} is a folder: {flag} is a file, {what[field]}.")
            try:
                check_safetensors(path)
            except InvalidInputError as error:
                raise InvalidInputError(f"{flag}: {error} It is {what[field]}.") from None
        if field in folders and not (Path(path) / folders[field]).is_file():
            raise InvalidInputError(f"{path} has no {folders[field]}: {flag} is {what[field]}.")
    return fields


def write_manifest(out, evaluator: Evaluator, models: dict, *, device: str = "cpu") -> tuple[Path, int]:
    """The manifest of every finished item's frames (shown and context, every variant; a features evaluator also
    the reference frames, ``reference.py``), each distinct frame (and prompt) once; for a videos evaluator, every
    video and segment (``video_segments``) once. Returns (its path, the number of frames or videos)."""
    from ...images import enlarge_factor
    from ..merge import KINDS, collect
    from ..reference import read_reference, reference_dir
    from ..store import item_dir, read_frames
    from ..variants import slug

    identity, items, variants = collect(out)
    window = window_of(identity)
    if evaluator.kind == "videos" and window is None:
        raise InvalidInputError(f"the {evaluator.name} evaluator scores videos; {out} is a story benchmark (score it "
                                "with --metrics clip, imagereward or --fid).")
    fields = _check_files(evaluator, models)
    frames, seen = [], set()
    folders = [(item_dir(out, slug(v), item.id), item, kind) for v in variants for item in items for kind in KINDS]
    if evaluator.kind == "features":
        read_reference(out, items)          # every item's reference frames, complete (else: what to run first)
        folders += [(reference_dir(out, item.id), item, "shown") for item in items]
    scale = 1
    for folder, item, kind in folders:
        pictures = read_frames(folder, kind)
        paths = [str(folder / "frames" / f"{kind}_{k + 1:02d}.png") for k in range(len(pictures))]
        if evaluator.kind == "videos":
            if pictures and len(pictures) < MIN_VIDEO_FRAMES:
                raise InvalidInputError(f"{folder} has {len(pictures)} {kind} frames; {evaluator.name} scores videos "
                                        f"of {MIN_VIDEO_FRAMES} frames or more.")
            scale = max([scale] + [enlarge_factor(*p.shape[:2]) for p in pictures[:1]])
            for start, end in video_segments(len(pictures), window) if pictures else ():
                key = video_key(pictures[start:end])
                if key not in seen:
                    seen.add(key)
                    frames.append({"key": key, "frames": paths[start:end]})
            continue
        for k, frame in enumerate(pictures):
            prompt = frame_prompt(item, k, window)
            key = _key(evaluator, frame, prompt)
            if key not in seen:
                seen.add(key)
                frames.append({"key": key, "image": paths[k], "prompt": prompt})
    target = Path(out) / "external" / evaluator.name
    target.mkdir(parents=True, exist_ok=True)
    listing = {"videos": frames, "scale": scale} if evaluator.kind == "videos" else {"frames": frames}
    path = target / "manifest.json"
    path.write_text(json.dumps({**fields, "device": device, **listing}, indent=1), encoding="utf-8")
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
    raw = manifest.with_name("partial-" + evaluator.output)
    what = "videos and segments" if evaluator.kind == "videos" else "frames"
    print(f"acdc bench external: {evaluator.name} on {n} {what} with {python}", file=log, flush=True)
    done = subprocess.run([str(python), str(HERE / evaluator.script), str(manifest), str(raw)],
                          env=_clean_environment(), cwd=manifest.parent)
    if done.returncode:
        raise InvalidInputError(f"the {evaluator.name} evaluator failed (exit {done.returncode}; its message is "
                                f"above); nothing was merged.")
    asked = json.loads(manifest.read_text(encoding="utf-8"))
    scores = _read_output(evaluator, raw)
    wanted = {f["key"] for f in asked["videos" if evaluator.kind == "videos" else "frames"]}
    if evaluator.kind == "videos":         # every dimension asked for, in a fixed order
        scores = {k: [v.get(d, float("nan")) for d in sorted(asked["dimensions"])] for k, v in scores.items()}
    bad = [k for k in wanted if k not in scores or not np.all(np.isfinite(scores[k]))]
    widths = {np.size(v) for v in scores.values()}
    if bad or set(scores) != wanted or len(widths) > 1:
        raise InvalidInputError(f"the {evaluator.name} evaluator's output does not cover the frames asked for "
                                f"({len(bad)} missing or not finite, {len(set(scores) - wanted)} unknown, widths "
                                f"{sorted(widths)}).")
    final = manifest.with_name(evaluator.output)
    os.replace(raw, final)
    return final


def _read_output(evaluator: Evaluator, path: Path) -> dict:
    """{key: score (float) or feature vector (array)} of what the evaluator wrote, or a clear error."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    try:
        if evaluator.kind in ("scores", "videos"):
            scores = json.loads(path.read_text(encoding="utf-8"))["scores"]
            if not all(number(v) if evaluator.kind == "scores" else
                       (isinstance(v, dict) and all(number(x) for x in v.values())) for v in scores.values()):
                raise TypeError
            return scores
        from safetensors.numpy import load_file

        return load_file(str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidInputError(f"the {evaluator.name} evaluator wrote nothing readable ({path}).") from None


def _output_of(out, name: str, kind: str) -> tuple[Evaluator, Path]:
    evaluator = evaluator_named(name)
    if evaluator.kind != kind:
        raise InvalidInputError(f"{name} gives {evaluator.kind}, not {kind}.")
    path = Path(out) / "external" / name / evaluator.output
    if not path.is_file():
        raise InvalidInputError(f"{out} has no {name} output: run `acdc bench external --out {out} --evaluator "
                                f"{name} ...` first.")
    return evaluator, path


class ExternalFeatures:
    """An external evaluator's features as a FID backbone (``metrics.features``): each frame's vector found by its
    key (the merge's FID tables then use them)."""

    description = "Inception-v3 pool features (torch-fidelity's port, as torchmetrics' FID), external"

    def __init__(self, evaluator: Evaluator, features: dict, source: Path) -> None:
        self.name, self.features_of, self.source = evaluator.name, features, source

    @classmethod
    def from_bench(cls, out, name: str) -> "ExternalFeatures":
        evaluator, path = _output_of(out, name, "features")
        return cls(evaluator, _read_output(evaluator, path), path)

    def features(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        for frame in frames:
            vector = self.features_of.get(frame_key(frame, ""))
            if vector is None:
                raise InvalidInputError(f"a frame has no {self.name} features in {self.source} (it changed since, or "
                                        "was made after): run `acdc bench external` again.")
            rows.append(np.asarray(vector, dtype=np.float64).reshape(-1))
        return np.stack(rows)


class ExternalScores:
    """An external evaluator's scores as a benchmark metric: each frame's score found by its key."""

    def __init__(self, evaluator: Evaluator, scores: dict, source: Path, window: Optional[int] = None) -> None:
        self.name, self.columns = evaluator.name, (evaluator.column,)
        self.scores, self.source, self.window = scores, source, window

    @classmethod
    def from_bench(cls, out, name: str) -> "ExternalScores":
        from ..merge import collect

        evaluator, path = _output_of(out, name, "scores")
        identity, _, _ = collect(out, verify=False)
        return cls(evaluator, _read_output(evaluator, path), path, window_of(identity))

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        values: list[Optional[float]] = []
        for k, frame in enumerate(frames):
            value = self.scores.get(frame_key(frame, frame_prompt(item, k, self.window)))
            if value is None:
                raise InvalidInputError(f"frame {k + 1} of {item.id} has no {self.name} score in {self.source} (it "
                                        "changed since, or was made after): run `acdc bench external` again.")
            values.append(float(value))
        return {self.columns[0]: values}


class ExternalVideoScores:
    """An external evaluator's per-video scores (the official VBench's): each video or segment found by its key."""

    def __init__(self, evaluator: Evaluator, scores: dict, source: Path) -> None:
        self.name, self.scores, self.source = evaluator.name, scores, source

    @classmethod
    def from_bench(cls, out, name: str = "vbench") -> "ExternalVideoScores":
        evaluator, path = _output_of(out, name, "videos")
        return cls(evaluator, _read_output(evaluator, path), path)

    def score(self, frames: Sequence[np.ndarray], what: str) -> dict[str, float]:
        """{dimension: score} of the video ``frames`` (``what`` names it in the error when it has none)."""
        found = self.scores.get(video_key(frames))
        if found is None:
            raise InvalidInputError(f"{what} has no {self.name} score in {self.source} (it changed since, or was made "
                                    "after): run `acdc bench external` again.")
        return found
