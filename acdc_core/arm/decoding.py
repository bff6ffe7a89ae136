"""The decoding loop every ARM family shares: sample one image's codes, one language-model step per code,
with the story's key/value cache reused across calls (``cache.py``) and CFG as a second batch row.

A family subclasses ``CachedDecoder`` and says only what differs between families:

- ``sequence_key(context, prompt, cfg)``: the ``[rows, L]`` ids of the conditioning sequence (``cache.py``);
- ``_prefill_input(segment)``: what the LM takes for a slice of that key (ids, or embeddings);
- ``_code_input(code, rows)``: what the LM takes for one just-sampled code, for every row;
- ``_forward(inputs, cache)``: run the LM on new positions (``cache=None``: a fresh one), return the codebook
  logits ``[rows, K]``;
- ``_decode_codes(tokens)`` -> pixels in [-1, 1]; ``_encode_pixels(pixels in [-1, 1])`` -> codes;
- ``modules()``: every weight-holding module by name;
- the attributes ``code_key_offset`` (where codes sit in the key; text ids below it), ``codebook_size``,
  ``tokens_per_image``, ``image_size``, ``previews``, ``device``, ``dtype`` (the LM's), ``vq_dtype``, ``_keeper``,
  and ``_preview_geometry()``: (codes per image row, pixels per code row) for the live preview.

Optional hooks, for a family whose image is more than a run of sampled codes (Emu3: an end-of-line token after
every row, full-vocabulary logits, CFG's unconditional row as a sequence of its own):

- ``_image_plan()``: the positions one image takes after the key, ``None`` where a code is sampled and a key id
  where the family forces a token (default: ``tokens_per_image`` codes);
- ``_codes_key(codes)``: sampled codes as key ids (default: offset by ``code_key_offset``);
- ``_uncond_branch(context, prompt, **video)``: an ``UnconditionalBranch`` when CFG's unconditional row is a
  separate sequence rather than a second row of the key (default: ``None``);
- ``_next(logits, settings, generator, forced)``: the code (or, where ``forced``, the forced id) for one position
  from the rows' logits (default: ``sampling.next_tokens``); ``_code_logits(logits)``: the codebook's slice of
  ``_forward``'s logits (default: they are that already);
- ``_new_positions(images)``: the positions ``images`` new images take after the key (default: codes, EOI, EOS).

Video (``base.py``'s module docstring; a family with ``video_capable = True``): ``sequence_key`` and
``_uncond_branch`` also take ``images`` (the frames the new chunk will hold) and ``continues`` (the new chunk
continues the last chunk's video), passed only for a video request; ``_frame_separator()`` gives the key ids a
family forces between two frames sampled in one call (a chunk of several images).

Decoding modes (``set_decoding``): ``"dynamic"`` (the default: a growing cache, ``cache.StoryCache``),
``"static"`` (transformers' ``StaticCache``, written in place) and ``"compiled"`` (the static cache with the one-token
step compiled by ``torch.compile``; on CUDA in the mode that captures CUDA graphs). All three give the same tokens
for the same seed up to float rounding (greedy: identical, tested); a family whose attention is not plain causal
over its cache (Show-o's omni mask) keeps ``static_capable = False``. A family names its language model's config
for the static cache (``_lm_config``).

The base class owns what every family does the same way: checking a context's chunks, the unconditional CFG
row (``unconditional_row``), moving weights and caches (``to``), and the pixel range and checks of ``decode``
and ``encode``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import InvalidInputError, quote_head
from ..progress import ProgressFn, no_progress
from .base import DECODING, ARMContext, CacheMemo, SamplingSettings, check_images, check_video
from .cache import CacheKeeper, PaddedBatch
from .sampling import next_tokens, uses_cfg

__all__ = ["CachedDecoder", "DECODING", "PaddedBatch", "UnconditionalBranch", "keep_vq_float32", "unconditional_row",
           "window_policy"]


def keep_vq_float32(vq: torch.nn.Module) -> torch.dtype:
    """Every family's VQ tokenizer runs in float32, whatever the language model's precision; returns that dtype.

    ACDC re-encodes each corrected frame and swaps the codes into the story, so the codes must be the tokenizer's own:
    half precision moves near-tied nearest-code choices (``benchmarks/results/vq_precision.md``), and on a CPU a
    bfloat16 convolution runs over 100 times slower than a float32 one. The VQ is under 1 % of a frame's time on
    either device (``benchmarks/results/acdc_frame.md``)."""
    vq.float()
    return torch.float32


def window_policy(chunks: int) -> "list[tuple[int, ...]]":
    """The long-story policy: the contexts to try, longest first, when the story no longer fits the ARM's
    context window. Frame 1 (which introduces the story's characters and place) stays while it can, and the
    earliest frames after it are dropped first: (0, 1, 2, ..), then (0, 2, ..), (0, 3, ..), ..., (0,), and
    finally the empty context. Each entry is a tuple of chunk indices."""
    if not chunks:
        return [()]
    everything = tuple(range(chunks))
    return [everything] + [(0,) + everything[j:] for j in range(2, chunks + 1)] + [()]


def unconditional_row(cond: torch.Tensor, *, keep_ids: list[int], code_offset: int, pad: int) -> torch.Tensor:
    """The CFG row of a ``[L]`` (or ``[rows, L]``) key: every text id replaced by ``pad``; image codes (ids at or
    above ``code_offset``) and the structural ids in ``keep_ids`` (BOS, BOI, EOI, EOS) kept. Same length as
    ``cond``, so positions line up; for a story of one frame this is Janus' own unconditional row."""
    keep = (cond >= code_offset) | torch.isin(cond, torch.tensor(keep_ids, device=cond.device))
    return torch.where(keep, cond, torch.full_like(cond, pad))


class UnconditionalBranch:
    """CFG's unconditional row as a sequence of its own, the way transformers' ``generate`` runs it
    (``UnbatchedClassifierFreeGuidanceLogitsProcessor``): a fixed ``prefix`` key (the negative prompt), then every
    position the conditional row is fed, with a cache of its own. The cache lives in ``memo`` (one per backend:
    the prefix does not depend on the story), so the prefix runs once and each image crops back to it. Like the
    story's cache, it is given back only with the key it truly covers."""

    def __init__(self, arm: "CachedDecoder", memo: CacheMemo, prefix: torch.Tensor) -> None:
        self.arm, self.memo, self.prefix = arm, memo, prefix      # prefix: [1, L] key ids
        self.cache: Any = None
        self.fed: list[torch.Tensor] = []
        self.true = False   # whether the cache holds exactly prefix + fed

    def first(self, extra: int) -> torch.Tensor:
        """The logits after the prefix (``extra``: positions to reserve for the image)."""
        self.cache, start = self.arm._take_cache(self.memo, self.prefix, extra)
        logits = self.arm._forward(self.arm._prefill_input(self.prefix[:, start:]), self.cache)
        self.true = True
        return logits

    def step(self, key_id: torch.Tensor) -> torch.Tensor:
        """Feed one more position (key id ``[1]``) and return its logits."""
        self.true = False
        logits = self.arm._step_forward(self.arm._prefill_input(key_id[None]), self.cache)
        self.fed.append(key_id)
        self.true = True
        return logits

    def close(self) -> None:
        if self.cache is not None and self.true:
            fed = torch.cat(self.fed).to("cpu")[None] if self.fed else self.prefix[:, :0]
            self.arm._give_cache(self.memo, self.cache, torch.cat([self.prefix, fed], dim=1))


class CachedDecoder:
    """Mixin: ``sample_chunk`` and ``next_token_logits`` over the hooks listed in the module docstring."""

    family = "?"
    code_key_offset: int
    context_window: Optional[int] = None   # positions the LM attends over (max_position_embeddings); None: no limit
    decoding = "dynamic"                   # see the module docstring and set_decoding
    static_capable = True                  # whether a static cache fits this family's attention
    batch_capable = True                   # whether ``sample_chunks`` can run several stories as one batch

    # ---------------------------------------------------------------- hooks (per family)
    def sequence_key(self, context: ARMContext, prompt: str, *, cfg: bool) -> torch.Tensor:
        raise NotImplementedError

    def _prefill_input(self, segment: torch.Tensor) -> Any:
        raise NotImplementedError

    def _code_input(self, code: torch.Tensor, rows: int) -> Any:
        raise NotImplementedError

    def _forward(self, inputs: Any, cache: Any, **batch) -> torch.Tensor:
        """``batch``: ``attention_mask`` and ``position_ids`` for the language model (``sample_chunks``' padding)."""
        raise NotImplementedError

    def _preview_geometry(self) -> tuple[int, int]:
        raise NotImplementedError

    def _decode_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def _lm_config(self) -> Any:
        """The language model's config (layers, heads, sizes), for a static cache."""
        raise NotImplementedError

    # ---------------------------------------------------------------- optional hooks (defaults: raster codes)
    def _image_plan(self) -> tuple[Optional[int], ...]:
        return (None,) * self.tokens_per_image

    def _codes_key(self, codes: torch.Tensor) -> torch.Tensor:
        return codes + self.code_key_offset

    def _uncond_branch(self, context: ARMContext, prompt: str, **video) -> Optional[UnconditionalBranch]:
        return None

    def _frame_separator(self) -> tuple[int, ...]:
        raise NotImplementedError    # video families only (check_video refuses the others first)

    def _next(self, logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator,
              forced: Optional[int]) -> torch.Tensor:
        return next_tokens(logits, settings, generator)

    def _code_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def _new_positions(self, images: int) -> int:
        return images * (self.tokens_per_image + 2)     # the codes, then EOI and EOS (BOI is in the key)

    # ---------------------------------------------------------------- shared by every family
    def set_decoding(self, mode: str) -> "CachedDecoder":
        """Choose how tokens are decoded (``DECODING``). Caches made before are not reused afterwards."""
        from .registry import check_decoding

        check_decoding(self.family, mode)
        self._keeper = CacheKeeper(static=self._lm_config() if mode != "dynamic" else None, limit=self.context_window)
        self.__dict__.pop("_compiled", None)
        self.decoding = mode
        return self

    def _step_forward(self, inputs: Any, cache: Any) -> torch.Tensor:
        """``_forward`` for one new position: compiled once per backend in ``"compiled"`` mode."""
        if self.decoding != "compiled":
            return self._forward(inputs, cache)
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else None   # CUDA graphs where there are any
            # dynamic=None: a cache of another size (a story that outgrew it) recompiles once with symbolic sizes
            compiled = self.__dict__["_compiled"] = torch.compile(self._forward, mode=mode)
        return compiled(inputs, cache)

    def check_chunk_tokens(self, index: int, tokens: torch.Tensor) -> None:
        """Raise a clear error unless chunk ``index``'s tokens are ``[n_images, tokens_per_image]`` codebook ids."""
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_image or tokens.shape[0] < 1:
            raise InvalidInputError(
                f"chunk {index} holds tokens of shape {tuple(tokens.shape)}; the {self.family} ARM needs "
                f"[n_images, {self.tokens_per_image}].")
        self._check_codes(tokens, f"chunk {index}")

    def _check_codes(self, tokens: torch.Tensor, what: str) -> None:
        if tokens.dtype.is_floating_point or bool((tokens < 0).any()) or bool((tokens >= self.codebook_size).any()):
            raise InvalidInputError(
                f"{what} holds values outside the codebook [0, {self.codebook_size}) (dtype {tokens.dtype}); were "
                f"these tokens made by this {self.family} ARM?")

    def to(self, device: torch.device | str):
        """Move the weights, and the key/value caches this backend left in contexts' memos, to ``device``.

        Offloading the ARM to the CPU while the diffusion model runs thus frees the cache's memory too, and
        moving back restores it without recomputing the story.
        """
        device = torch.device(device)
        for module in self.modules().values():
            module.to(device)
        self.device = next(p.device for m in self.modules().values() for p in m.parameters())
        self._keeper.move_to(self.device)
        return self

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, tokens_per_image]`` -> images ``[N, 3, H, W]`` float32 in [0, 1] on the CPU."""
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_image:
            raise InvalidInputError(
                f"decode needs tokens [N, {self.tokens_per_image}]; got shape {tuple(tokens.shape)}.")
        self._check_codes(tokens, "the tokens to decode")
        pixels = self._decode_codes(tokens.to(self.device, torch.long))           # [-1, 1]
        return ((pixels.float() + 1) / 2).clamp(0, 1).cpu()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [0, 1] at ``image_size`` -> codes ``[N, tokens_per_image]`` (long, CPU)."""
        check_images(images, self.image_size, "image to encode")
        pixels = images.to(self.device, self.vq_dtype) * 2 - 1    # [0, 1] -> [-1, 1], as the VQ was trained
        return self._encode_pixels(pixels).cpu()

    def _video_request(self, context: ARMContext, prompt: str, images_per_chunk: int, continues: bool) -> dict:
        """The keyword arguments a video request adds to ``sequence_key`` (none for one image of a new chunk), after
        ``check_video``'s checks."""
        check_video(self, context, prompt, images_per_chunk, continues)
        return {} if images_per_chunk == 1 and not continues else {"images": images_per_chunk, "continues": continues}

    def _chunk_plan(self, images: int) -> tuple[Optional[int], ...]:
        """The positions a chunk of ``images`` images takes after the key: each image's plan, the family's frame
        separator (forced ids) between two images."""
        plan = self._image_plan()
        return plan + (tuple(self._frame_separator()) + plan) * (images - 1) if images > 1 else plan

    def fit_context(self, context: ARMContext, prompt: str, *, images_per_chunk: int = 1,
                    continues: bool = False) -> tuple[int, ...]:
        """The chunks of ``context`` (indices) that ``prompt``'s chunk is conditioned on: every chunk while the whole
        sequence and the new image's codes fit ``context_window``, else the first of ``window_policy`` that fits."""
        video = self._video_request(context, prompt, images_per_chunk, continues)
        new = self._new_positions(images_per_chunk)
        for indices in window_policy(len(context)):
            length = self.sequence_key(context.select(indices), prompt, cfg=False, **video).shape[-1] + new
            if self.context_window is None or length <= self.context_window:
                return indices
        raise InvalidInputError(
            f"the prompt {quote_head(prompt)} is too long for the {self.family} ARM: with its image it needs "
            f"{length} positions and the model attends over {self.context_window}. Shorten it.")

    # ---------------------------------------------------------------- the cache
    def _take_cache(self, memo: CacheMemo, key: torch.Tensor, extra: int) -> tuple[Any, int]:
        """The memo's cache cropped to its common prefix with ``key``, and where prefill starts (see cache.py)."""
        return self._keeper.take(memo, key, extra, device=self.device, dtype=self.dtype)

    def _give_cache(self, memo: CacheMemo, cache: Any, covered: Optional[torch.Tensor]) -> None:
        self._keeper.give(memo, cache, covered, device=self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def next_token_logits(self, context: ARMContext, prompt: str, *, guidance_scale: float = 5.0,
                          continues: bool = False) -> torch.Tensor:
        """Raw code logits ``[rows, codebook]`` (cond, then uncond when ``guidance_scale != 1``) of the first
        code of the next image, using and updating the context's cache like ``sample_chunk``. For tests and tools."""
        video = self._video_request(context, prompt, 1, continues)
        cfg = uses_cfg(SamplingSettings(guidance_scale=guidance_scale))
        branch = self._uncond_branch(context, prompt, **video) if cfg else None
        key = self.sequence_key(context, prompt, cfg=cfg and branch is None, **video)
        cache, start = self._take_cache(context.memo, key, 0)
        logits = self._forward(self._prefill_input(key[:, start:]), cache)
        self._give_cache(context.memo, cache, key)
        if branch is not None:
            try:
                logits = torch.cat([logits, branch.first(0)])
            finally:
                branch.close()
        return self._code_logits(logits).float()

    @torch.no_grad()
    def sample_chunk(self, context: ARMContext, prompt: str, *, settings: SamplingSettings,
                     generator: torch.Generator, images_per_chunk: int = 1, continues: bool = False,
                     progress: ProgressFn = no_progress) -> torch.Tensor:
        """Codes ``[images_per_chunk, tokens_per_image]`` (long, CPU) of the image(s) for ``prompt`` after everything
        in ``context``; ``continues``: the next frame(s) of the context's last video (``base.py``, video families)."""
        settings.validate()
        video = self._video_request(context, prompt, images_per_chunk, continues)
        cfg = uses_cfg(settings)
        # None: the unconditional row is a row of the key
        branch = self._uncond_branch(context, prompt, **video) if cfg else None
        key = self.sequence_key(context, prompt, cfg=cfg and branch is None, **video)
        plan = self._chunk_plan(images_per_chunk)
        rows, total = key.shape[0], self.tokens_per_image * images_per_chunk
        memo = context.memo
        cache, start = self._take_cache(memo, key, len(plan))
        covered: Optional[torch.Tensor] = None  # what `cache` holds; None while a forward is under way
        tokens = torch.empty(total, dtype=torch.long, device=self.device)
        fed: list[torch.Tensor] = []  # key ids [1] of the positions run through the model after the key
        done = 0  # codes sampled
        try:
            logits = self._forward(self._prefill_input(key[:, start:]), cache)
            covered = key
            uncond = branch.first(len(plan)) if branch is not None else None
            for position, forced in enumerate(plan):
                both = logits if uncond is None else torch.cat([logits, uncond])
                token = self._next(both, settings, generator, forced)             # [1]
                if forced is None:
                    tokens[done] = token[0]
                    done += 1
                    progress("arm", done, total, self._chunk_preview(tokens, done) if self.previews else None)
                if position + 1 == len(plan):
                    break
                key_id = self._codes_key(token) if forced is None else torch.tensor([forced], device=self.device)
                step = (self._code_input(token, rows) if forced is None
                        else self._prefill_input(key_id.expand(rows, 1)))
                covered = None
                logits = self._step_forward(step, cache)
                fed.append(key_id)
                covered = key
                if branch is not None:
                    uncond = branch.step(key_id)
        finally:
            if covered is not None:
                ids = torch.cat(fed).to("cpu").expand(rows, len(fed)) if fed else key[:, :0]
                self._give_cache(memo, cache, torch.cat([key, ids], dim=1))
            if branch is not None:
                branch.close()
        return tokens.to("cpu").reshape(images_per_chunk, self.tokens_per_image)

    def _chunk_preview(self, tokens: torch.Tensor, done: int) -> Optional[torch.Tensor]:
        """``_preview`` of the image of a chunk that is being sampled (``tokens``: the chunk's codes so far, flat)."""
        image = (done - 1) // self.tokens_per_image
        start = image * self.tokens_per_image
        return self._preview(tokens[start:start + self.tokens_per_image], done - start)

    @torch.no_grad()
    def sample_chunks(self, contexts: "list[ARMContext]", prompts: "list[str]", *, settings: SamplingSettings,
                      generators: "list[torch.Generator]", batch: Optional[PaddedBatch] = None,
                      progress: ProgressFn = no_progress) -> "list[torch.Tensor]":
        """``sample_chunk`` for several stories at once: the codes ``[1, tokens_per_image]`` of the image for each
        ``prompts[i]`` after ``contexts[i]``, drawn with ``generators[i]``, as one batch of every story's rows (its
        CFG rows included). Each story's rows see only their own positions (the padding is masked, positions counted
        per row), so a story gets the codes it gets alone, up to float rounding (greedy: identical, tested).

        ``batch`` keeps the batch's key/value cache from one call to the next (the next frame of the same stories
        reruns only from each story's first new or changed position); without one the batch is prefilled afresh.
        The contexts' own memos are not used. Needs ``batch_capable`` (a family fed one position at a time)."""
        settings.validate()
        if not self.batch_capable:
            raise InvalidInputError(f"the {self.family} ARM does not decode stories in one batch; sample them one at "
                                    "a time (story.generate_many does).")
        if not (len(contexts) == len(prompts) == len(generators)) or not contexts:
            raise InvalidInputError(f"sample_chunks needs one context, prompt and generator per story (got "
                                    f"{len(contexts)}, {len(prompts)}, {len(generators)}).")
        cfg = uses_cfg(settings)
        keys, owners = [], []     # one key per row; owners[i]: story i's rows (a slice)
        for context, prompt in zip(contexts, prompts):
            branch = self._uncond_branch(context, prompt) if cfg else None
            rows = list(self.sequence_key(context, prompt, cfg=cfg and branch is None))
            if branch is not None:
                rows.append(branch.prefix[0])      # the unconditional sequence, a row of its own
            owners.append(slice(len(keys), len(keys) + len(rows)))
            keys += rows
        plan = self._image_plan()
        total, stories = self.tokens_per_image, len(contexts)
        batch = batch if batch is not None else PaddedBatch()
        cache, ids, mask, positions = batch.prepare(keys, len(plan), owner=self._keeper.owner, device=self.device,
                                                    dtype=self.dtype)
        tokens = torch.empty((stories, total), dtype=torch.long, device=self.device)
        done, forwarded = 0, False
        try:
            logits = self._forward(self._prefill_input(ids), cache, attention_mask=mask.to(self.device),
                                   position_ids=positions.to(self.device))
            forwarded = True
            for position, forced in enumerate(plan):
                drawn = [self._next(logits[rows], settings, generator, forced)
                         for rows, generator in zip(owners, generators)]
                if forced is None:
                    tokens[:, done] = torch.cat(drawn)
                    done += 1
                    progress("arm", done, total, self._preview(tokens[0], done) if self.previews else None)
                if position + 1 == len(plan):
                    break
                key_ids = (self._codes_key(torch.cat(drawn)) if forced is None
                           else torch.full((stories,), forced, device=self.device))
                per_row = torch.cat([key_ids[i:i + 1].expand(rows.stop - rows.start)
                                     for i, rows in enumerate(owners)])
                mask, positions = batch.step(per_row)
                forwarded = False
                logits = self._forward(self._prefill_input(per_row[:, None]), cache,
                                       attention_mask=mask.to(self.device), position_ids=positions.to(self.device))
                forwarded = True
        finally:
            if forwarded:
                batch.keep(cache)
        return list(tokens.to("cpu")[:, None])

    def _preview(self, tokens: torch.Tensor, done: int) -> Optional[torch.Tensor]:
        """At each quarter of the image: the decoded rows finished so far, grey below. ``[3, H, W]`` in [0, 1]."""
        quarter = max(1, self.tokens_per_image // 4)
        if done % quarter and done != self.tokens_per_image:
            return None
        per_row, pixels = self._preview_geometry()
        partial = tokens.clone()
        partial[done:] = 0
        image = self.decode(partial[None])[0]
        image[:, (done // per_row) * pixels:, :] = 0.5
        return image
