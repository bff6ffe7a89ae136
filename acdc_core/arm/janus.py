"""Janus / Janus-Pro (DeepSeek) as an ACDC ARM, through transformers' ``JanusForConditionalGeneration``.

Janus generates an image as ``tokens_per_image`` VQ codes (24x24 = 576 at 384 px) in raster order, one
code per language-model step, read out by a separate ``generation_head`` and fed back through the
generation embeddings + aligner. transformers' ``generate(generation_mode="image")`` only takes a text
prompt, so the story (Eq. 1: ``v_i ~ p(v_i | v_1..v_{i-1}, u_1..u_i)``) is decoded here by our own loop.

The sequence the language model sees is the DeepSeek chat format Janus was trained with, one
user/assistant turn per story chunk::

    BOS
    "<|User|>: {u_1}\\n\\n<|Assistant|>:" BOI v_1 EOI EOS        <- one turn per earlier chunk
    ...
    "<|User|>: {u_i}\\n\\n<|Assistant|>:" BOI  -> sample v_i     <- the current prompt

For one turn this is exactly what ``JanusProcessor`` builds for image generation
(``apply_chat_template(add_generation_prompt=True)`` + ``generation_mode="image"``). An earlier turn is the
very sequence its image was sampled after, followed by its tokens, so the cache left behind by sampling a
frame is a prefix of the next frame's sequence. Text is embedded by the language model's token
embeddings; image codes by ``generation_embeddings`` + ``generation_aligner``
(``prepare_embeddings_for_image_generation``), the same path the codes took when Janus generated them.

Classifier-free guidance batches two rows: the conditional sequence, and the same sequence with every
text token padded except the structural ones (BOS, BOI, EOI, EOS); image codes are kept. For a story of
one frame this is exactly Janus' own unconditional row (everything but BOS and BOI padded).

The key/value cache lives in the context's ``CacheMemo`` together with the exact ``[rows, L]`` sequence it
covers: text ids as they are, image codes offset by the text vocabulary size (the two embedding tables
differ, so the key must tell them apart). Sampling keeps the longest common prefix of that key and the
needed sequence, crops the cache there and prefills only the rest (after swapping chunk i: chunk i and
what follows). That machinery is shared by every family and lives in ``cache.py``; the decoding loop
itself in ``decoding.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..devices import pick_dtype
from ..errors import InvalidInputError, MissingModelFilesError, quote_head
from ..weights import (check_loading_info, check_remote_code, check_state_matches, load_part_float32, on_meta,
                       weight_shapes, weights_name)
from .base import ARMContext
from .cache import CacheKeeper
from .decoding import CachedDecoder, keep_vq_float32, unconditional_row

USER_TURN = "<|User|>: {prompt}\n\n<|Assistant|>:"

# Files a Janus folder needs besides config.json and the *.safetensors weights: each group needs one of.
REQUIRED_FILES: tuple[tuple[str, ...], ...] = (("tokenizer_config.json",), ("tokenizer.json", "tokenizer.model"))
CODE_FOLDERS: dict[str, str] = {".": "Janus ARM"}   # its config.json is read by transformers (auto_map)


# --------------------------------------------------------------------------------------------------
class JanusARM(CachedDecoder):
    """The ARM protocol for Janus / Janus-Pro (1B, 7B) in transformers format. Build with ``from_pretrained``.

    ``previews=True`` decodes the rows sampled so far at each quarter of an image and hands that to the
    progress callback (one VQ decode each, four per image); otherwise ``preview`` is ``None``.
    """

    family = "janus"

    def __init__(self, model: Any, tokenizer: Any, *, previews: bool = False) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.previews = previews
        self._turn_ids: dict[str, list[int]] = {}
        self._keeper = CacheKeeper()  # reuses and moves the key/value caches this backend leaves in memos

        config = model.config
        vq = config.vq_config
        self.text_vocab_size = int(config.text_config.vocab_size)
        self.code_key_offset = self.text_vocab_size  # codes sit after the text ids in the cache key
        self.codebook_size = int(vq.num_embeddings)
        self.grid = int(vq.num_patches)
        self.downsample = 2 ** (len(vq.channel_multiplier) - 1)
        side = self.grid * self.downsample
        self.image_size: tuple[int, int] = (side, side)
        self.tokens_per_image = self.grid * self.grid
        expected = getattr(config.vision_config, "num_image_tokens", self.tokens_per_image)
        if expected != self.tokens_per_image:
            raise InvalidInputError(
                f"inconsistent Janus config: vision_config.num_image_tokens={expected} but the VQ grid is "
                f"{self.grid}x{self.grid}={self.tokens_per_image} (vq num_patches={self.grid}).")
        self._ids = self._special_ids()
        self.context_window = getattr(config.text_config, "max_position_embeddings", None)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vq_dtype = keep_vq_float32(model.model.vqmodel)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: torch.device | str = "cpu",
                        dtype: Optional[torch.dtype] = None, trust_remote_code: bool = False,
                        previews: bool = False) -> "JanusARM":
        """Load a transformers-format Janus folder (safetensors only, local files only).

        ``dtype=None``: ``devices.pick_dtype`` (float32 on the CPU, bfloat16 or float16 on accelerators).
        """
        from transformers import AutoTokenizer, JanusConfig, JanusForConditionalGeneration

        folder = Path(folder)
        check_remote_code(folder, trust_remote_code, CODE_FOLDERS["."])
        # The weights' shapes against the model config.json describes (built on the meta device, headers only).
        where = f"The weights in {weights_name(folder, 'model')}"
        config = JanusConfig.from_pretrained(folder, local_files_only=True)
        check_state_matches(on_meta(lambda: JanusForConditionalGeneration(config)), weight_shapes(folder, "model"),
                            where, strict_keys=False)
        device = torch.device(device)
        dtype = pick_dtype(device) if dtype is None else dtype
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
        # Key names can be renamed while loading, so missing / unexpected tensors come from transformers' report.
        model, info = JanusForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, device_map={"": device}, local_files_only=True, use_safetensors=True,
            trust_remote_code=trust_remote_code, output_loading_info=True, ignore_mismatched_sizes=True)
        check_loading_info(info, where)
        if dtype != torch.float32:    # the VQ tokenizer stays float32 (decoding.keep_vq_float32), read as stored
            load_part_float32(model.model.vqmodel, folder, "model", ("model.vqmodel.", "vqmodel."), where)
        return cls(model, tokenizer, previews=previews)

    def _special_ids(self) -> dict[str, int]:
        """bos/eos/pad/boi/eoi ids from the tokenizer, with the generation config as fallback.

        (A generation config saved by some transformers versions lost ``generation_kwargs`` with the
        ``boi_token_id``, so that is not relied on.)
        """
        tok, gen = self.tokenizer, getattr(self.model, "generation_config", None)

        def token_id(attr: str, literal: str) -> Optional[int]:
            name = getattr(tok, attr, None) or literal
            value = tok.convert_tokens_to_ids(name)
            if value is None or value == tok.unk_token_id:
                return None
            return int(value)

        ids = {
            "bos": tok.bos_token_id if tok.bos_token_id is not None else getattr(gen, "bos_token_id", None),
            "eos": tok.eos_token_id if tok.eos_token_id is not None else getattr(gen, "eos_token_id", None),
            # Janus' own CFG pads with the generation config's pad token; the tokenizer's is the fallback.
            "pad": getattr(gen, "pad_token_id", None) if getattr(gen, "pad_token_id", None) is not None
            else tok.pad_token_id,
            "boi": token_id("boi_token", "<begin_of_image>"),
            "eoi": token_id("eoi_token", "<end_of_image>"),
        }
        missing = [name for name, value in ids.items() if value is None]
        if missing:
            raise MissingModelFilesError(
                f"the Janus tokenizer lacks the special token(s) {missing} (bos, eos, pad, <begin_of_image>, "
                "<end_of_image> are all needed); is this a transformers-format Janus checkpoint?")
        return {k: int(v if not isinstance(v, (list, tuple)) else v[0]) for k, v in ids.items()}

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight: the whole ``JanusForConditionalGeneration`` (language model, heads and VQ)."""
        return {"model": self.model}

    def _lm_config(self) -> Any:
        return self.model.model.language_model.config

    # ---------------------------------------------------------------- the sequence
    def _turn(self, prompt: str) -> list[int]:
        """Token ids of one user turn, ``"<|User|>: {prompt}\\n\\n<|Assistant|>:"``."""
        ids = self._turn_ids.get(prompt)
        if ids is None:
            ids = list(self.tokenizer(USER_TURN.format(prompt=prompt), add_special_tokens=False).input_ids)
            structural = {v: k for k, v in self._ids.items()}
            found = sorted({structural[i] for i in ids if i in structural})
            if found:
                raise InvalidInputError(
                    f"the prompt {quote_head(prompt)} contains Janus control token(s) ({', '.join(found)}); "
                    "remove them (e.g. <begin_of_image>, <end_of_image>) from the prompt text.")
            self._turn_ids[prompt] = ids
        return ids

    def sequence_key(self, context: ARMContext, prompt: str, *, cfg: bool) -> torch.Tensor:
        """The ``[rows, L]`` key of the whole conditioning sequence (rows: cond, plus uncond under CFG).

        Text ids are as the tokenizer gives them; image codes are offset by the text vocabulary size.
        The last position is the BOI after which the first code of the new image is sampled.
        """
        ids = self._ids
        parts: list[torch.Tensor] = [torch.tensor([ids["bos"]])]
        for index, chunk in enumerate(context.chunks):
            self.check_chunk_tokens(index, chunk.tokens)
            parts.append(torch.tensor(self._turn(chunk.prompt)))
            for image in chunk.tokens.to("cpu", torch.long):
                parts += [torch.tensor([ids["boi"]]), image + self.text_vocab_size, torch.tensor([ids["eoi"]])]
            parts.append(torch.tensor([ids["eos"]]))
        parts += [torch.tensor(self._turn(prompt)), torch.tensor([ids["boi"]])]
        cond = torch.cat(parts).to(torch.long)
        if not cfg:
            return cond[None]
        uncond = unconditional_row(cond, keep_ids=[ids["bos"], ids["boi"], ids["eoi"], ids["eos"]],
                                   code_offset=self.text_vocab_size, pad=ids["pad"])
        return torch.stack([cond, uncond])

    def _embed(self, key: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[rows, l, hidden]`` of a key segment: text via the LM table, codes via the gen path."""
        key = key.to(self.device)
        is_image = key >= self.text_vocab_size
        embeds = self.model.get_input_embeddings()(torch.where(is_image, torch.zeros_like(key), key))
        if bool(is_image.any()):
            codes = key[is_image] - self.text_vocab_size
            embeds[is_image] = self.model.prepare_embeddings_for_image_generation(codes).to(embeds.dtype)
        return embeds

    def _forward(self, embeds: torch.Tensor, cache: Any, **batch) -> torch.Tensor:
        """Run the language model on new positions and return the image-code logits of the last one."""
        out = self.model.model.language_model(inputs_embeds=embeds, cache=cache, use_cache=True, **batch)
        return self.model.model.generation_head(out.last_hidden_state[:, -1, :])

    # ---------------------------------------------------------------- CachedDecoder's hooks
    def _prefill_input(self, segment: torch.Tensor) -> torch.Tensor:
        return self._embed(segment)

    def _code_input(self, code: torch.Tensor, rows: int) -> torch.Tensor:
        return self.model.prepare_embeddings_for_image_generation(code.expand(rows))[:, None].to(self.dtype)

    def _preview_geometry(self) -> tuple[int, int]:
        return self.grid, self.downsample

    def _decode_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.model.vqmodel.decode(tokens)

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """VQ latent ``[N, D, h, w]`` -> codes ``[N, h*w]`` (raster order) by the L2-normalised lookup.

        Janus' tokenizer (like its decoder, ``get_codebook_entry``) compares unit vectors:
        ``argmax(normalize(z) @ normalize(codebook).T)``. transformers' ``JanusVQVAEVectorQuantizer.forward``
        uses raw Euclidean distances instead, which picks different codes for the same latent.
        """
        n, d = latent.shape[:2]
        z = F.normalize(latent.float().permute(0, 2, 3, 1).reshape(n, -1, d), dim=-1)
        codebook = F.normalize(self.model.model.vqmodel.quantize.embedding.weight.float(), dim=-1)
        return (z @ codebook.T).argmax(dim=-1)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        vq = self.model.model.vqmodel
        return self.quantize(vq.quant_conv(vq.encoder(pixels)))
