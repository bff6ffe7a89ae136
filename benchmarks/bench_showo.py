"""Show-o at its real size on this machine: a random-weight folder at the published configs (Phi-1.5, 1.3B, with
Show-o's vocabulary; MAGVIT-v2 as showlab/magvitv2), written in the published layout and loaded through
``load_arm``; then one 256 px frame after a one-frame story, with the frame's context cached (``FramePrefix``:
the context runs once, each MaskGIT step runs the frame's block) against re-running the whole sequence every
step (upstream's way), measured in the same run. Writes results/showo.{md,json}.

    .venv/bin/python benchmarks/bench_showo.py [--steps 2] [--dtype float32] [--keep DIR]

``--steps`` MaskGIT steps are timed (a frame takes 18); the seconds per frame are the context's once plus 18
steps. Weights are random: the cost is a trained model's, the pictures are noise.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acdc_core.arm import ARMContext, load_arm  # noqa: E402
from acdc_core.arm.magvit import MagvitConfig, MagvitV2  # noqa: E402
from acdc_core.arm.showo import (PHI_1_5, PREFIX, TEXT_DIR, VQ_DIR, FramePrefix, ShowoVocab, additive,  # noqa: E402
                                 build_phi, guided, maskgit_fill, omni_attention_mask)
from acdc_core.arm.unified import build_word_tokenizer  # noqa: E402
from benchmarks._common import write_results  # noqa: E402


def write_folder(folder: Path) -> None:
    """A random-weight Show-o folder at the real configs, in the published layout (256 px, 256 tokens)."""
    from safetensors.torch import save_file
    from transformers import PhiConfig

    vocab = ShowoVocab()
    (folder / VQ_DIR).mkdir(parents=True)
    build_word_tokenizer(["a red cat in a desert by day", "she jumps"]).save_pretrained(folder / TEXT_DIR)
    torch.manual_seed(0)
    lm = build_phi(PhiConfig.from_dict({**PHI_1_5, "vocab_size": vocab.size}))
    save_file({PREFIX + k: v.contiguous() for k, v in lm.state_dict().items()}, folder / "pytorch_model.safetensors")
    del lm
    vq = MagvitV2(MagvitConfig())
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, folder / VQ_DIR / "pytorch_model.safetensors")
    (folder / VQ_DIR / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2"}))
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "Showo", "vocab_size": vocab.size, "llm_vocab_size": vocab.llm_vocab_size,
        "codebook_size": vocab.codebook_size, "num_vq_tokens": 256, "llm_model_path": "microsoft/phi-1_5",
        "w_clip_vit": False}))


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--keep", help="write the folder here and keep it (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="showo_real_"))
    try:
        started = time.perf_counter()
        if not (folder / "config.json").is_file():
            write_folder(folder)
        written = time.perf_counter() - started
        started = time.perf_counter()
        arm = load_arm(folder, dtype=getattr(torch, args.dtype))
        loaded = time.perf_counter() - started
        vocab, n = arm.vocab, arm.tokens_per_image
        story = ARMContext().append("a red cat in a desert by day", torch.randint(0, 8192, (1, n)))
        key = arm.sequence_key(story, "she jumps", cfg=True)                    # [2, 387 + 129]
        blank = torch.full((1, n), vocab.mask)

        def block(ids):
            return torch.cat([torch.full((2, 1), vocab.soi), ids.expand(2, n), torch.full((2, 1), vocab.eoi)], 1)

        # Cached: the context once, then each step runs the block.
        t0 = time.perf_counter()
        prefix = FramePrefix(arm.lm, key, vocab, n + 2)
        t_prefix = time.perf_counter() - t0
        t0 = time.perf_counter()
        maskgit_fill(lambda ids: guided(prefix.block_logits(block(ids))[:, 1:-1, vocab.image_offset:vocab.mask]
                                        .float(), 5.0), blank, vocab, steps=args.steps,
                     generator=torch.Generator().manual_seed(0))
        t_cached = (time.perf_counter() - t0) / args.steps

        # Upstream's way: the whole sequence every step.
        def whole(ids):
            full = torch.cat([key, block(ids)], 1)
            with torch.no_grad():
                out = arm.lm(input_ids=full, attention_mask=additive(omni_attention_mask(full, vocab),
                                                                       next(arm.lm.parameters()).dtype)).logits
            return guided(out[:, -(n + 1):-1, vocab.image_offset:vocab.mask].float(), 5.0)

        t0 = time.perf_counter()
        maskgit_fill(whole, blank, vocab, steps=args.steps, generator=torch.Generator().manual_seed(0))
        t_whole = (time.perf_counter() - t0) / args.steps
        t0 = time.perf_counter()
        pixels = arm.decode(blank.clamp(max=0))
        t_decode = time.perf_counter() - t0
        rows = [{"what": "context once (2 rows: cond, uncond)", "positions": key.shape[1], "seconds": t_prefix},
                {"what": "MaskGIT step, cached context", "positions": n + 2, "seconds": t_cached},
                {"what": "MaskGIT step, whole sequence (upstream)", "positions": key.shape[1] + n + 2,
                 "seconds": t_whole},
                {"what": "frame, 18 steps, cached", "seconds": t_prefix + 18 * t_cached},
                {"what": "frame, 18 steps, whole sequence", "seconds": 18 * t_whole},
                {"what": "saving of the cache per frame (ratio)", "seconds": (18 * t_whole) / (t_prefix + 18 * t_cached)},
                {"what": "MAGVIT-v2 decode, one 256 px frame", "seconds": t_decode},
                {"what": "write the folder / load_arm", "seconds": f"{written:.0f} / {loaded:.0f}"},
                {"what": "peak resident memory (GiB)", "seconds": round(peak_gib(), 2)}]
        notes = (f"Random weights at Show-o's published configs (Phi-1.5 1.3B, vocabulary 58,498; MAGVIT-v2 as "
                 f"showlab/magvitv2), {args.dtype}, {args.threads} thread(s), CFG (2 rows), a one-frame story before "
                 f"the frame; {args.steps} steps timed per mode, frame times = context + 18 x step. Decoded "
                 f"picture {tuple(pixels.shape)}.")
        write_results("showo", rows, notes)
        print((Path(__file__).resolve().parent / "results" / "showo.md").read_text())
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
