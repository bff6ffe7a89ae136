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

Video (``video_capable``; frames as chunks, ``base.py``). A chunk of several images, or a chunk followed by chunks
that continue it, is one video: its text is ``video_text_format`` (default ``text_format``) and its frames follow
one another with no text between. Two layouts, by the manifest's ``frame_end``:

- none (the default, the toy video ARM): every frame is ``image_start codes image_end`` (``BOI .. EOI``), so a
  video is ``text(u) BOI c.. EOI BOI c.. EOI ...``;
- ``frame_end`` = a code-space id past the codebook (LWM: 8192, LM id ``offset + 8192``): a video is
  ``text(u) image_start c.. EOF c.. EOF ...``, ``image_end`` only where a new prompt follows the video. LWM's own
  prompt ends in ``<vision>`` (so its ``image_start`` is empty), frame 1 is written under its image prompt
  ("Generate an image of") and the video under ``video_text_format`` ("Generate a video of"), as LWM's
  ``vision_generation.py`` does; every frame's 257th position is the forced end-of-frame.

The unconditional row (``unconditional`` in the manifest): ``{"mode": "pad"}`` (the default) is the PAD row above;
``{"mode": "text", "text": T}`` or ``{"mode": "ids", "ids": [..]}`` is BOS, then T's ids, then the story's image
content with every prompt's text left out — LWM's ``<s><vision>`` followed by the frames so far. That row is shorter
than the conditional one, so it runs as a sequence of its own (``decoding.UnconditionalBranch``).

Re-encoding (``encode``) uses the VQModel's own quantizer (``vq.quantize``: nearest codebook entry by
Euclidean distance), the rule it was trained with; ``decode`` looks codes up in the same codebook and runs
``post_quant_conv`` + the decoder. Pixels cross at [0, 1]; the VQ works in [-1, 1].
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from ..devices import pick_dtype
from ..errors import InvalidInputError, MissingModelFilesError, quote_head
from ..weights import check_loading_info, check_remote_code, check_state_matches, on_meta, weight_shapes, weights_name
from .base import ARMContext, CacheMemo, SamplingSettings
from .cache import CacheKeeper
from .decoding import CachedDecoder, UnconditionalBranch, keep_vq_float32, unconditional_row
from .sampling import next_tokens

