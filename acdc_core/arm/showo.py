"""Show-o (showlab/Show-o), the paper's story ARM: its vocabulary, prompt, omni-attention mask and MaskGIT filling.

The backbone is transformers' own ``PhiForCausalLM`` (Show-o's Phi has q/k layer norms, ``qk_layernorm=True``),
with the vocabulary grown to ``llm_vocab_size`` text tokens + 10 added tokens + the image codebook + one mask
token. A frame is filled by parallel masked prediction (MaskGIT), not token by token: all image tokens start as
the mask token, every step predicts them all at once and keeps the most confident.

Checked against upstream's own code on tiny weights: tests/fixtures/showo_upstream.safetensors
(tests/test_arm_showo.py). The ARM family built on this (story context, cache, loader) is the next step of the
Show-o issue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..errors import InvalidInputError

# Added to Phi's tokenizer by upstream, in this order, right after its own tokens: [PAD] first, then the nine
# task/segment tokens. Their ids follow from the text vocabulary's size.
ADDED_TOKENS = ("[PAD]", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>",
                "<|lvg|>")
# Checkpoint tensors are PhiForCausalLM's under this prefix (Show-o wraps the LM as ``self.showo``).
PREFIX = "showo."


@dataclass(frozen=True)
class ShowoVocab:
    """Where everything sits in Show-o's vocabulary (the published 256 px model: 50,295 text tokens, 8,192 codes,
    58,498 in all; image code c is token 50,305 + c, the mask token 58,497)."""

    llm_vocab_size: int = 50295
    codebook_size: int = 8192
    bos: int = 50256            # Phi's <|endoftext|>: its tokenizer's bos and eos
    eos: int = 50256

    def added(self, token: str) -> int:
        return self.llm_vocab_size + ADDED_TOKENS.index(token)

    @property
    def pad(self) -> int:
        return self.added("[PAD]")

    @property
    def soi(self) -> int:
        return self.added("<|soi|>")

    @property
    def eoi(self) -> int:
        return self.added("<|eoi|>")

    @property
    def t2i(self) -> int:
        return self.added("<|t2i|>")

    @property
    def image_offset(self) -> int:
        return self.llm_vocab_size + len(ADDED_TOKENS)

    @property
    def mask(self) -> int:
        return self.image_offset + self.codebook_size

    @property
    def size(self) -> int:
        return self.mask + 1


def t2i_prompt(text_ids: Sequence[int], image_tokens: torch.Tensor, vocab: ShowoVocab, max_text_len: int) -> torch.Tensor:
    """One frame's prompt as Show-o was trained on it: ``<|t2i|> bos text eos`` left-padded with [PAD] to
    ``max_text_len + 1`` (cut to fit, keeping a final eos), then ``<|soi|>``, the image tokens (vocabulary ids,
    the mask token where unknown) and ``<|eoi|>``. Returns [L] ids."""
    text = list(text_ids)
    if not text or text[0] != vocab.bos:
        text = [vocab.bos] + text
    ids = [vocab.t2i] + text + [vocab.eos]
    width = max_text_len + 1
    ids = [vocab.pad] * (width - len(ids)) + ids if len(ids) <= width else ids[:width - 1] + [vocab.eos]
    return torch.cat([torch.tensor(ids + [vocab.soi]), image_tokens.long().cpu(), torch.tensor([vocab.eoi])])


def chunk_length(tokens_per_image: int, max_text_len: int = 128) -> int:
    """Positions one frame takes in the sequence: the padded ``<|t2i|>`` text slot (``max_text_len + 1``),
    ``<|soi|>``, the image tokens and ``<|eoi|>`` (387 at 256 px, 1,155 at 512 px)."""
    return max_text_len + 1 + tokens_per_image + 2


def frames_that_fit(positions: int, tokens_per_image: int, max_text_len: int = 128) -> int:
    """How many frames a story can hold in ``positions`` (Phi-1.5: 2,048 -> 5 frames at 256 px, 1 at 512 px)."""
    return positions // chunk_length(tokens_per_image, max_text_len)


def omni_attention_mask(ids: torch.Tensor, vocab: ShowoVocab) -> torch.Tensor:
    """Show-o's attention for [B, L] ids -> bool [B, 1, L, L] (True = may attend). Text is causal; every position
    of an image block (``<|soi|>`` .. ``<|eoi|>``) sees everything before the block's end, itself included, so the
    block is bidirectional and what came before it is context; no position sees padding (a padding position sees
    only itself). A block's context never sees the block, so it can be cached while the block is filled."""
    batch, length = ids.shape
    start, end = (ids == vocab.soi), (ids == vocab.eoi)
    in_image = (start.cumsum(1) > end.cumsum(1)) | end                    # soi .. eoi, inclusive
    columns = torch.arange(length)
    # For every position, the next <|eoi|> at or after it (the end of the sequence if none): its block's end.
    next_end = torch.where(end, columns, length - 1).flip(1).cummin(1).values.flip(1)
    block_end = torch.where(in_image, next_end, columns)
    allowed = columns[None, None, :] <= block_end[:, :, None]              # [B, L(query), L(key)]
    padding = ids == vocab.pad
    allowed &= ~padding[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool)[None] & padding[:, :, None]
    return allowed[:, None]


def additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A bool attention mask -> the additive form transformers takes as a 4-D mask (0 or the dtype's minimum)."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)


def build_phi(config) -> "torch.nn.Module":
    """transformers' ``PhiForCausalLM`` for Show-o: a copy of ``config`` with q/k layer norms (as Show-o's Phi has
    them) and eager attention for an additive 4-D mask; ``config`` is not changed."""
    from transformers import PhiForCausalLM

    config = config.__class__.from_dict({**config.to_dict(), "qk_layernorm": True, "use_cache": False})
    config._attn_implementation = "eager"
    return PhiForCausalLM(config)


def lm_state(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Show-o's checkpoint tensors -> ``PhiForCausalLM``'s names (the ``showo.`` prefix dropped); a checkpoint
    without that prefix is not Show-o's."""
    if not any(name.startswith(PREFIX) for name in checkpoint):
        raise InvalidInputError(f"these weights have no {PREFIX!r} tensors: not a Show-o checkpoint "
                                f"(showlab/show-o, show-o-512x512 or Show-o-Turbo).")
    return {name[len(PREFIX):]: tensor for name, tensor in checkpoint.items() if name.startswith(PREFIX)}


def cosine_schedule(ratio: torch.Tensor) -> torch.Tensor:
    """MaskGIT's share of tokens left masked after the step at ``ratio`` = (step + 1) / steps (a float32 tensor,
    as upstream computes it: the count to mask is floored from it, so float64 would round differently)."""
    return torch.cos(ratio * math.pi * 0.5)


def maskgit_fill(code_logits: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, vocab: ShowoVocab, *,
                 steps: int = 18, temperature: float = 1.0, generator: Optional[torch.Generator] = None,
                 schedule: Callable[[torch.Tensor], torch.Tensor] = cosine_schedule,
                 on_step: Callable[[int, torch.Tensor], None] = lambda step, codes: None) -> torch.Tensor:
    """Fill the mask tokens of ``tokens`` ([B, N] codes, ``vocab.mask`` where unknown) in ``steps`` MaskGIT steps
    as upstream's ``t2i_generate`` does; returns [B, N] codes (known ones kept: token-level inpainting).

    ``code_logits(ids)`` gives the [B, N, codebook] logits of the image positions for [B, N] vocabulary ids (CFG,
    if any, already applied). Each step samples every position from its softmax (``torch.multinomial`` with
    ``generator``), keeps known codes, and masks again the floor(N * schedule((step + 1) / steps)) least
    confident new ones (at least one, and never all that are left): confidence = log p + t * Gumbel noise (drawn
    from ``generator`` after the samples), where t starts at ``temperature`` and is multiplied by
    (1 - (step + 1) / steps) every step, as upstream anneals it. ``on_step(step, codes)`` sees the partly filled
    codes (mask where still unknown) after every step, e.g. for a preview, and may raise to cancel.
    """
    if steps < 1:
        raise InvalidInputError(f"MaskGIT steps must be at least 1; got {steps}.")
    codes = tokens.clone()
    total = codes.shape[1]
    sampled = codes
    for step in range(steps):
        unknown = codes == vocab.mask
        ids = torch.where(unknown, vocab.mask, codes + vocab.image_offset)
        probs = code_logits(ids).float().softmax(-1)                            # [B, N, C]
        sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(codes.shape)
        sampled = torch.where(unknown, sampled, codes)
        ratio = (step + 1) / steps
        confidence = torch.gather(probs, -1, sampled[..., None])[..., 0]
        confidence = torch.where(unknown, confidence, torch.finfo(confidence.dtype).max)
        to_mask = (total * schedule(torch.tensor(ratio))).floor()
        to_mask = torch.maximum(torch.tensor(1), torch.minimum(unknown.sum(-1, keepdim=True) - 1, to_mask))
        temperature = temperature * (1.0 - ratio)
        noise = torch.zeros_like(confidence).uniform_(0, 1, generator=generator)
        gumbel = -torch.log((-torch.log(noise.clamp(min=1e-20))).clamp(min=1e-20))
        scored = torch.log(confidence.clamp(min=1e-20)) + temperature * gumbel
        cut = torch.gather(scored.sort(-1).values, 1, to_mask.long())
        codes = torch.where(scored < cut, vocab.mask, sampled)
        on_step(step, codes)
    return sampled


def guided(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Show-o's classifier-free guidance: (1 + w) * cond - w * uncond, on a [2B, ...] batch stacked [cond; uncond]."""
    cond, uncond = logits.chunk(2)
    return (1 + scale) * cond - scale * uncond


class FramePrefix:
    """The part of a frame's sequence no image token of the frame can change, run once per frame: the earlier
    frames and prompts and this frame's prompt, up to (not including) its ``<|soi|>``. Every MaskGIT step then runs
    only the block ``<|soi|> tokens <|eoi|>`` against the cached keys and values, and the cache is cut back to the
    prefix afterwards, so the steps never see each other's blocks. (``<|soi|>`` itself sees the whole block, so
    its keys change with the tokens: it belongs to the block.)"""

    def __init__(self, model, prefix_ids: torch.Tensor, vocab: ShowoVocab, block_length: int = 0) -> None:
        from .cache import StoryCache

        self.model, self.vocab, self.prefix_ids = model, vocab, prefix_ids
        self.cache = StoryCache()
        self.cache.reserve(prefix_ids.shape[1] + block_length)    # a step appends in place, a crop is free
        with torch.no_grad():
            model(prefix_ids, attention_mask=additive(omni_attention_mask(prefix_ids, vocab)), cache=self.cache,
                  use_cache=True)

    @property
    def length(self) -> int:
        return self.prefix_ids.shape[1]

    def block_logits(self, block_ids: torch.Tensor) -> torch.Tensor:
        """[B, n] ids of ``<|soi|> tokens <|eoi|>`` -> their [B, n, vocabulary] logits, as if the whole sequence ran."""
        full = torch.cat([self.prefix_ids, block_ids], 1)
        mask = omni_attention_mask(full, self.vocab)[:, :, self.length:]
        with torch.no_grad():
            logits = self.model(block_ids, attention_mask=additive(mask), cache=self.cache, use_cache=True).logits
        self.cache.crop(self.length - self.cache.get_seq_length())
        return logits
