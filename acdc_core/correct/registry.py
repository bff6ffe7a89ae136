"""``load_corrector``: a local model path -> the corrector of its kind.

Adding a corrector kind (a video diffusion model, say) means one module that builds objects meeting
``base.Corrector`` and one entry in ``CORRECTOR_KINDS``; nothing else in the engine changes, because the
story loop and every host see correctors only through that protocol. Loaders are imported only when used.
A host may also build correctors of its own from models it already holds (the node pack's ComfyUI-model
corrector, kind "comfyui"): those need no entry here, since nothing is loaded from a path.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingModelFilesError, UnknownModelFamilyError
from .base import Corrector


@dataclass(frozen=True)
class CorrectorKind:
    """One kind of corrector: what it loads, how to tell, and where its loader lives."""

    accepts: str          # what paths it loads, for messages
    loader: str           # "package.module:function" (path, *, device, dtype, **options) -> Corrector
    recognises: str       # "package.module:function" (path) -> bool, cheap (no weights read)
    check: str = ""       # "package.module:function" (path) -> None: raises on a bad path, cheap (headers only)


CORRECTOR_KINDS: dict[str, CorrectorKind] = {
    "diffusers": CorrectorKind(
        "a diffusers folder (model_index.json: Stable Diffusion 1.x/2.x, SDXL, or a pixel-space UNet without a "
        "VAE) or a single-file SD1.5/SDXL .safetensors checkpoint",
        "acdc_core.correct.loading:load_diffusers_corrector", "acdc_core.correct.loading:is_diffusers_model",
        "acdc_core.correct.loading:check_diffusers_model"),
}


def _function(spec: str):
    module_name, name = spec.split(":")
    return getattr(importlib.import_module(module_name), name)


def corrector_kind(path: str | Path) -> str:
    """The kind of corrector that loads ``path``, or an error that says what each kind takes."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingModelFilesError(
            f"diffusion model not found: {path}. Give {' or '.join(k.accepts for k in CORRECTOR_KINDS.values())}.")
    for name, kind in CORRECTOR_KINDS.items():
        if _function(kind.recognises)(path):
            return name
    raise UnknownModelFamilyError(
        f"{path} is not a diffusion model this engine loads; it takes "
        + "; ".join(f"{name}: {kind.accepts}" for name, kind in CORRECTOR_KINDS.items()) + ".")


def check_corrector_path(path: str | Path, *, kind: str = "auto") -> str:
    """Every check of a diffusion model path that needs nothing loaded (it exists, is of a kind the engine loads,
    and the kind's own cheap checks: files present, weights whole and not pickle). Returns the kind."""
    if kind == "auto":
        kind = corrector_kind(path)
    if kind not in CORRECTOR_KINDS:
        raise UnknownModelFamilyError(f"unknown corrector kind {kind!r}; known: {', '.join(CORRECTOR_KINDS)}.")
    if CORRECTOR_KINDS[kind].check:
        _function(CORRECTOR_KINDS[kind].check)(Path(path).expanduser())
    return kind


def load_corrector(path: str | Path, *, kind: str = "auto", device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, **options: Any) -> Corrector:
    """Load the diffusion model at ``path`` as a corrector (``kind="auto"``: the kind that recognises it)."""
    kind = check_corrector_path(path, kind=kind)
    return _function(CORRECTOR_KINDS[kind].loader)(path, device=device, dtype=dtype, **options)
