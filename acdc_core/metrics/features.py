"""Image feature backbones the set and video metrics share, each loaded from a local transformers folder.

- ``ClipImageFeatures``: CLIP's projected image embedding (``CLIPModel.get_image_features``) -- FD_CLIP
  (Kynkaanniemi et al. 2023) and VBench's background consistency (CLIP ViT-B/32);
- ``ClsFeatures``: the [CLS] token of a ViT-family backbone's last hidden state (``AutoModel``: ``ViTModel`` for
  DINO ViT-B/16, VBench's subject consistency; ``Dinov2Model`` for FD_DINOv2, Stein et al. 2023).

``features(frames)`` takes frames [H, W, 3] uint8 and returns float64 [N, D], unnormalised; batched. Nothing is
downloaded: a missing file is a clear error naming the folder and what to place there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError

__all__ = ["ClipImageFeatures", "ClsFeatures", "load_backbone", "BACKBONES", "check_folder"]

BACKBONES = ("clip", "dino")
BATCH = 32


def check_folder(folder, what: str, example: str) -> Path:
    """``folder`` as a Path when it holds a transformers model (config.json, model.safetensors, an image processor
    config), else a clear error saying what to place there."""
    path = Path(folder).expanduser()
    missing = [n for n in ("config.json", "model.safetensors") if not (path / n).is_file()]
    if not any((path / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json")
    if missing:
        raise InvalidInputError(
            f"the {what} folder {path} lacks {', '.join(missing)}: place a transformers model there (e.g. {example} "
            "from the Hugging Face hub, downloaded once by you, safetensors weights). Nothing is downloaded here.")
    return path


class _Backbone:
    name, what, example = "", "", ""     # the backbone's name in tables; what to place, e.g. which hub model

    def __init__(self, model, processor, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = device

    @staticmethod
    def _classes():
        """(model class, image processor class) of transformers."""
        raise NotImplementedError

    @classmethod
    def from_folder(cls, folder, device: str = "cpu"):
        path = check_folder(folder, cls.what, cls.example)
        model_class, processor_class = cls._classes()
        model = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True)
        return cls(model, processor_class.from_pretrained(path, local_files_only=True), device)

    @property
    def description(self) -> str:
        return f"{self.name} ({type(self.model).__name__}) features: FD_{self.name}, not Inception FID"

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def features(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(frames), BATCH):
            batch = [np.asarray(f) for f in frames[start:start + BATCH]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            out.append(self._embed(pixels).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0))


class ClipImageFeatures(_Backbone):
    name, what, example = "clip", "CLIP", "openai/clip-vit-large-patch14"

    @staticmethod
    def _classes():
        from transformers import CLIPImageProcessor, CLIPModel

        return CLIPModel, CLIPImageProcessor

    def _embed(self, pixels):
        output = self.model.get_image_features(pixel_values=pixels)
        return output.pooler_output if hasattr(output, "pooler_output") else output


class ClsFeatures(_Backbone):
    name, what, example = "dino", "DINO", "facebook/dino-vitb16 or facebook/dinov2-base"

    @staticmethod
    def _classes():
        from transformers import AutoImageProcessor, AutoModel

        return AutoModel, AutoImageProcessor

    def _embed(self, pixels):
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]


def load_backbone(kind: str, folder, device: str = "cpu") -> _Backbone:
    if kind == "clip":
        return ClipImageFeatures.from_folder(folder, device)
    if kind == "dino":
        return ClsFeatures.from_folder(folder, device)
    raise InvalidInputError(f"unknown feature backbone {kind!r}; choose from {', '.join(BACKBONES)}.")
