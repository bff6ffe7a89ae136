"""CLIP metrics of a story's frames, as the paper reports them (Table 1):

- ``frame_consistency``: cosine similarity of the CLIP image embeddings of each frame and the frame before it (NaN
  at frame 1; the paper averages over the story's consecutive pairs);
- ``consistency_first``: the same against frame 1 (1.0 at frame 1), which shows drift that small steps hide;
- ``clip_sim``: text-image similarity of each frame with its story prompt on CLIPScore's scale (Hessel et al.
  2021, as torchmetrics' ``CLIPScore``): 100 x cosine, floored at 0.

The model is a transformers CLIP folder you placed (the paper does not name its CLIP; ``openai/clip-vit-large-patch14``
is torchmetrics' default), loaded from safetensors only, offline.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .features import check_folder

__all__ = ["ClipMetric"]


def _features(output) -> torch.Tensor:
    """transformers 5 returns the projected embedding as the output's ``pooler_output``; 4.x returned the tensor."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


class ClipMetric:
    name = "clip"
    columns = ("frame_consistency", "consistency_first", "clip_sim")

    def __init__(self, model, processor, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = device
        self.max_tokens = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_folder(cls, folder, device: str = "cpu") -> "ClipMetric":
        from transformers import CLIPModel, CLIPProcessor

        path = check_folder(folder, "CLIP", "openai/clip-vit-large-patch14 (with its tokenizer files)")
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        return cls(model, CLIPProcessor.from_pretrained(path, local_files_only=True), device)

    @torch.no_grad()
    def image_embeddings(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Unit-length image embeddings [N, D] of frames [H, W, 3] uint8."""
        pixels = self.processor(images=[np.asarray(f) for f in frames], return_tensors="pt")["pixel_values"]
        embedding = _features(self.model.get_image_features(pixel_values=pixels.to(self.device))).float()
        return torch.nn.functional.normalize(embedding, dim=-1).cpu()

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings [N, D] (texts cut to the model's window, as CLIPScore does)."""
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_tokens)
        embedding = _features(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                           attention_mask=tokens["attention_mask"].to(self.device)))
        return torch.nn.functional.normalize(embedding.float(), dim=-1).cpu()

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        if len(frames) > len(item.prompts):
            raise InvalidInputError(f"item {item.id} has {len(frames)} frames but {len(item.prompts)} prompts.")
        images = self.image_embeddings(frames)
        texts = self.text_embeddings(item.prompts[:len(frames)])
        previous = [float("nan")] + (images[1:] * images[:-1]).sum(-1).tolist()
        first = (images * images[:1]).sum(-1).tolist()
        sim = (100 * (images * texts).sum(-1)).clamp(min=0).tolist()
        return {"frame_consistency": previous, "consistency_first": first, "clip_sim": sim}
