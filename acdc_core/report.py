"""Writing a run to disk: frames as PNG, a side-by-side strip, and a JSON run record."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .images import to_pil
from .state import StorySettings, StoryState


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


def write_run(state: StoryState, out: Path, settings: StorySettings, *, extra_rows=(), meta=None) -> dict:
    """Write frames/, strip.png and run.json under ``out``; return the run record."""
    out = Path(out)
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for r in state.records:
        to_pil(r.arm_image).save(frames / f"arm_{r.index + 1:02d}.png")
        to_pil(r.corrected_image).save(frames / f"acdc_{r.index + 1:02d}.png")
    rows = list(extra_rows) + [
        ("ARM frame (before correction)", [r.arm_image for r in state.records]),
        ("ACDC (corrected, in context)", [r.corrected_image for r in state.records]),
    ]
    strip_image(rows, [r.story_prompt for r in state.records]).save(out / "strip.png")
    record = {
        "settings": _settings_dict(settings),
        "meta": meta or {},
        "frames": [r.summary() for r in state.records],
    }
    (out / "run.json").write_text(json.dumps(record, indent=2))
    return record


def _settings_dict(settings: StorySettings) -> dict:
    from dataclasses import asdict
    return asdict(settings)
