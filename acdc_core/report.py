"""Writing a run to disk as it goes: frames as PNG, a side-by-side strip, and a JSON run record."""
from __future__ import annotations

import json
import os
import textwrap
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import InvalidInputError
from .images import to_pil
from .memory.module import MemoryAnswer
from .state import FrameRecord, StorySettings, StoryState, new_story, parse_frame_ranges


def story_rows(records) -> list:
    """The strip's two rows of a story: the ARM's frames, and the frames as corrected and put back in context,
    labelled by what the corrector was given: ACDC's memory prompts, or (the no-memory ablation, or a memory that
    fell back everywhere) the story lines themselves."""
    corrected = [r for r in records if r.corrected and r.memory_prompt is not None]
    plain = bool(corrected) and all(" ".join(r.memory_prompt.split()) == " ".join(r.story_prompt.split())
                                    for r in corrected)
    label = "ACDC without memory (DM given the story lines)" if plain else "ACDC (corrected, in context)"
    return [("ARM frame (before correction)", [r.arm_image for r in records]),
            (label, [r.corrected_image for r in records])]


def strip_image(rows: Sequence[tuple[str, Sequence[torch.Tensor]]], prompts: Sequence[str],
                cell: int = 192) -> Image.Image:
    """One picture a person reads at a glance: a row per variant (label on the left), a column per frame,
    the frame's story prompt underneath. ``rows`` is [(label, [image [3, H, W] in [0, 1], ...]), ...]."""
    font = ImageFont.load_default()
    label_w, pad = 150, 6
    wrap = max(12, cell // 7)
    prompt_lines = [textwrap.wrap(p, wrap)[:5] for p in prompts]
    text_h = 12 * max((len(lines) for lines in prompt_lines), default=1) + 2 * pad
    width = label_w + len(prompts) * (cell + pad) + pad
    height = len(rows) * (cell + pad) + pad + text_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        y = pad + r * (cell + pad)
        for k, line in enumerate(textwrap.wrap(label, 22)):
            draw.text((pad, y + cell // 2 - 6 + 12 * k), line, fill="black", font=font)
        for c, image in enumerate(images):
            tile = to_pil(image)
            # Small frames (toy world, 32 px) are scaled up with hard edges so their pixels stay readable.
            small = tile.width * 2 <= cell
            tile = tile.resize((cell, cell), Image.NEAREST if small else Image.BICUBIC)
            canvas.paste(tile, (label_w + c * (cell + pad), y))
    y = pad + len(rows) * (cell + pad)
    for c, lines in enumerate(prompt_lines):
        for k, line in enumerate(lines):
            draw.text((label_w + c * (cell + pad), y + 12 * k), line, fill="black", font=font)
    return canvas


def side_by_side(columns: Sequence[tuple[str, Sequence[torch.Tensor]]], cell: int = 256, *,
                 marked: Optional[Sequence[Sequence[bool]]] = None,
                 notes: Optional[Sequence[Sequence[str]]] = None, mark_label: str = "corrected") -> list[Image.Image]:
    """The frames of an animation showing videos side by side: one column per video (its label and the frame index
    above it), frame k of every video in picture k. ``columns`` is [(label, [frame [3, H, W] in [0, 1], ...]), ...];
    a shorter video holds its last frame. ``marked[c][k]``: frame k of column c gets a green border and
    ``mark_label`` beside its index (a corrected window); ``notes[c][k]``: a line of text under the frame."""
    font = ImageFont.load_default()
    pad, label_h, border = 6, 16, 3
    note_h = 14 if notes is not None else 0
    length = max(len(frames) for _, frames in columns)
    pictures = []
    for k in range(length):
        canvas = Image.new("RGB", (pad + len(columns) * (cell + pad + 2 * border),
                                   label_h + cell + note_h + 2 * pad + 2 * border), "white")
        draw = ImageDraw.Draw(canvas)
        for c, (label, frames) in enumerate(columns):
            i = min(k, len(frames) - 1)
            x = pad + c * (cell + pad + 2 * border)
            mark = bool(marked[c][i]) if marked is not None else False
            draw.text((x, pad), f"{label}  frame {i + 1}/{len(frames)}" + (f"  {mark_label}" if mark else ""),
                      fill="black", font=font)
            if mark:
                draw.rectangle([x, label_h + pad, x + cell + 2 * border - 1, label_h + pad + cell + 2 * border - 1],
                               fill=(20, 170, 60))
            tile = to_pil(frames[i])
            tile = tile.resize((cell, cell), Image.NEAREST if tile.width * 2 <= cell else Image.BICUBIC)
            canvas.paste(tile, (x + border, label_h + pad + border))
            if notes is not None and notes[c][i]:
                draw.text((x, label_h + pad + cell + 2 * border + 1), notes[c][i], fill="black", font=font)
        pictures.append(canvas)
    return pictures


def save_animation(path: Path, pictures: Sequence[Image.Image], *, fps: float = 8.0) -> Path:
    """An animated WEBP (looping, lossless) of ``pictures``, written atomically; ComfyUI's own Save Animated WEBP
    writes the same format."""
    path = Path(path)

    def write(tmp: Path) -> None:
        pictures[0].save(tmp, format="WEBP", save_all=True, append_images=list(pictures[1:]),
                         duration=round(1000 / fps), loop=0, lossless=True)

    _atomic(path, write)
    return path


RUN_FILE = "run.json"
FORMAT = 2          # run.json's layout; a folder of another format is not resumed


def _atomic(path: Path, write) -> None:
    """Write ``path`` through a temporary file beside it and a rename, so a reader (or a killed run) never sees
    half a file. ``write(tmp_path)`` writes the content."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def frame_files(out: Path, prefix: str, index: int) -> Path:
    """``out/frames/{prefix}_{NN}.png`` for frame ``index`` (0-based)."""
    return Path(out) / "frames" / f"{prefix}_{index + 1:02d}.png"


class RunFolder:
    """The output folder of one headless run, written as the run goes: each frame's pictures and an updated
    ``run.json`` as soon as the frame is done (atomically), so a late failure, Ctrl-C or a killed process loses
    no finished frame, and ``acdc story --resume`` can continue from the last complete one.

    A folder holding another run is refused (``--overwrite`` replaces it; ``--resume`` continues it if it is the
    same run: same prompts, settings, models and masks). ``check`` runs before any model loads."""

    def __init__(self, out, identity: dict) -> None:
        self.out = Path(out).expanduser()
        self.identity = json.loads(json.dumps(identity))   # as run.json will hold it (tuples become lists)
        self.record: dict = {}
        self._replacing = False

    # -- before anything runs --------------------------------------------------------------------------
    def check(self, *, resume: bool = False, overwrite: bool = False) -> Optional[dict]:
        """Make sure the folder can be written; return the earlier run's record when resuming (else None)."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise InvalidInputError(f"--out {out} is a file, not a folder; give a folder for the run's pictures.")
        try:
            (out / "frames").mkdir(parents=True, exist_ok=True)
            probe = out / ".acdc-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise InvalidInputError(f"cannot write the output folder {out}: {error.strerror or error}. "
                                    "Give a folder you can write to (--out).") from None
        earlier = self.read()
        if earlier is None:
            if resume:
                raise InvalidInputError(f"--resume: {out} holds no run to continue (no {RUN_FILE}); drop --resume.")
            return None
        if overwrite:
            self._replacing = True      # cleared when the new run starts writing, not before its models load
            return None
        made, total = len(earlier.get("frames", [])), len(earlier.get("identity", {}).get("prompts", []))
        if not resume:
            raise InvalidInputError(
                f"{out} already holds a run ({made} of {total} frames{', complete' if earlier.get('complete') else ''}). "
                "Use --resume to continue it, --overwrite to replace it, or another --out.")
        if earlier.get("format") != FORMAT or earlier.get("identity") != self.identity:
            theirs = earlier.get("identity") or {}
            differ = sorted(k for k in set(theirs) | set(self.identity) if theirs.get(k) != self.identity.get(k))
            raise InvalidInputError(
                f"--resume: the run in {out} is not this one (different {', '.join(differ) or 'format'}); resume it "
                "with the same command and files, or use --overwrite to replace it, or another --out.")
        return earlier

    def read(self) -> Optional[dict]:
        """The run record already in the folder, or None."""
        path = self.out / RUN_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            record, why = None, str(error)
        else:
            why = "not a JSON object"
        if not isinstance(record, dict) or not isinstance(record.get("identity", {}), dict):
            raise InvalidInputError(f"{path} is not a readable run record ({why}); use --overwrite to replace "
                                    "the run, or another --out.")
        return record

    def clear(self) -> None:
        """Remove the files an earlier run wrote here (and nothing else of the folder)."""
        for path in [self.out / RUN_FILE, self.out / "strip.png", *(self.out / "frames").glob("*_[0-9][0-9]*.png")]:
            path.unlink(missing_ok=True)

    # -- as the run goes -------------------------------------------------------------------------------
    def start(self, settings: StorySettings, meta: dict, earlier: Optional[dict] = None) -> None:
        """Begin writing: the earlier run's record to continue, or a new one (an overwritten run is removed now)."""
        if self._replacing:
            self.clear()
            self._replacing = False
        self.record = dict(earlier) if earlier else {
            "format": FORMAT, "identity": self.identity, "settings": asdict(settings), "complete": False,
            "frames": []}
        self.record["meta"] = {**self.record.get("meta", {}), **meta}

    def save(self, state: StoryState, *, baseline: Optional[StoryState] = None, complete: bool = False,
             meta: Optional[dict] = None) -> dict:
        """Write the pictures of frames not yet on disk, the strip and ``run.json`` (atomically)."""
        self._save_frames(state, ("arm", "acdc"), "frames")
        if baseline is not None:
            self._save_frames(baseline, ("base",), "baseline")
        rows = ([("ARM only (no correction)", [r.arm_image for r in baseline.records])] if baseline is not None
                else []) + story_rows(state.records)
        _atomic(self.out / "strip.png",
                lambda tmp: strip_image(rows, list(state.prompts)).save(tmp, format="PNG"))
        self.record["planned_memory"] = ([{"text": a.text, "fallback": a.fallback} for a in state.planned_memory]
                                         if state.planned_memory is not None else None)
        self.record["complete"] = complete
        if meta:
            self.record["meta"].update(meta)
        _atomic(self.out / RUN_FILE, lambda tmp: tmp.write_text(json.dumps(self.record, indent=2)))
        return self.record

    def _save_frames(self, state: StoryState, prefixes: tuple[str, ...], key: str) -> None:
        done = self.record.setdefault(key, [])
        for r in state.records[len(done):]:
            images = {"arm": r.arm_image, "acdc": r.corrected_image, "base": r.arm_image}
            for prefix in prefixes:
                _atomic(frame_files(self.out, prefix, r.index),
                        lambda tmp, image=images[prefix]: to_pil(image).save(tmp, format="PNG"))
            done.append(r.summary())

    # -- resuming --------------------------------------------------------------------------------------
    def restore(self, prompts, key: str = "frames", prefix: str = "acdc") -> StoryState:
        """The story state after the frames the earlier run finished (``key``: its ``frames`` or ``baseline``):
        their corrected tokens back in the ARM's context, their records from run.json and the pictures on disk."""
        state = new_story(prompts)
        if key == "frames" and self.record.get("planned_memory") is not None:
            state = replace(state, planned_memory=tuple(MemoryAnswer(a["text"], a["fallback"])
                                                        for a in self.record["planned_memory"]))
        for f in self.record.get(key, []):
            index = f["index"]
            arm_image = _read_image(frame_files(self.out, "arm" if prefix == "acdc" else prefix, index))
            corrected = _read_image(frame_files(self.out, prefix, index))
            before = torch.tensor(f["tokens_before"], dtype=torch.long)
            after = torch.tensor(f["tokens_after"], dtype=torch.long)
            seen = f.get("arm_saw_frames")
            record = FrameRecord(index, f["story_prompt"], f["memory_prompt"], arm_image, corrected, before, after,
                                 f["arm_seed"], f["dm_seed"], corrected=f["corrected"], fixed=f["fixed"],
                                 seconds=dict(f.get("seconds", {})),
                                 context_frames=parse_frame_ranges(seen) if seen is not None else None,
                                 memory_fallback=f.get("memory_fallback", False))
            state = state.with_frame(record, after)
        return state


def _read_image(path: Path) -> torch.Tensor:
    """A frame written by ``RunFolder`` back as [3, H, W] in [0, 1] (exact: PNG holds the 8-bit values written)."""
    if not path.is_file():
        raise InvalidInputError(f"--resume: {path} is missing, so the run cannot be continued; use --overwrite.")
    with Image.open(path) as picture:
        array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
