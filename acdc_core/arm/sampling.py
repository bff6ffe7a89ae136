"""Turning an ARM's next-token logits into a token: CFG combine, temperature, top-k, top-p, seeded draw.

Shared by every ARM family. The order and the arithmetic follow transformers' own logits processors
(``ClassifierFreeGuidanceLogitsProcessor`` then ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper``, then ``softmax`` + ``multinomial``), so a family whose library samples the same way
draws the very same tokens for the same random stream.

The draw happens on the generator's device: a CPU ``torch.Generator`` gives the same tokens for the same
seed whatever device the model runs on (the probabilities are copied to the CPU for the draw).
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import SamplingSettings


def uses_cfg(settings: SamplingSettings) -> bool:
    """Whether the settings need an unconditional row (guidance scale 1.0 means plain conditional sampling)."""
    return settings.guidance_scale != 1.0


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (scale 1 gives ``cond``)."""
    return uncond + (cond - uncond) * guidance_scale


def guided_logits(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Rows ``[cond_1..cond_B, uncond_1..uncond_B]`` (or just ``[cond_1..cond_B]`` without CFG) -> ``[B, V]`` float32."""
    logits = logits.float()
    if not uses_cfg(settings):
        return logits
    if logits.shape[0] % 2:
        raise ValueError(f"CFG needs an even number of rows (cond then uncond), got {logits.shape[0]}.")
    cond, uncond = logits.chunk(2, dim=0)
    return combine_cfg(cond, uncond, settings.guidance_scale)


def warp(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on ``[B, V]`` logits; removed entries become -inf."""
    if settings.temperature not in (0.0, 1.0):
        logits = logits / settings.temperature
    if settings.top_k:
        k = min(settings.top_k, logits.shape[-1])
        kth_best = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1.0 - settings.top_p)   # the low tail whose mass is within 1 - top_p
        drop_sorted[..., -1:] = False                       # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick(logits: torch.Tensor, settings: SamplingSettings,
         generator: Optional[torch.Generator]) -> torch.Tensor:
    """``[B, V]`` (already guided) logits -> ``[B]`` token ids on the logits' device.

    Temperature 0 is greedy (argmax, no randomness). Otherwise the processed distribution is drawn from
    with ``generator`` on the generator's device (``None`` uses torch's global random stream).
    """
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    probs = warp(logits, settings).softmax(dim=-1)
    if generator is not None and probs.device != generator.device:
        drawn = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return drawn.squeeze(-1).to(logits.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def next_tokens(logits: torch.Tensor, settings: SamplingSettings,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """The whole step: raw model rows (cond, then uncond under CFG) -> ``[B]`` sampled token ids."""
    return pick(guided_logits(logits, settings), settings, generator)
