"""Unified-vocabulary ARMs: one causal LM over text tokens *and* VQ image tokens, with a separate VQ tokenizer.

This is the family Chameleon-style models, Lumina-mGPT, Liquid and LWM belong to: an image is a run of
codebook ids placed in the language model's own vocabulary (after the text tokens), so text and images
share one embedding table, one output head and one sequence. Here the language model is any
transformers causal LM (``AutoModelForCausalLM``, e.g. a Llama) and the VQ tokenizer a diffusers
``VQModel``. A folder holds three things::

    acdc_arm.json   the manifest: {"family": "unified", image size, grid, codebook size, the offset of
                    image code 0 in the LM vocabulary, the special token ids, the text format, ...}
    lm/             the causal LM (config.json + *.safetensors) and its tokenizer (tokenizer.json)
    vq/             the VQModel (config.json + *.safetensors)

The sequence the LM sees for a story, one chunk per frame::

    BOS text(u_1) BOI c_1 ... c_T EOI text(u_2) BOI c_1 ... c_T EOI ... text(u_i) BOI -> sample v_i

``text(u)`` is the tokenizer's ids of ``manifest.text_format.format(prompt=u)``, left-padded with PAD to
``manifest.text_slot`` ids when the model was trained with a fixed-length text slot (then every chunk
has the same length, so a code and the same grid cell of the previous image are always the same distance
apart; 0 = no slot, the text as it is). Image code ``c`` is LM id
``image_token_offset + c``; the ``T = gh * gw`` codes of an image are in raster order (row by row). While
sampling an image only the codebook's slice of the logits is used (a code is always what comes next).
The sequence after sampling frame i is exactly the prefix of frame i+1's sequence, so the cache left
behind by one frame is reused by the next.

Classifier-free guidance batches two rows: the conditional sequence and the same sequence with every
text token replaced by PAD (same length, so positions line up); BOS, BOI, EOI and image codes are kept.
A model of this family is trained with the text of a share of its stories padded the same way, so the
unconditional row is a distribution it knows.

The ids themselves are the cache key (see ``cache.py``): after swapping chunk i, the cache is cropped
to the first changed code and only the swapped chunk onward is run again.

Re-encoding (``encode``) uses the VQModel's own quantizer (``vq.quantize``: nearest codebook entry by
Euclidean distance), the rule it was trained with; ``decode`` looks codes up in the same codebook and runs
``post_quant_conv`` + the decoder. Pixels cross at [0, 1]; the VQ works in [-1, 1].
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from ..devices import pick_dtype
from ..errors import InvalidInputError, MissingModelFilesError, quote_head
from ..weights import check_loading_info, check_remote_code, check_state_matches, on_meta, weight_shapes, weights_name
from .base import ARMContext, SamplingSettings
from .cache import CacheKeeper
from .decoding import CachedDecoder, keep_vq_float32, unconditional_row

MANIFEST = "acdc_arm.json"
FORMAT_VERSION = 1
SPECIAL_TOKENS: dict[str, str] = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "boi": "<boi>", "eoi": "<eoi>",
                                  "unk": "<unk>"}
STRUCTURAL = ("bos", "eos", "boi", "eoi")   # kept in the unconditional row; never allowed inside a prompt

# Files the registry checks before loading (each group needs one of), relative to the model folder.
REQUIRED_FILES: tuple[tuple[str, ...], ...] = ((MANIFEST,), ("lm/config.json",), ("lm/tokenizer.json",),
                                               ("vq/config.json",))
WEIGHT_FOLDERS: tuple[str, ...] = ("lm", "vq")
CODE_FOLDERS: dict[str, str] = {"lm": "ARM's language model"}   # config.json read by transformers (auto_map)


# --------------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """What ``acdc_arm.json`` says about a unified-vocabulary ARM folder."""

    image_size: tuple[int, int]          # (H, W) pixels of one image
    grid: tuple[int, int]                # (gh, gw) codes of one image; T = gh * gw, raster order
    codebook_size: int
    image_token_offset: int              # LM id of image code 0 (= the text vocabulary size)
    special_tokens: dict[str, int]       # bos, eos, pad, boi, eoi -> LM ids (all below the offset)
    text_format: str = "{prompt}"        # how a chunk's prompt becomes text before tokenising
    text_slot: int = 0                   # >0: every chunk's text is left-padded with PAD to this many ids
    default_sampling: SamplingSettings = field(default_factory=SamplingSettings)
    image_order: str = "raster"
    family: str = "unified"
    info: dict[str, Any] = field(default_factory=dict)   # free-form: what the model is, how it was made

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise MissingModelFilesError(
                f"{folder} has no {MANIFEST}; a unified-vocabulary ARM folder needs it next to lm/ and vq/.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise MissingModelFilesError(f"{path} could not be read as JSON: {err}") from err
        if data.get("family") != "unified":
            raise InvalidInputError(f"{path} names family {data.get('family')!r}, not 'unified'.")
        needed = ("image_size", "grid", "codebook_size", "image_token_offset", "special_tokens")
        missing = [k for k in needed if k not in data]
        missing += [f"special_tokens.{k}" for k in ("bos", "eos", "pad", "boi", "eoi")
                    if k not in data.get("special_tokens", {})]
        if missing:
            raise InvalidInputError(f"{path} lacks {', '.join(missing)}.")
        if data.get("image_order", "raster") != "raster":
            raise InvalidInputError(f"{path}: image_order {data['image_order']!r} is not supported (only 'raster').")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise InvalidInputError(f"{path} has format_version {data['format_version']}; this engine reads "
                                    f"up to {FORMAT_VERSION}. Update the engine.")
        text_format = str(data.get("text_format", "{prompt}"))
        if "{prompt}" not in text_format:
            raise InvalidInputError(f"{path}: text_format must contain '{{prompt}}', got {text_format!r}.")
        return cls(image_size=tuple(int(v) for v in data["image_size"]), grid=tuple(int(v) for v in data["grid"]),
                   codebook_size=int(data["codebook_size"]), image_token_offset=int(data["image_token_offset"]),
                   special_tokens={k: int(v) for k, v in data["special_tokens"].items()},
                   text_format=text_format, text_slot=int(data.get("text_slot", 0)),
                   default_sampling=SamplingSettings(**data.get("default_sampling", {})).validate(),
                   info=dict(data.get("info", {})))

    def write(self, folder: str | Path) -> Path:
        data = {"family": self.family, "format_version": FORMAT_VERSION, "image_size": list(self.image_size),
                "grid": list(self.grid), "image_order": self.image_order, "codebook_size": self.codebook_size,
                "image_token_offset": self.image_token_offset, "special_tokens": dict(self.special_tokens),
                "text_format": self.text_format, "text_slot": self.text_slot, "default_sampling": asdict(self.default_sampling),
                "info": self.info}
        path = Path(folder) / MANIFEST
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path


# --------------------------------------------------------------------------------------------------
# Building a folder (used by the tiny builder and the toy trainer)
# --------------------------------------------------------------------------------------------------
def build_word_tokenizer(texts: Iterable[str]):
    """A word-level tokenizer (lower-cased words and punctuation) over the words of ``texts``, with the
    family's special tokens first (ids 0..5: pad, bos, eos, boi, eoi, unk). Unknown words become ``<unk>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=SPECIAL_TOKENS["pad"], bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"], unk_token=SPECIAL_TOKENS["unk"],
        extra_special_tokens={"boi_token": SPECIAL_TOKENS["boi"], "eoi_token": SPECIAL_TOKENS["eoi"]})