MANIFEST = "acdc_arm.json"
FORMAT_VERSION = 2   # 2: the video layout (video_text_format, image_start/end, frame_end, unconditional, video_sampling)
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
    # The video layout (module docstring); None: the defaults (text_format, BOI, EOI, no frame_end, PAD row).
    video_text_format: Optional[str] = None
    image_start: Optional[tuple[int, ...]] = None
    image_end: Optional[tuple[int, ...]] = None
    frame_end: Optional[int] = None
    unconditional: dict[str, Any] = field(default_factory=lambda: {"mode": "pad"})
    video_sampling: Optional[tuple[SamplingSettings, SamplingSettings]] = None   # (frame 1, later frames)

    @property
    def starts(self) -> tuple[int, ...]:
        """The ids before a chunk's images (``image_start``; default BOI)."""
        return tuple(self.image_start) if self.image_start is not None else (self.special_tokens["boi"],)

    @property
    def ends(self) -> tuple[int, ...]:
        """The ids after a chunk's images (``image_end``; default EOI)."""
        return tuple(self.image_end) if self.image_end is not None else (self.special_tokens["eoi"],)

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
        specials = ["bos", "eos", "pad"] + [k for k, given in (("boi", "image_start"), ("eoi", "image_end"))
                                            if given not in data]
        missing += [f"special_tokens.{k}" for k in specials if k not in data.get("special_tokens", {})]
        if missing:
            raise InvalidInputError(f"{path} lacks {', '.join(missing)}.")
        if data.get("image_order", "raster") != "raster":
            raise InvalidInputError(f"{path}: image_order {data['image_order']!r} is not supported (only 'raster').")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise InvalidInputError(f"{path} has format_version {data['format_version']}; this engine reads "
                                    f"up to {FORMAT_VERSION}. Update the engine.")
        formats = {k: str(data[k]) for k in ("text_format", "video_text_format") if data.get(k) is not None}
        for name, value in formats.items():
            if "{prompt}" not in value:
                raise InvalidInputError(f"{path}: {name} must contain '{{prompt}}', got {value!r}.")
        try:
            video_sampling = data.get("video_sampling")
            if video_sampling is not None:
                video_sampling = tuple(SamplingSettings(**video_sampling[k]).validate() for k in ("first", "later"))
            sampling = SamplingSettings(**data.get("default_sampling", {})).validate()
        except (TypeError, KeyError) as err:
            raise InvalidInputError(f"{path}: default_sampling / video_sampling ('first', 'later') hold sampling "
                                    f"settings (guidance_scale, temperature, top_k, top_p): {err}") from None
        unconditional = dict(data.get("unconditional", {"mode": "pad"}))
        if unconditional.get("mode") not in ("pad", "text", "ids") or \
                (unconditional["mode"] != "pad" and unconditional["mode"] not in unconditional):
            raise InvalidInputError(f"{path}: unconditional must be {{'mode': 'pad'}}, {{'mode': 'text', 'text': ..}} "
                                    f"or {{'mode': 'ids', 'ids': [..]}}; got {unconditional!r}.")

        def ids_or_none(name: str) -> Optional[tuple[int, ...]]:
            return tuple(int(v) for v in data[name]) if data.get(name) is not None else None

        return cls(image_size=tuple(int(v) for v in data["image_size"]), grid=tuple(int(v) for v in data["grid"]),
                   codebook_size=int(data["codebook_size"]), image_token_offset=int(data["image_token_offset"]),
                   special_tokens={k: int(v) for k, v in data["special_tokens"].items()},
                   text_format=formats.get("text_format", "{prompt}"), text_slot=int(data.get("text_slot", 0)),
                   default_sampling=sampling, info=dict(data.get("info", {})),
                   video_text_format=formats.get("video_text_format"), image_start=ids_or_none("image_start"),
                   image_end=ids_or_none("image_end"),
                   frame_end=int(data["frame_end"]) if data.get("frame_end") is not None else None,
                   unconditional=unconditional, video_sampling=video_sampling)

    def write(self, folder: str | Path) -> Path:
        data = {"family": self.family, "format_version": FORMAT_VERSION, "image_size": list(self.image_size),
                "grid": list(self.grid), "image_order": self.image_order, "codebook_size": self.codebook_size,
                "image_token_offset": self.image_token_offset, "special_tokens": dict(self.special_tokens),
                "text_format": self.text_format, "text_slot": self.text_slot, "default_sampling": asdict(self.default_sampling),
                "info": self.info}
        video = {"video_text_format": self.video_text_format, "image_start": self.image_start,
                 "image_end": self.image_end, "frame_end": self.frame_end}
        data.update({k: list(v) if isinstance(v, tuple) else v for k, v in video.items() if v is not None})
        if self.unconditional != {"mode": "pad"}:
            data["unconditional"] = dict(self.unconditional)
        if self.video_sampling is not None:
            data["video_sampling"] = {"first": asdict(self.video_sampling[0]), "later": asdict(self.video_sampling[1])}
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
def prompt_ids(tokenizer: Any, manifest: Manifest, prompt: str, *, video: bool = False) -> list[int]:
    """LM ids of one chunk's text: ``text_format`` (``video_text_format`` for a video, when the manifest has one)
    filled with ``prompt``, tokenised without special tokens, left-padded to ``text_slot``. Raises on control
    tokens inside the prompt and on prompts too long for the slot."""
    template = manifest.video_text_format if video and manifest.video_text_format else manifest.text_format
    ids = list(tokenizer(template.format(prompt=prompt), add_special_tokens=False).input_ids)
    structural = {manifest.special_tokens[k]: k for k in STRUCTURAL if k in manifest.special_tokens}
    own = tokenizer(prompt, add_special_tokens=False).input_ids      # the prompt's own ids, not the template's
    found = sorted({structural[i] for i in own if i in structural})
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


def interleave(manifest: Manifest, texts: Sequence[Sequence[int]], images: Sequence[torch.Tensor],
               continues: Optional[Sequence[bool]] = None, *,
               then: Optional[tuple[Sequence[int], bool]] = None) -> torch.Tensor:
    """The story's LM ids (1-D long): BOS, then each chunk's text (none for a chunk that ``continues`` a video) and
    its images in the manifest's layout (module docstring; by default ``text BOI codes EOI`` per image), codes offset
    into the vocabulary. ``images[i]`` is ``[n_images, T]`` codes of chunk i. ``then = (text, continues)`` appends the
    opening of the chunk to be sampled next, up to its first code."""
    offset, frame_end = manifest.image_token_offset, manifest.frame_end
    continues = list(continues) if continues is not None else [False] * len(texts)
    parts: list[list[int] | torch.Tensor] = [[manifest.special_tokens["bos"]]]
    open_video = False       # a frame_end video is open: its image_end comes before the next prompt's text

    def opening(text: Sequence[int], cont: bool) -> None:
        if not cont:
            parts.append(list(manifest.ends) if open_video else [])
            parts.append(list(text))
        if frame_end is None or not cont:
            parts.append(list(manifest.starts))

    for text, codes, cont in zip(texts, images, continues):
        opening(text, cont)
        for k, image in enumerate(codes.to("cpu", torch.long)):
            if frame_end is None:
                parts += ([] if k == 0 else [list(manifest.starts)]) + [image + offset, list(manifest.ends)]
            else:
                parts += [image + offset, [offset + frame_end]]
        open_video = frame_end is not None
    if then is not None:
        opening(*then)
    return torch.cat([torch.as_tensor(p, dtype=torch.long) for p in parts])


