"""A benchmark's reference frames, the set FID is measured against: one folder per item, complete or absent.

    OUT/reference/reference.json         where the frames came from (the same for every item and shard)
    OUT/reference/<item>/                frames/shown_NN.png, run.json, done.json (``store.write_item``'s layout)

Two sources:

- ``toy``: the toy world's renderer draws each item's true frames (its scenes; ``toy.evaluate.toy_reference``): the
  ground truth the toy world has;
- ``sdxl-lightning``: the paper's pseudo ground truth -- SDXL base with SDXL-Lightning's step-distilled UNet, Euler
  with trailing timesteps, no classifier-free guidance (guidance 0), ``steps`` steps (the paper: 6), frame k of an
  item from its prompt k with seed ``item.seed + k`` (``SdxlLightning``).

``write_reference`` takes a ``Shard`` of the items and skips every complete one, as ``acdc bench run`` does, so the
same command resumes, and runs under torchrun or one job per host.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .items import BenchItem
from .shard import Shard
from .store import check_item, read_frames, write_item

__all__ = ["REFERENCE", "reference_dir", "SdxlLightning", "write_reference", "read_reference"]

REFERENCE = "reference"
SOURCE_FILE = "reference.json"


def reference_dir(out, item_id: str) -> Path:
    return Path(out) / REFERENCE / item_id


class SdxlLightning:
    """SDXL base + an SDXL-Lightning UNet (diffusers layout, one safetensors file), text to image."""

    def __init__(self, pipe, *, steps: int = 6, size: int = 1024) -> None:
        if steps < 1 or size < 64 or size % 8:
            raise InvalidInputError(f"SDXL-Lightning needs steps >= 1 and a size that is a multiple of 8 (>= 64); "
                                    f"got steps {steps}, size {size}.")
        self.pipe, self.steps, self.size = pipe, steps, size

    @classmethod
    def load(cls, sdxl, unet_file, *, steps: int = 6, size: int = 1024, device: str = "cpu",
             dtype: torch.dtype = torch.float32) -> "SdxlLightning":
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
        from safetensors.torch import load_file

        from ..correct import load_corrector
        from ..weights import check_safetensors, is_pickle

        corrector = load_corrector(sdxl, device="cpu", dtype=dtype)
        if getattr(corrector, "architecture", None) != "sdxl":
            raise InvalidInputError(f"{sdxl} is not an SDXL model; SDXL-Lightning's UNet goes with SDXL base "
                                    "(stabilityai/stable-diffusion-xl-base-1.0).")
        path = Path(unet_file).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"no SDXL-Lightning UNet at {path}: place ByteDance/SDXL-Lightning's "
                                    "sdxl_lightning_8step_unet.safetensors (or the 4-step one) there.")
        if is_pickle(path):
            raise InvalidInputError(f"{path.name} is a pickle; use the .safetensors UNet file.")
        shapes = {k: tuple(v) for k, v in check_safetensors(path).items()}
        own = {k: tuple(v.shape) for k, v in corrector.unet.state_dict().items()}
        if shapes != own:
            wrong = sorted(set(shapes) ^ set(own)) or sorted(k for k in own if shapes[k] != own[k])
            raise InvalidInputError(f"{path.name} is not a UNet of this SDXL in diffusers' layout (e.g. {wrong[:3]}); "
                                    "use SDXL-Lightning's *_unet.safetensors, not a LoRA or a full checkpoint.")
        corrector.unet.load_state_dict(load_file(str(path)), strict=True)
        scheduler = EulerDiscreteScheduler.from_config(corrector.scheduler_config, timestep_spacing="trailing")
        encoders, tokenizers = corrector.text_encoders, corrector.tokenizers
        pipe = StableDiffusionXLPipeline(vae=corrector.vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                         tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], unet=corrector.unet,
                                         scheduler=scheduler).to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, steps=steps, size=size)

    def identity(self) -> dict:
        return {"source": "sdxl-lightning", "steps": self.steps, "size": self.size, "guidance": 0.0,
                "scheduler": "euler, trailing"}

    @torch.no_grad()
    def __call__(self, item: BenchItem) -> list[torch.Tensor]:
        out = []
        for k, prompt in enumerate(item.prompts):
            generator = torch.Generator("cpu").manual_seed(item.seed + k)
            image = self.pipe(prompt, num_inference_steps=self.steps, guidance_scale=0.0, height=self.size,
                              width=self.size, generator=generator, output_type="pt").images[0]
            out.append(image.float().cpu())
        return out


def _check_source(out: Path, identity: dict) -> None:
    path = Path(out) / REFERENCE / SOURCE_FILE
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            earlier = None
        if earlier != identity:
            raise InvalidInputError(f"{path.parent} holds reference frames from another source ({earlier}); remove "
                                    "that folder to make them again with this one.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SOURCE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(identity, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def write_reference(out, items: Sequence[BenchItem], make: Callable[[BenchItem], list], identity: dict, *,
                    shard: Shard = Shard(), log=sys.stderr) -> dict:
    """Write the reference frames of this shard's items that are not complete yet; returns the counts."""
    _check_source(out, identity)
    counts = {"made": 0, "skipped": 0}
    mine = shard.take(items)
    for n, item in enumerate(mine):
        folder = reference_dir(out, item.id)
        if check_item(folder) is None:
            counts["skipped"] += 1
            continue
        start = time.perf_counter()
        frames = make(item)
        write_item(folder, {"item": item.id, **identity, "seconds": time.perf_counter() - start}, frames)
        counts["made"] += 1
        print(f"acdc bench reference: {n + 1}/{len(mine)} {item.id}", file=log)
    return counts


def read_reference(out, items: Sequence[BenchItem]) -> tuple[dict, list[list[np.ndarray]]]:
    """(source, every item's reference frames [H, W, 3] uint8), or an error naming the items without them."""
    path = Path(out) / REFERENCE / SOURCE_FILE
    if not path.is_file():
        raise InvalidInputError(f"{Path(out)} has no reference frames for FID; make them first: `acdc bench "
                                f"reference --out {out}` (--toy truth, or --sdxl and --lightning-unet).")
    source = json.loads(path.read_text(encoding="utf-8"))
    bad = [(item.id, why) for item in items if (why := check_item(reference_dir(out, item.id))) is not None]
    if bad:
        shown = "; ".join(f"{i}: {why}" for i, why in bad[:5])
        raise InvalidInputError(f"{len(bad)} of {len(items)} items have no complete reference frames ({shown}"
                                f"{' ...' if len(bad) > 5 else ''}); run the same `acdc bench reference` again.")
    return source, [read_frames(reference_dir(out, item.id)) for item in items]
