"""VQ precision benchmark: does a VQ tokenizer pick the same codes in bfloat16 / float16 as in float32?

ACDC re-encodes every corrected frame with the ARM's own tokenizer and swaps the codes into the context, so a
precision that changes the codes changes the story. For each tokenizer at its published configuration (random
weights, built here; no download) and each half precision, on synthetic scenes (a sky gradient, ground, coloured
discs):

- ``encode_agree``: the share of codes E_half(x) equal to E_fp32(x);
- ``roundtrip_agree``: the share of E_half(D_half(c)) equal to E_fp32(D_fp32(c)) for c = E_fp32(x) (decode, then
  re-encode: what the ACDC swap does);
- ``decode_max_abs``: the largest pixel difference of D_half(c) from D_fp32(c) (pixels in [-1, 1]);
- seconds of one encode + decode in each precision.

Tokenizers: Janus-Pro's VQ (transformers ``JanusVQVAE``, 384 px, 16,384 codes, the ARM's L2-normalised lookup),
Show-o's MAGVIT-v2 (our port, 256 px, lookup-free 8,192 codes), Emu3's VQ (transformers ``Emu3VQVAE``, 256 px,
32,768 codes). Random weights are not trained ones: how close latents sit to a decision boundary may differ, so read
these as what the arithmetic does, and re-run on real weights where they are at hand (``--janus FOLDER``).
On the CPU half precision is emulated (``emulate``: weights, layer inputs and outputs rounded to half precision,
arithmetic in float32), since this CPU's bfloat16 convolutions run over 100x slower than float32; on a GPU it is the
real thing. Run: ``python benchmarks/bench_vq_precision.py [--device cuda]`` (about 4 minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import load_average, placement_arguments, write_results  # noqa: E402

def scenes(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` synthetic scenes [N, 3, size, size] in [-1, 1]: sky gradient, ground, a few discs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, size)[:, None].expand(size, size)
    x = torch.linspace(0, 1, size)[None, :].expand(size, size)
    out = []
    for _ in range(count):
        sky, ground = torch.rand(3, generator=g), torch.rand(3, generator=g)
        horizon = 0.5 + 0.3 * float(torch.rand(1, generator=g))
        img = torch.where(y < horizon, sky[:, None, None] * (1 - 0.5 * y), ground[:, None, None].expand(3, size, size))
        for _ in range(3):
            cx, cy, r = (float(v) for v in torch.rand(3, generator=g))
            disc = ((x - cx) ** 2 + (y - cy) ** 2) < (0.05 + 0.15 * r) ** 2
            img = torch.where(disc, torch.rand(3, 1, 1, generator=g), img)
        out.append(img)
    return torch.stack(out) * 2 - 1


class Janus:
    name, size = "Janus-Pro VQ (16,384 codes)", 384

    def __init__(self, folder=None, size=None) -> None:
        self.size = size or self.size
        from transformers import JanusVQVAE, JanusVQVAEConfig

        if folder:
            from transformers import JanusForConditionalGeneration
            self.vq = JanusForConditionalGeneration.from_pretrained(folder).model.vqmodel.eval()
            self.name += " (real weights)"
        else:
            torch.manual_seed(0)
            self.vq = JanusVQVAE(JanusVQVAEConfig(num_patches=self.size // 16)).eval()   # the defaults: Janus-Pro's

    def encode(self, pixels):
        from torch.nn.functional import normalize

        z = self.vq.quant_conv(self.vq.encoder(pixels))          # the ARM's rule (arm/janus.py quantize)
        n, d = z.shape[:2]
        z = normalize(z.float().permute(0, 2, 3, 1).reshape(n, -1, d), dim=-1)
        book = normalize(self.vq.quantize.embedding.weight.float(), dim=-1)
        return (z @ book.T).argmax(dim=-1)

    def decode(self, codes):
        return self.vq.decode(codes)


class Magvit:
    name, size = "Show-o MAGVIT-v2 (8,192 codes)", 256

    def __init__(self, folder=None, size=None) -> None:
        self.size = size or self.size
        from acdc_core.arm.magvit import MagvitConfig, MagvitV2

        torch.manual_seed(0)
        self.vq = MagvitV2(MagvitConfig()).eval()
        self.grid = (self.size // self.vq.config.downsampling,) * 2

    def encode(self, pixels):
        return self.vq.encode(pixels)

    def decode(self, codes):
        return self.vq.decode(codes, self.grid)


class Emu3:
    name, size = "Emu3 VQ (32,768 codes)", 256

    def __init__(self, folder=None, size=None) -> None:
        self.size = size or self.size
        from transformers import Emu3VQVAE, Emu3VQVAEConfig

        torch.manual_seed(0)
        self.vq = Emu3VQVAE(Emu3VQVAEConfig()).eval()
        self.grid = self.size // 8

    def encode(self, pixels):
        sizes = torch.tensor([[self.size, self.size]] * pixels.shape[0])
        return torch.stack(self.vq.encode(pixels, sizes, return_dict=True).image_tokens).flatten(1)

    def decode(self, codes):
        return self.vq.decode(codes.view(-1, self.grid, self.grid))


def emulate(model: torch.nn.Module, dtype: torch.dtype) -> list:
    """Half precision as a GPU computes it, emulated in float32 on a CPU without fast half kernels (a bfloat16
    convolution is over 100x slower than float32 on this one): the weights rounded to ``dtype``, and every layer's
    inputs and output rounded to ``dtype`` (a GPU kernel reads and writes half precision and accumulates in float32).
    Returns the hooks to remove; the caller restores the weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())

    def round_in(module, args):
        return tuple(a.to(dtype).float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def round_out(module, args, out):
        return out.to(dtype).float() if torch.is_tensor(out) and out.is_floating_point() else out

    leaves = [m for m in model.modules() if not list(m.children())]
    return ([m.register_forward_pre_hook(round_in) for m in leaves]
            + [m.register_forward_hook(round_out) for m in leaves])


def measure(vq, device: str, count: int, precisions: tuple[str, ...]) -> list[dict]:
    images = scenes(count, vq.size).to(device)
    rows = []
    with torch.no_grad():
        vq.vq.to(device, torch.float32)
        state = {k: v.clone() for k, v in vq.vq.state_dict().items()}
        start = time.perf_counter()
        codes = vq.encode(images)
        ref_pixels = vq.decode(codes).float()
        ref_round = vq.encode(ref_pixels.clamp(-1, 1))
        fp32_s = time.perf_counter() - start
        for name in precisions:
            dtype = getattr(torch, name)
            emulated = device == "cpu"
            if emulated:
                hooks = emulate(vq.vq, dtype)
            else:
                hooks = []
                vq.vq.to(device, dtype)
            try:
                start = time.perf_counter()
                half_codes = vq.encode(images if emulated else images.to(dtype))
                pixels = vq.decode(codes)
                half_round = vq.encode(pixels.clamp(-1, 1))
                seconds = time.perf_counter() - start
            except (RuntimeError, NotImplementedError) as error:     # a kernel missing in this precision here
                rows.append({"tokenizer": vq.name, "precision": name, "error": str(error).splitlines()[0][:80]})
                continue
            finally:
                for hook in hooks:
                    hook.remove()
                vq.vq.to(device, torch.float32)
                vq.vq.load_state_dict(state)
            rows.append({"tokenizer": vq.name, "precision": name + (" (emulated)" if emulated else ""), "size": vq.size,
                         "encode_agree": float((half_codes == codes).float().mean()),
                         "roundtrip_agree": float((half_round == ref_round).float().mean()),
                         "decode_max_abs": float((pixels.float() - ref_pixels).abs().max()),
                         "decode_mean_abs": float((pixels.float() - ref_pixels).abs().mean()),
                         "half_s": seconds, "fp32_s": fp32_s, "codes": int(codes.numel())})
            print(rows[-1])
        vq.vq.to(device, torch.float32)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    placement_arguments(parser, "vq_precision", dtype=False)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--janus", default=None, help="a Janus-Pro folder: measure its real VQ instead")
    parser.add_argument("--size", type=int, default=None, help="frame side for every tokenizer (default: each one's own)")
    parser.add_argument("--precisions", default="bfloat16,float16", help="on the CPU emulated (see emulate)")
    parser.add_argument("--tokenizers", default="janus,magvit,emu3", help="which to measure (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load_before = load_average()
    rows = []
    precisions = tuple(args.precisions.split(","))
    chosen = {"janus": Janus, "magvit": Magvit, "emu3": Emu3}
    for kind in (chosen[name] for name in args.tokenizers.split(",")):
        rows += measure(kind(args.janus if kind is Janus else None, args.size), args.device, args.images, precisions)
    worst = min((r.get("roundtrip_agree", math.nan) for r in rows), default=math.nan)
    notes = (f"{args.images} synthetic scenes per tokenizer, on {args.device}; random weights at the published "
             "configs (see the module docstring). encode_agree: E_half(x) == E_fp32(x); roundtrip_agree: "
             "E_half(D_half(c)) == E_fp32(D_fp32(c)), c = E_fp32(x); decode_*_abs: |D_half(c) - D_fp32(c)| in [-1, 1] "
             f"pixels. Lowest round-trip agreement: {worst:.4f}. Load average (1/5/15 min) before: {load_before}, "
             f"after: {load_average()}.")
    print(write_results(args.name, rows, notes))


if __name__ == "__main__":
    main()