def special_ids(tokenizer) -> dict[str, int]:
    """The LM ids of bos, eos, pad, boi, eoi in a tokenizer made by ``build_word_tokenizer``."""
    ids = {name: tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[name]) for name in ("bos", "eos", "pad", "boi", "eoi")}
    missing = [n for n, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise InvalidInputError(f"the tokenizer lacks the special token(s) {missing}.")
    return {k: int(v) for k, v in ids.items()}


def save_unified(folder: str | Path, lm: Any, tokenizer: Any, vq: Any, manifest: Manifest) -> Path:
    """Write a unified ARM folder: ``lm/`` (model + tokenizer), ``vq/`` and the manifest (safetensors only)."""
    folder = Path(folder)
    (folder / "lm").mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(folder / "lm", safe_serialization=True)
    tokenizer.save_pretrained(folder / "lm")
    vq.save_pretrained(folder / "vq", safe_serialization=True)
    manifest.write(folder)
    return folder


# --------------------------------------------------------------------------------------------------
# The sequence layout (shared by the backend and the trainer, so the two cannot drift apart)
# --------------------------------------------------------------------------------------------------
def prompt_ids(tokenizer: Any, manifest: Manifest, prompt: str) -> list[int]:
    """LM ids of one chunk's text: ``text_format`` filled with ``prompt``, tokenised without special tokens,
    left-padded to ``text_slot``. Raises on control tokens inside the prompt and on prompts too long for the slot."""
    ids = list(tokenizer(manifest.text_format.format(prompt=prompt), add_special_tokens=False).input_ids)
    structural = {manifest.special_tokens[k]: k for k in STRUCTURAL}
    found = sorted({structural[i] for i in ids if i in structural})
    if found:
        raise InvalidInputError(
            f"the prompt {quote_head(prompt)} contains control token(s) ({', '.join(found)}); remove them "
            f"({', '.join(SPECIAL_TOKENS[k] for k in found)}) from the prompt text.")
    slot = manifest.text_slot
    if slot:
        if len(ids) > slot:
            raise InvalidInputError(
                f"the prompt {quote_head(prompt)} is {len(ids)} tokens long; this ARM reads at most {slot} per frame. "
                "Shorten it.")
        ids = [manifest.special_tokens["pad"]] * (slot - len(ids)) + ids
    return ids


def interleave(manifest: Manifest, texts: Sequence[Sequence[int]], images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``BOS text_1 [BOI codes EOI]* text_2 [BOI codes EOI]* ...`` as LM ids (1-D long), codes offset into
    the vocabulary. ``images[i]`` is ``[n_images, T]`` codes of chunk i."""
    ids, offset = manifest.special_tokens, manifest.image_token_offset
    parts: list[torch.Tensor] = [torch.tensor([ids["bos"]])]
    for text, codes in zip(texts, images):
        parts.append(torch.tensor(list(text), dtype=torch.long))
        for image in codes.to("cpu", torch.long):
            parts += [torch.tensor([ids["boi"]]), image + offset, torch.tensor([ids["eoi"]])]
    return torch.cat(parts).to(torch.long)


def unconditional(cond: torch.Tensor, ids: dict[str, int], offset: int) -> torch.Tensor:
    """The CFG row of a sequence (``decoding.unconditional_row`` with this family's ids): every text id replaced
    by PAD; BOS/EOS/BOI/EOI and image codes kept. Training pads dropped prompts the same way, so the two agree."""
    return unconditional_row(cond, keep_ids=[ids[k] for k in STRUCTURAL], code_offset=offset, pad=ids["pad"])


def _check_weights_fit(folder: Path, trust_remote_code: bool) -> None:
    """The weights in lm/ and vq/ have the shapes their config.json files describe (models built on the meta
    device, file headers only), so weights of another size are named tensor by tensor before anything loads."""
    from diffusers import VQModel
    from transformers import AutoConfig, AutoModelForCausalLM

    lm_shapes = weight_shapes(folder / "lm", "model")
    vq_shapes = weight_shapes(folder / "vq", "diffusion_pytorch_model")
    config = AutoConfig.from_pretrained(folder / "lm", local_files_only=True, trust_remote_code=trust_remote_code)
    lm = on_meta(lambda: AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code))
    check_state_matches(lm, lm_shapes, f"The weights in {weights_name(folder / 'lm', 'model')}", strict_keys=False)
    vq = on_meta(lambda: VQModel.from_config(VQModel.load_config(folder / "vq")))
    fix_keys = getattr(vq, "_fix_state_dict_keys_on_load", None)   # diffusers' renaming of old attention names
    if callable(fix_keys):
        fix_keys(vq_shapes)
    check_state_matches(vq, vq_shapes, f"The weights in {weights_name(folder / 'vq', 'diffusion_pytorch_model')}")


# --------------------------------------------------------------------------------------------------
class UnifiedARM(CachedDecoder):
    """The ARM protocol for a unified-vocabulary causal LM plus a VQModel. Build with ``from_pretrained``.

    ``default_sampling`` is the manifest's sampling (what the model is meant to be sampled with).
    ``previews=True`` decodes the rows sampled so far at each quarter of an image for the progress callback.
    """

    family = "unified"

    def __init__(self, lm: Any, tokenizer: Any, vq: Any, manifest: Manifest, *, previews: bool = False) -> None:
        self.lm = lm.eval()
        self.vq = vq.eval()
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.previews = previews
        self.default_sampling = manifest.default_sampling
        self.image_size: tuple[int, int] = tuple(manifest.image_size)
        self.grid: tuple[int, int] = tuple(manifest.grid)
        self.tokens_per_image = self.grid[0] * self.grid[1]
        self.codebook_size = manifest.codebook_size
        self.offset = self.code_key_offset = manifest.image_token_offset
        self._ids = dict(manifest.special_tokens)
        self._text_ids: dict[str, list[int]] = {}
        self._keeper = CacheKeeper()
        self._check_consistency()
        self.context_window = getattr(lm.config, "max_position_embeddings", None)
        self.device = next(lm.parameters()).device
        self.dtype = next(lm.parameters()).dtype
        self.vq_dtype = keep_vq_float32(vq)

    def _check_consistency(self) -> None:
        """The manifest, the LM, the tokenizer and the VQ must describe the same layout."""
        vq, m = self.vq.config, self.manifest
        down = 2 ** (len(vq.block_out_channels) - 1)
        problems = []
        if int(vq.num_vq_embeddings) != m.codebook_size:
            problems.append(f"vq num_vq_embeddings={vq.num_vq_embeddings} but the manifest's codebook_size="
                            f"{m.codebook_size}")
        if tuple(g * down for g in m.grid) != tuple(m.image_size):
            problems.append(f"grid {m.grid} x the VQ's {down}x downsampling != image_size {m.image_size}")
        vocab = int(self.lm.config.vocab_size)
        if m.image_token_offset + m.codebook_size > vocab:
            problems.append(f"image_token_offset {m.image_token_offset} + codebook_size {m.codebook_size} "
                            f"exceeds the LM vocabulary ({vocab})")
        if len(self.tokenizer) > m.image_token_offset:
            problems.append(f"the tokenizer has {len(self.tokenizer)} tokens, more than the text vocabulary "
                            f"(image_token_offset {m.image_token_offset})")
        for name, value in m.special_tokens.items():
            if not 0 <= value < m.image_token_offset:
                problems.append(f"special token {name}={value} is not a text id")
        if problems:
            raise InvalidInputError("inconsistent unified ARM folder: " + "; ".join(problems) + ".")

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: torch.device | str = "cpu",
                        dtype: Optional[torch.dtype] = None, trust_remote_code: bool = False,
                        previews: bool = False) -> "UnifiedARM":
        """Load ``folder`` (manifest + lm/ + vq/, safetensors, local files only).

        ``dtype`` is the LM's: ``None`` is ``devices.pick_dtype`` (float32 on the CPU, bfloat16 or float16 on
        accelerators). The VQ stays float32 so re-encoding picks the codes its quantizer was trained to pick.
        """
        from diffusers import VQModel
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        folder = Path(folder)
        manifest = Manifest.read(folder)
        for name in ("lm", "vq"):
            if not (folder / name / "config.json").is_file():
                raise MissingModelFilesError(f"{folder} lacks {name}/config.json (the {name.upper()} model).")
        if not (folder / "lm" / "tokenizer.json").is_file():
            raise MissingModelFilesError(f"{folder} lacks lm/tokenizer.json (the text tokenizer).")
        check_remote_code(folder / "lm", trust_remote_code, CODE_FOLDERS["lm"])
        _check_weights_fit(folder, trust_remote_code)
        device = torch.device(device)
        dtype = pick_dtype(device) if dtype is None else dtype
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "lm", local_files_only=True)
        # Mismatched shapes were refused above by name; transformers' own report (after its renaming) has the rest.
        lm, info = AutoModelForCausalLM.from_pretrained(
            folder / "lm", dtype=dtype, device_map={"": device}, local_files_only=True, use_safetensors=True,
            trust_remote_code=trust_remote_code, output_loading_info=True, ignore_mismatched_sizes=True)
        check_loading_info(info, f"The weights in {weights_name(folder / 'lm', 'model')}")
        vq = VQModel.from_pretrained(folder / "vq", local_files_only=True, use_safetensors=True).to(device)
        return cls(lm, tokenizer, vq, manifest, previews=previews)

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight: the language model and the VQ tokenizer."""
        return {"lm": self.lm, "vq": self.vq}

    def _lm_config(self) -> Any:
        return self.lm.config

    # ---------------------------------------------------------------- the sequence
    def text_ids(self, prompt: str) -> list[int]:
        """LM ids of one chunk's text (see ``prompt_ids``), memoised per prompt."""
        ids = self._text_ids.get(prompt)
        if ids is None:
            ids = self._text_ids[prompt] = prompt_ids(self.tokenizer, self.manifest, prompt)
        return ids

    def sequence_key(self, context: ARMContext, prompt: str, *, cfg: bool) -> torch.Tensor:
        """The LM ids ``[rows, L]`` of the whole conditioning sequence (rows: cond, plus uncond under CFG).

        The last position is the BOI after which the first code of the new image is sampled.
        """
        for index, chunk in enumerate(context.chunks):
            self.check_chunk_tokens(index, chunk.tokens)
        story = interleave(self.manifest, [self.text_ids(c.prompt) for c in context.chunks],
                           [c.tokens for c in context.chunks])
        cond = torch.cat([story, torch.tensor(self.text_ids(prompt) + [self._ids["boi"]], dtype=torch.long)])
        if not cfg:
            return cond[None]
        return torch.stack([cond, unconditional(cond, self._ids, self.offset)])

    def _forward(self, ids: torch.Tensor, cache: Any, **batch) -> torch.Tensor:
        """Run the LM on new positions; the codebook slice of the last position's logits ``[rows, K]``."""
        out = self.lm(input_ids=ids.to(self.device), cache=cache, use_cache=True, logits_to_keep=1, **batch)
        return out.logits[:, -1, self.offset:self.offset + self.codebook_size]

    # ---------------------------------------------------------------- CachedDecoder's hooks
    def _prefill_input(self, segment: torch.Tensor) -> torch.Tensor:
        return segment

    def _code_input(self, code: torch.Tensor, rows: int) -> torch.Tensor:
        return (code + self.offset).expand(rows)[:, None]

    def _preview_geometry(self) -> tuple[int, int]:
        return self.grid[1], self.image_size[0] // self.grid[0]

    # ---------------------------------------------------------------- pixels <-> codes
    def codes_to_latent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, T]`` -> quantised latent ``[N, D, gh, gw]`` (codebook lookup, raster order)."""
        n = tokens.shape[0]
        dim = self.vq.quantize.vq_embed_dim
        return self.vq.quantize.get_codebook_entry(tokens.reshape(-1).to(self.device, torch.long),
                                                   (n, self.grid[0], self.grid[1], dim))

    def latent_to_codes(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[N, D, gh, gw]`` -> codes ``[N, T]`` by the VQModel's own quantizer (nearest entry)."""
        _, _, (_, _, indices) = self.vq.quantize(latent)
        return indices.reshape(latent.shape[0], -1)

    def _decode_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        quant = self.codes_to_latent(tokens)
        spatial = quant if self.vq.config.norm_type == "spatial" else None
        return self.vq.decoder(self.vq.post_quant_conv(quant), spatial)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.latent_to_codes(self.vq.quant_conv(self.vq.encoder(pixels)))
