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
from ..progress import ProgressFn, no_progress
from .base import check_maskgit_steps, check_video
from .decoding import CachedDecoder, keep_vq_float32

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
    them) and SDPA attention, which takes the additive 4-D mask as it is; ``config`` is not changed."""
    from transformers import PhiForCausalLM

    config = config.__class__.from_dict({**config.to_dict(), "qk_layernorm": True, "use_cache": False})
    config._attn_implementation = "sdpa"
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
    check_maskgit_steps(steps)
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

    def __init__(self, model, prefix_ids: torch.Tensor, vocab: ShowoVocab, block_length: int = 0, *,
                 cache=None, start: int = 0) -> None:
        """Run ``prefix_ids`` [B, P] from position ``start`` on: ``cache`` (a ``StoryCache``) may already hold the
        first ``start`` positions (an earlier frame's prefix: ``cache.CacheKeeper``); None starts a fresh one."""
        from .cache import StoryCache

        self.model, self.vocab, self.prefix_ids = model, vocab, prefix_ids
        self.cache = cache if cache is not None else StoryCache()
        self.cache.reserve(prefix_ids.shape[1] + block_length)    # a step appends in place, a crop is free
        if start < prefix_ids.shape[1]:
            mask = omni_attention_mask(prefix_ids, vocab)[:, :, start:]
            with torch.no_grad():
                model(input_ids=prefix_ids[:, start:], attention_mask=additive(mask, self._dtype()), cache=self.cache,
                      use_cache=True)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def length(self) -> int:
        return self.prefix_ids.shape[1]

    def block_logits(self, block_ids: torch.Tensor) -> torch.Tensor:
        """[B, n] ids of ``<|soi|> tokens <|eoi|>`` -> their [B, n, vocabulary] logits, as if the whole sequence ran."""
        full = torch.cat([self.prefix_ids, block_ids], 1)
        mask = omni_attention_mask(full, self.vocab)[:, :, self.length:]
        with torch.no_grad():
            logits = self.model(input_ids=block_ids, attention_mask=additive(mask, self._dtype()), cache=self.cache,
                                use_cache=True).logits
        self.cache.crop(self.length - self.cache.get_seq_length())
        return logits


# --------------------------------------------------------------------------------------------------
# The Show-o ARM family
# --------------------------------------------------------------------------------------------------
# A Show-o folder, as published, plus the two folders its code fetches by name, placed inside it:
#   config.json                 {"_class_name": "Showo", "vocab_size", "llm_vocab_size", "codebook_size",
#                               "num_vq_tokens", "llm_model_path": "microsoft/phi-1_5", ...}
#   pytorch_model.safetensors   PhiForCausalLM's tensors under "showo."
#   magvitv2/                   showlab/magvitv2 (config.json + pytorch_model.safetensors)
#   phi-1_5/                    microsoft/phi-1_5's tokenizer files (its config.json too, if there)
CLASS_NAME = "Showo"
VQ_DIR, TEXT_DIR = "magvitv2", "phi-1_5"
REQUIRED_FILES = (("config.json",), ("pytorch_model.safetensors",), (f"{VQ_DIR}/pytorch_model.safetensors",),
                  (f"{TEXT_DIR}/tokenizer.json", f"{TEXT_DIR}/vocab.json"))
WEIGHT_FOLDERS = (".", VQ_DIR)
# microsoft/phi-1_5's config.json (transformers' PhiConfig defaults are the same), for a folder without one.
PHI_1_5 = {"model_type": "phi", "vocab_size": 51200, "hidden_size": 2048, "intermediate_size": 8192,
           "num_hidden_layers": 24, "num_attention_heads": 32, "max_position_embeddings": 2048,
           "hidden_act": "gelu_new", "layer_norm_eps": 1e-5, "partial_rotary_factor": 0.5, "rope_theta": 10000.0,
           "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0, "tie_word_embeddings": False}
MAX_TEXT_LEN = 128       # the text slot upstream's configs train and sample with (dataset.preprocessing)



class ShowoARM(CachedDecoder):
    """Show-o as an ARM of the protocol (``base.ARMBackend``). The story sequence (the paper's Eq. 1) is the
    chunks' t2i prompts one after another, each followed by its frame::

        [t2i slot: u_1] <|soi|> v_1 <|eoi|> [t2i slot: u_2] <|soi|> v_2 <|eoi|> ... [t2i slot: u_i] <|soi|> ? <|eoi|>

    Under the omni mask (``omni_attention_mask``) text is causal and each frame's block sees everything before
    its end, so everything before the frame being filled is context that the frame cannot change: it is run
    once per frame (``FramePrefix``) and kept in the context's cache memo, so after a swap of frame k only frame
    k onward is run again (the ids are the cache key, ``cache.py``). The frame is filled by MaskGIT
    (``maskgit_fill``) with ``settings.maskgit_steps`` steps.

    CFG: ``guidance_scale`` s is the project's (s = 1: off) and Show-o's w = s - 1, so (1 + w) c - w u =
    u + s (c - u) (Show-o's demo w = 5 is s = 6). The unconditional row is the same story with every prompt
    empty (``<|t2i|> bos eos``, padded: the same length, frames kept), which for a one-frame story is upstream's
    own empty-prompt row. ``temperature`` is MaskGIT's confidence-noise temperature; top-k and top-p do not
    apply.
    """

    family = "showo"
    batch_capable = False      # its MaskGIT steps run one story's frame block at a time (story.generate_many loops)
    static_capable = False     # each MaskGIT step's omni-attention mask spans exactly the cached story plus the block
    inpaints_tokens = True     # sample_chunk(known=...) keeps given codes and fills the rest (story.inpaint_tokens)

    def __init__(self, lm, tokenizer, vq, vocab: ShowoVocab, *, tokens_per_image: int,
                 max_text_len: int = MAX_TEXT_LEN, previews: bool = False) -> None:
        from .cache import CacheKeeper

        grid = math.isqrt(tokens_per_image)
        if grid * grid != tokens_per_image:
            raise InvalidInputError(f"Show-o's num_vq_tokens must be a square grid; got {tokens_per_image}.")
        if vq.config.codebook_size != vocab.codebook_size:
            raise InvalidInputError(f"the MAGVIT-v2 tokenizer has {vq.config.codebook_size} codes but the Show-o "
                                    f"checkpoint expects {vocab.codebook_size}: a tokenizer of another model?")
        self.lm, self.tokenizer, self.vq, self.vocab = lm, tokenizer, vq, vocab
        self.grid = (grid, grid)
        self.tokens_per_image = tokens_per_image
        self.codebook_size = vocab.codebook_size
        self.image_size = (grid * vq.config.downsampling, grid * vq.config.downsampling)
        self.max_text_len = max_text_len
        self.code_key_offset = vocab.image_offset
        self.context_window = int(lm.config.max_position_embeddings)
        self.previews = previews
        self.device = next(lm.parameters()).device
        self.dtype = next(lm.parameters()).dtype
        self.vq_dtype = keep_vq_float32(vq)
        self._keeper = CacheKeeper()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder, *, device="cpu", dtype=None, trust_remote_code: bool = False,
                        previews: bool = False) -> "ShowoARM":
        import json
        from pathlib import Path

        from safetensors.torch import load_file
        from transformers import AutoTokenizer, PhiConfig

        from ..devices import pick_dtype
        from ..weights import check_state_matches, on_meta, weight_shapes
        from .magvit import load_magvit

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("_class_name") != CLASS_NAME:
            raise InvalidInputError(f"{folder / 'config.json'} is not a Show-o config (_class_name "
                                    f"{config.get('_class_name')!r}).")
        if config.get("w_clip_vit"):
            raise InvalidInputError(f"{folder} is a Show-o variant with a CLIP-ViT image encoder (w_clip_vit), made "
                                    f"for understanding; use showlab/show-o, show-o-512x512 or Show-o-Turbo.")
        text_dir = folder / TEXT_DIR
        tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        vocab = ShowoVocab(llm_vocab_size=int(config["llm_vocab_size"]), codebook_size=int(config["codebook_size"]),
                           bos=int(bos), eos=int(tokenizer.eos_token_id))
        if vocab.size != int(config["vocab_size"]):
            raise InvalidInputError(f"{folder / 'config.json'}: vocab_size {config['vocab_size']} is not "
                                    f"llm_vocab_size + 10 + codebook_size + 1 = {vocab.size}.")
        phi_file = text_dir / "config.json"
        phi = json.loads(phi_file.read_text(encoding="utf-8")) if phi_file.is_file() else dict(PHI_1_5)
        phi_config = PhiConfig.from_dict({**phi, "vocab_size": vocab.size})
        shapes = {name[len(PREFIX):]: shape for name, shape in weight_shapes(folder, "pytorch_model").items()
                  if name.startswith(PREFIX)}
        where = f"the Show-o weights in {folder / 'pytorch_model.safetensors'}"
        if not shapes:
            raise InvalidInputError(f"{where} have no {PREFIX!r} tensors: not a Show-o checkpoint.")
        check_state_matches(on_meta(lambda: build_phi(phi_config)), shapes, where)
        dtype = dtype or pick_dtype(torch.device(device))
        lm = build_phi(phi_config)
        lm.load_state_dict(lm_state(load_file(folder / "pytorch_model.safetensors")), strict=True)
        lm = lm.to(device=device, dtype=dtype).eval().requires_grad_(False)
        vq = load_magvit(folder / VQ_DIR, device=device)
        return cls(lm, tokenizer, vq, vocab, tokens_per_image=int(config["num_vq_tokens"]),
                   max_text_len=int(config.get("max_text_len", MAX_TEXT_LEN)), previews=previews)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"lm": self.lm, "vq": self.vq}

    # ---------------------------------------------------------------- the sequence
    def text_ids(self, prompt: str) -> list[int]:
        """The prompt's text ids (no special tokens); an id that is not text (an added token typed into the
        prompt) is refused."""
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if any(i >= self.vocab.llm_vocab_size for i in ids):
            from ..errors import quote_head
            raise InvalidInputError(f"the prompt {quote_head(prompt)} holds Show-o control tokens (such as <|soi|>); "
                                    f"remove them.")
        return ids

    def _slot(self, text: list[int]) -> torch.Tensor:
        """One chunk's t2i text slot, ``max_text_len + 1`` ids (see ``t2i_prompt``)."""
        return t2i_prompt(text, torch.empty(0, dtype=torch.long), self.vocab, self.max_text_len)[:-2]

    def sequence_key(self, context, prompt: str, *, cfg: bool) -> torch.Tensor:
        """[rows, L] ids of everything before the next frame's ``<|soi|>``: cond, then (with CFG) the same story with
        every prompt empty."""
        rows = [[self.text_ids(c.prompt) for c in context.chunks] + [self.text_ids(prompt)]]
        if cfg:
            rows.append([[] for _ in range(len(context.chunks) + 1)])
        keys = []
        for texts in rows:
            parts = []
            for index, chunk in enumerate(context.chunks):
                self.check_chunk_tokens(index, chunk.tokens)
                for image in chunk.tokens:
                    parts += [self._slot(texts[index]), torch.tensor([self.vocab.soi]),
                              image.cpu().long() + self.vocab.image_offset, torch.tensor([self.vocab.eoi])]
            parts.append(self._slot(texts[-1]))
            keys.append(torch.cat(parts))
        return torch.stack(keys)

    def _take_cache(self, memo, key: torch.Tensor, extra: int):
        """As every family, but a cache cut inside an image block is cut back to before the block's ``<|soi|>``:
        every position of a block sees the whole block, so a changed code changes them all."""
        return self._keeper.take(memo, key, extra, device=self.device, dtype=self.dtype, valid=self._before_open_block)

    def _before_open_block(self, key: torch.Tensor, keep: int) -> int:
        """``keep``, or the ``<|soi|>`` of the block still open at position ``keep`` (rows share the layout)."""
        row = key[0, :keep]
        starts = (row == self.vocab.soi).nonzero()
        ends = (row == self.vocab.eoi).nonzero()
        if len(starts) and (not len(ends) or int(starts[-1]) > int(ends[-1])):
            return int(starts[-1])
        return keep

    # ---------------------------------------------------------------- pixels
    def _decode_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(tokens, self.grid)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(pixels)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_chunk(self, context, prompt: str, *, settings, generator: torch.Generator, images_per_chunk: int = 1,
                     continues: bool = False, progress: ProgressFn = no_progress,
                     known: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Codes [1, tokens_per_image] (long, CPU) of the frame for ``prompt`` after everything in ``context``,
        filled by MaskGIT. ``known`` ([tokens_per_image] codes, -1 where to fill) keeps the codes it gives and
        fills the rest: token-level inpainting of a region of a frame by the ARM itself."""
        from .sampling import uses_cfg

        settings.validate()
        check_video(self, context, prompt, images_per_chunk, continues)
        if settings.top_k or settings.top_p != 1.0:
            raise InvalidInputError("Show-o's MaskGIT sampling has no top-k or top-p; set them to 0 and 1.")
        cfg = uses_cfg(settings)
        key = self.sequence_key(context, prompt, cfg=cfg)
        rows, n = key.shape[0], self.tokens_per_image
        codes = torch.full((1, n), self.vocab.mask, dtype=torch.long)
        if known is not None:
            known = known.reshape(-1).long().cpu()
            if known.shape[0] != n or bool(((known < -1) | (known >= self.codebook_size)).any()):
                raise InvalidInputError(f"known codes must be {n} values in [-1, {self.codebook_size}) (-1: fill).")
            codes = torch.where(known[None] >= 0, known[None], codes)
        cache, start = self._take_cache(context.memo, key, n + 2)
        covered = None
        try:
            prefix = FramePrefix(self.lm, key.to(self.device), self.vocab, n + 2, cache=cache, start=start)
            covered = key
            soi = torch.full((rows, 1), self.vocab.soi, device=self.device)
            eoi = torch.full((rows, 1), self.vocab.eoi, device=self.device)

            def code_logits(ids: torch.Tensor) -> torch.Tensor:
                block = torch.cat([soi, ids.to(self.device).expand(rows, n), eoi], 1)
                logits = prefix.block_logits(block)[:, 1:-1, self.vocab.image_offset:self.vocab.mask].float()
                return guided(logits, settings.guidance_scale - 1) if cfg else logits

            def on_step(step: int, partial: torch.Tensor) -> None:
                preview = self._masked_preview(partial[0]) if self.previews else None
                progress("arm", step + 1, settings.maskgit_steps, preview)

            filled = maskgit_fill(code_logits, codes, self.vocab, steps=settings.maskgit_steps,
                                  temperature=settings.temperature, generator=generator, on_step=on_step)
        finally:
            if covered is not None:
                if cache.get_seq_length() > covered.shape[1]:        # stopped inside a step: back to the prefix
                    cache.crop(covered.shape[1] - cache.get_seq_length())
                self._give_cache(context.memo, cache, covered)
        return filled.cpu()

    @torch.no_grad()
    def next_token_logits(self, context, prompt: str, *, guidance_scale: float = 5.0) -> torch.Tensor:
        """Raw code logits [rows, codebook] (cond, then uncond when ``guidance_scale != 1``) of the frame's first
        position in MaskGIT's first step (every code masked), using and updating the context's cache as
        ``sample_chunk`` does. For tests and tools."""
        from .base import SamplingSettings
        from .sampling import uses_cfg

        cfg = uses_cfg(SamplingSettings(guidance_scale=guidance_scale))
        key = self.sequence_key(context, prompt, cfg=cfg)
        rows, n = key.shape[0], self.tokens_per_image
        cache, start = self._take_cache(context.memo, key, n + 2)
        prefix = FramePrefix(self.lm, key.to(self.device), self.vocab, n + 2, cache=cache, start=start)
        block = torch.full((rows, n + 2), self.vocab.mask, device=self.device)
        block[:, 0], block[:, -1] = self.vocab.soi, self.vocab.eoi
        logits = prefix.block_logits(block)[:, 1, self.vocab.image_offset:self.vocab.mask]
        self._give_cache(context.memo, cache, key)
        return logits.float()

    def _masked_preview(self, partial: torch.Tensor) -> torch.Tensor:
        """The frame as far as MaskGIT has it: decoded codes where known, grey where still masked. [3, H, W]."""
        unknown = partial == self.vocab.mask
        image = self.decode(torch.where(unknown, 0, partial)[None])[0]
        cell = self.image_size[0] // self.grid[0]
        grey = unknown.reshape(self.grid).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        return torch.where(grey[None], torch.full_like(image, 0.5), image)