def unconditional(cond: torch.Tensor, ids: dict[str, int], offset: int) -> torch.Tensor:
    """The CFG row of a sequence (``decoding.unconditional_row`` with this family's ids): every text id replaced
    by PAD; BOS/EOS/BOI/EOI and image codes kept. Training pads dropped prompts the same way, so the two agree."""
    return unconditional_row(cond, keep_ids=[ids[k] for k in STRUCTURAL if k in ids], code_offset=offset,
                             pad=ids["pad"])


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
    video_capable = True

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
        self._text_ids: dict[tuple[str, bool], list[int]] = {}
        self._keeper = CacheKeeper()
        self._uncond_memo = CacheMemo()      # the separate unconditional sequence's cache (``unconditional`` text/ids)
        self.default_video_sampling = manifest.video_sampling
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
        for name in ("image_start", "image_end"):
            if any(not 0 <= v < m.image_token_offset for v in getattr(m, name) or ()):
                problems.append(f"{name} {list(getattr(m, name))} holds ids that are not text ids")
        if m.frame_end is not None and not m.codebook_size <= m.frame_end < vocab - m.image_token_offset:
            problems.append(f"frame_end {m.frame_end} must be a vision id past the codebook ({m.codebook_size}) "
                            f"and inside the LM vocabulary")
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
    def text_ids(self, prompt: str, video: bool = False) -> list[int]:
        """LM ids of one chunk's text (see ``prompt_ids``), memoised per prompt."""
        ids = self._text_ids.get((prompt, video))
        if ids is None:
            ids = self._text_ids[(prompt, video)] = prompt_ids(self.tokenizer, self.manifest, prompt, video=video)
        return ids

    def _layout(self, context: ARMContext, prompt: str, images: int, continues: bool,
                text: "Callable[[str, bool], list[int]]") -> torch.Tensor:
        """The sequence up to the new chunk's first code, with ``text(prompt, video)`` as each chunk's text."""
        chunks = context.chunks
        continues = continues and bool(chunks)          # a window that dropped every frame starts the video afresh
        for index, chunk in enumerate(chunks):
            self.check_chunk_tokens(index, chunk.tokens)
        # A chunk that heads a video (several frames in all, the new chunk's counted) has the video's text.
        flags = [c.continues and i > 0 for i, c in enumerate(chunks)]
        frames: list[int] = []                          # the frames of each video, in order
        for chunk, cont in zip(chunks, flags):
            if cont:
                frames[-1] += chunk.tokens.shape[0]
            else:
                frames.append(chunk.tokens.shape[0])
        if continues:
            frames[-1] += images
        groups = iter(frames)
        texts = [text(c.prompt, next(groups) > 1) if not cont else [] for c, cont in zip(chunks, flags)]
        opening = ([] if continues else text(prompt, images > 1), continues)
        return interleave(self.manifest, texts, [c.tokens for c in chunks], flags, then=opening)

    def sequence_key(self, context: ARMContext, prompt: str, *, cfg: bool, images: int = 1,
                     continues: bool = False) -> torch.Tensor:
        """The LM ids ``[rows, L]`` of the whole conditioning sequence (rows: cond, plus the PAD row under CFG).

        The last position is the one after which the first code of the new image is sampled (BOI; for a continuing
        frame of a ``frame_end`` video, the last frame's end-of-frame)."""
        cond = self._layout(context, prompt, images, continues, self.text_ids)
        if not cfg:
            return cond[None]
        pad = self._ids["pad"]
        return torch.stack([cond, self._layout(context, prompt, images, continues,
                                               lambda p, video: [pad] * len(self.text_ids(p, video)))])

    def uncond_key(self, context: ARMContext, prompt: str, *, images: int = 1, continues: bool = False) -> torch.Tensor:
        """``[1, L]``: the unconditional sequence of a ``text``/``ids`` manifest (module docstring): BOS, its ids, the
        story's image content without any prompt's text."""
        spec = self.manifest.unconditional
        if spec["mode"] == "ids":
            ids = [int(v) for v in spec["ids"]]
        else:
            ids = list(self.tokenizer(spec["text"], add_special_tokens=False).input_ids)
        story = self._layout(context, prompt, images, continues, lambda p, video: [])
        return torch.cat([story[:1], torch.tensor(ids, dtype=torch.long), story[1:]])[None]

    def _uncond_branch(self, context: ARMContext, prompt: str, **video) -> Optional[UnconditionalBranch]:
        if self.manifest.unconditional["mode"] == "pad":
            return None
        return UnconditionalBranch(self, self._uncond_memo, self.uncond_key(context, prompt, **video))

    def _frame_separator(self) -> tuple[int, ...]:
        m = self.manifest
        return (self.offset + m.frame_end,) if m.frame_end is not None else m.ends + m.starts

    def _next(self, logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator,
              forced: Optional[int]) -> torch.Tensor:
        if forced is not None:                  # a frame separator: nothing to draw
            return torch.tensor([forced], device=logits.device)
        return next_tokens(logits, settings, generator)

    def _new_positions(self, images: int) -> int:
        m = self.manifest
        if m.frame_end is None:
            return images * (self.tokens_per_image + len(m.ends) + len(m.starts)) + 1     # + EOS
        return images * (self.tokens_per_image + 1) + len(m.ends) + 1

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
