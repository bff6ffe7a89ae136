"""Emu3 (BAAI/Emu3-Gen-hf) as an ACDC ARM, through transformers' ``Emu3ForConditionalGeneration``.

Emu3 has one vocabulary for text and images: an image is its VQ codes, each as its ``<|visual token NNNNNN|>`` id,
row by row with an end-of-line token (``<|extra_200|>``) after every row. What ``Emu3Processor`` builds for image
generation, and what ``generate`` then writes, is::

    BOS {prompt} <|image start|> {h}*{w} <|image token|>  [c c ... c EOL] x h  EOF <|image end|> EOS

(``h``, ``w``: the code grid, 8x smaller than the image; ``EOF`` is ``<|extra_201|>``). A story lays its chunks out
the same way, one after another behind a single BOS, so the sequence after sampling frame i is the prefix of frame
i+1's and the cache is reused; the end-of-line tokens are forced, as transformers' example forces them with
``prefix_allowed_tokens_fn``. Sampling runs over the whole vocabulary with every id but the visual tokens (or, at a
row's end, the end-of-line id) removed, as ``PrefixConstrainedLogitsProcessor`` does, so the same seed draws the
same tokens as ``generate``.

Classifier-free guidance is transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``: the unconditional
row is a sequence of its own (the negative prompt, with the same image prefix, then the image being made), and the
two rows combine as ``s * (log p_cond - log p_uncond) + log p_uncond``. It does not grow with the story, so its
prefix is run once per backend and reused (``decoding.UnconditionalBranch``).

Emu3 takes any image size that is a multiple of 8; its context is 9,216 positions, so the frame side is the ARM's
choice: ``DEFAULT_SIDE`` (256 px: 32 rows of 33 positions, about 1,090 positions a frame with its prompt, 8 frames
in the window; 384 px: about 2,380, 3 frames; 512 px: about 4,190, 2 frames). An ``acdc_emu3.json`` in the folder
(``{"image_size": 384}``) or ``from_pretrained(image_size=...)`` changes it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from ..devices import pick_dtype
from ..errors import InvalidInputError, MissingModelFilesError, quote_head
from ..weights import (check_loading_info, check_remote_code, check_state_matches, load_part_float32, on_meta,
                       weight_shapes, weights_name)
from .base import ARMContext, CacheMemo, SamplingSettings
from .cache import CacheKeeper
from .decoding import CachedDecoder, UnconditionalBranch, keep_vq_float32
from .sampling import pick, uses_cfg

REQUIRED_FILES: tuple[tuple[str, ...], ...] = (("tokenizer_config.json",), ("tokenizer.json", "vocab.json"))
CODE_FOLDERS: dict[str, str] = {".": "Emu3 ARM"}
OPTIONS = "acdc_emu3.json"
DEFAULT_SIDE = 256
# The negative prompt of Emu3's own image-generation example (BAAI), the unconditional row of CFG.
NEGATIVE_PROMPT = ("lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
                   "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.")
EOL = "<|extra_200|>"
# The tokenizer's own names for the image tokens (its extra special tokens) -> what they are for.
IMAGE_TOKENS = {"boi_token": "<|image start|>", "image_wrapper_token": "<|image token|>", "eof_token": "<|extra_201|>",
                "eoi_token": "<|image end|>"}


class Emu3ARM(CachedDecoder):
    """The ARM protocol for Emu3-Gen in transformers format. Build with ``from_pretrained``."""

    family = "emu3"

    def __init__(self, model: Any, tokenizer: Any, *, image_size: int = DEFAULT_SIDE, previews: bool = False,
                 negative_prompt: str = NEGATIVE_PROMPT) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.previews = previews
        self._keeper = CacheKeeper()
        self._uncond_memo = CacheMemo()     # the unconditional row's cache: its prefix is the same for every frame
        self._prefix_ids: dict[str, list[int]] = {}
        vq = model.model.vqmodel
        self.downsample = int(vq.spatial_scale_factor)
        side = int(image_size)
        if side < self.downsample or side % self.downsample:
            raise InvalidInputError(f"the Emu3 image size must be a multiple of {self.downsample} px, got {side}.")
        self.grid = side // self.downsample
        self.image_size: tuple[int, int] = (side, side)
        self.tokens_per_image = self.grid * self.grid
        self.codebook_size = int(vq.config.codebook_size)
        self.context_window = getattr(model.config.text_config, "max_position_embeddings", None)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vq_dtype = keep_vq_float32(model.model.vqmodel)

        mapping = model.vocabulary_mapping
        img2bpe = mapping.img2bpe
        if sorted(img2bpe) != list(range(self.codebook_size)):
            raise InvalidInputError(
                f"the Emu3 config's vocabulary_map has {len(img2bpe)} <|visual token ...|> entries but the VQ "
                f"codebook has {self.codebook_size} codes; is config.json complete?")
        self._img2bpe = torch.tensor([img2bpe[c] for c in range(self.codebook_size)])
        self.vocab_size = int(model.config.text_config.vocab_size)
        self._bpe2img = torch.full((self.vocab_size,), -1, dtype=torch.long)
        self._bpe2img[self._img2bpe] = torch.arange(self.codebook_size)
        self.code_key_offset = 0   # key ids are the LM's own ids (see _codes_key)
        self._ids = self._special_ids(mapping)
        self.negative_prompt = negative_prompt

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: torch.device | str = "cpu",
                        dtype: Optional[torch.dtype] = None, trust_remote_code: bool = False,
                        previews: bool = False, image_size: Optional[int] = None) -> "Emu3ARM":
        """Load a transformers-format Emu3 folder (safetensors only, local files only). ``image_size``: the frame side
        in pixels (default: the folder's ``acdc_emu3.json``, else ``DEFAULT_SIDE``)."""
        from transformers import AutoTokenizer, Emu3Config, Emu3ForConditionalGeneration

        folder = Path(folder)
        check_remote_code(folder, trust_remote_code, CODE_FOLDERS["."])
        if image_size is None:
            image_size = _options(folder).get("image_size", DEFAULT_SIDE)
        config = Emu3Config.from_pretrained(folder, local_files_only=True)
        if not config.vocabulary_map:
            raise MissingModelFilesError(f"{folder / 'config.json'} has no vocabulary_map; an Emu3 config in "
                                         "transformers format carries it (e.g. BAAI/Emu3-Gen-hf).")
        where = f"The weights in {weights_name(folder, 'model')}"
        check_state_matches(on_meta(lambda: Emu3ForConditionalGeneration(config)), weight_shapes(folder, "model"),
                            where, strict_keys=False)
        device = torch.device(device)
        dtype = pick_dtype(device) if dtype is None else dtype
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        model, info = Emu3ForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, device_map={"": device}, local_files_only=True, use_safetensors=True,
            trust_remote_code=trust_remote_code, output_loading_info=True, ignore_mismatched_sizes=True)
        check_loading_info(info, where)
        if dtype != torch.float32:    # the VQ tokenizer stays float32 (decoding.keep_vq_float32), read as stored
            load_part_float32(model.model.vqmodel, folder, "model", ("model.vqmodel.", "vqmodel."), where)
        return cls(model, tokenizer, image_size=image_size, previews=previews)

    def _special_ids(self, mapping: Any) -> dict[str, int]:
        tok = self.tokenizer
        ids: dict[str, Optional[int]] = {"bos": tok.bos_token_id, "eos": tok.eos_token_id,
                                         "eol": mapping.eol_token_id}
        for attr, literal in IMAGE_TOKENS.items():
            value = tok.convert_tokens_to_ids(getattr(tok, attr, None) or literal)
            ids[attr] = None if value is None or value == tok.unk_token_id else value
        missing = [name for name, value in ids.items() if value is None]
        if missing:
            raise MissingModelFilesError(
                f"the Emu3 tokenizer lacks the special token(s) {missing} (bos, eos, {EOL}, "
                f"{', '.join(IMAGE_TOKENS.values())}); is this a transformers-format Emu3 checkpoint?")
        return {k: int(v) for k, v in ids.items()}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def _lm_config(self) -> Any:
        return self.model.model.text_model.config

    # ---------------------------------------------------------------- the sequence
    def image_prefix(self) -> str:
        """What announces an image: ``<|image start|>{h}*{w}<|image token|>``, as ``Emu3Processor`` writes it."""
        return f"{IMAGE_TOKENS['boi_token']}{self.grid}*{self.grid}{IMAGE_TOKENS['image_wrapper_token']}"

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of ``{prompt}<|image start|>{h}*{w}<|image token|>`` (no BOS); control tokens in the prompt
        are refused."""
        ids = self._prefix_ids.get(prompt)
        if ids is None:
            text = list(self.tokenizer(prompt, add_special_tokens=False).input_ids)
            if any(i in self.tokenizer.all_special_ids or self._bpe2img[i] >= 0 for i in text):
                raise InvalidInputError(f"the prompt {quote_head(prompt)} contains Emu3 control tokens (such as "
                                        "<|image start|> or visual tokens); remove them.")
            ids = list(self.tokenizer(prompt + self.image_prefix(), add_special_tokens=False).input_ids)
            self._prefix_ids[prompt] = ids
        return ids

    def image_block(self, codes: torch.Tensor) -> torch.Tensor:
        """One image's codes ``[tokens_per_image]`` as the ids after its prefix: rows with EOL, EOF, EOI, EOS."""
        rows = self._img2bpe[codes.to("cpu", torch.long)].view(self.grid, self.grid)
        eol = torch.full((self.grid, 1), self._ids["eol"])
        tail = torch.tensor([self._ids["eof_token"], self._ids["eoi_token"], self._ids["eos"]])
        return torch.cat([torch.cat([rows, eol], dim=1).flatten(), tail])

    def sequence_key(self, context: ARMContext, prompt: str, *, cfg: bool) -> torch.Tensor:
        """The ``[1, L]`` ids of the conditional sequence (CFG's row is a separate sequence, ``_uncond_branch``)."""
        parts: list[torch.Tensor] = [torch.tensor([self._ids["bos"]])]
        for index, chunk in enumerate(context.chunks):
            self.check_chunk_tokens(index, chunk.tokens)
            for image in chunk.tokens:
                parts += [torch.tensor(self.prompt_ids(chunk.prompt)), self.image_block(image)]
        parts.append(torch.tensor(self.prompt_ids(prompt)))
        return torch.cat(parts).to(torch.long)[None]

    def uncond_key(self) -> torch.Tensor:
        """``[1, L]``: BOS, the negative prompt and the image prefix (the unconditional row before the image)."""
        return torch.tensor([[self._ids["bos"], *self.prompt_ids(self.negative_prompt)]])

    # ---------------------------------------------------------------- CachedDecoder's hooks
    def _prefill_input(self, segment: torch.Tensor) -> torch.Tensor:
        return segment.to(self.device)

    def _code_input(self, code: torch.Tensor, rows: int) -> torch.Tensor:
        return self._codes_key(code).to(self.device).expand(rows, 1)

    def _codes_key(self, codes: torch.Tensor) -> torch.Tensor:
        return self._img2bpe.to(codes.device)[codes]

    def _forward(self, ids: torch.Tensor, cache: Any, **batch) -> torch.Tensor:
        """Logits over the whole vocabulary ``[rows, V]`` at the last new position."""
        out = self.model.model.text_model(input_ids=ids, cache=cache, use_cache=True, **batch)
        return self.model.lm_head(out.last_hidden_state[:, -1, :])

    def _code_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self._img2bpe.to(logits.device)]

    def _image_plan(self) -> tuple[Optional[int], ...]:
        row = (None,) * self.grid + (self._ids["eol"],)
        return row * self.grid

    def _new_positions(self, images: int) -> int:
        return images * (len(self._image_plan()) + 3)        # rows with EOL, then EOF, EOI, EOS

    def _uncond_branch(self, context: ARMContext, prompt: str) -> UnconditionalBranch:
        # Emu3's unconditional row is the negative prompt alone, whatever the story (as its own generate runs it).
        return UnconditionalBranch(self, self._uncond_memo, self.uncond_key())

    def _next(self, logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator,
              forced: Optional[int]) -> torch.Tensor:
        """generate's processors in generate's order: CFG on log-probabilities, only the allowed ids (the visual
        tokens, or the forced one), then temperature / top-k / top-p and the draw over the whole vocabulary (a
        forced position draws too, as generate does, so the random stream stays the same)."""
        scores = logits[:1].float()
        if uses_cfg(settings):
            cond = torch.nn.functional.log_softmax(scores, dim=-1)
            uncond = torch.nn.functional.log_softmax(logits[1:].float(), dim=-1)
            scores = settings.guidance_scale * (cond - uncond) + uncond
        allowed = self._img2bpe.to(scores.device) if forced is None else torch.tensor([forced], device=scores.device)
        mask = torch.full_like(scores, float("-inf"))
        mask[:, allowed] = 0
        drawn = pick(scores + mask, settings, generator)
        return drawn if forced is not None else self._bpe2img.to(drawn.device)[drawn]

    def _preview_geometry(self) -> tuple[int, int]:
        return self.grid, self.downsample

    def _decode_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.model.vqmodel.decode(tokens.view(-1, self.grid, self.grid))

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        sizes = torch.tensor([list(self.image_size)] * pixels.shape[0])
        out = self.model.model.vqmodel.encode(pixels, sizes, return_dict=True)
        return torch.stack(out.image_tokens).flatten(1)


def _options(folder: Path) -> dict:
    """The folder's ``acdc_emu3.json`` (frame side), or ``{}``."""
    path = folder / OPTIONS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingModelFilesError(f"{path} could not be read as JSON: {err}") from err
    side = data.get("image_size", DEFAULT_SIDE) if isinstance(data, dict) else None
    if isinstance(side, bool) or not isinstance(side, int):
        raise InvalidInputError(f"{path}: image_size must be a whole number of pixels (a multiple of 8), got {side!r}.")
    return {"image_size": side}
