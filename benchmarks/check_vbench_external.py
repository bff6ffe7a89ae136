"""Checks ``acdc_core/bench/external/vbench_eval.py`` against VBench 0.1.5's own ``compute_<dimension>`` entry points,
on the same videos and the same random weights. Run it with the Python of the vbench environment (``acdc bench
external-setup --evaluator vbench --env ENV``), never with this project's:

    ENV/bin/python benchmarks/check_vbench_external.py --manifest OUT/external/vbench/manifest.json \
        --dino-repo DINO --work DIR [--videos 3]

``--manifest``: the one ``acdc bench external --evaluator vbench`` wrote for a benchmark (its videos are taken from
there); ``--dino-repo``: a local copy of github.com/facebookresearch/dino. It makes random weights for the six models
in their published architectures (the two CLIPs tiny: ``clip.load`` infers the size from the weights; DINO ViT-B/16,
MUSIQ, RAFT and AMT-S at their real configurations) as safetensors, runs our script on them, and then vbench's
``init_submodules(local=True)`` + ``compute_<dimension>`` over a cache folder holding the same weights in the
layouts VBench downloads (CLIPs as TorchScript archives, RAFT with its ``module.`` keys, AMT under ``state_dict``,
DINO through its hubconf and torch hub's checkpoint folder), so nothing is fetched. Both see the same pixels: every
frame enlarged x4 (bicubic) and each video quantized to one 256-colour palette, so that the GIF VBench reads for
aesthetic and imaging quality holds it exactly (checked). Writes DIR/worst.json: the largest difference per dimension.
"""
import argparse
import importlib
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_weights(folder, dino_repo):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)

    def save(name, state):
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, os.path.join(folder, name))

    save("dino.safetensors", torch.hub.load(dino_repo, "dino_vitb16", source="local", pretrained=False).state_dict())
    from clip.model import CLIP

    for name, embed in (("clip_b32.safetensors", 512), ("clip_l14.safetensors", 768)):
        save(name, CLIP(embed, 224, 2, 64, 32, 77, 49408, 64, 1, 2).state_dict())
    save("aesthetic_head.safetensors", torch.nn.Linear(768, 1).state_dict())
    from pyiqa.archs.musiq_arch import MUSIQ

    save("musiq.safetensors", MUSIQ(pretrained=False).state_dict())
    from easydict import EasyDict
    from vbench.third_party.RAFT.core.raft import RAFT

    raft = RAFT(EasyDict({"small": False, "mixed_precision": False, "alternate_corr": False}))
    save("raft.safetensors", {"module." + k: v for k, v in raft.state_dict().items()})
    import vbench
    from omegaconf import OmegaConf
    from vbench.third_party.amt.utils.build_utils import build_from_cfg

    config = os.path.join(os.path.dirname(vbench.__file__), "third_party", "amt", "cfgs", "AMT-S.yaml")
    save("amt.safetensors", build_from_cfg(OmegaConf.load(config).network).state_dict())


def _same_pixels(videos, root):
    """Each video's frames x4 and quantized to one palette: PNGs (ours), BMP folders and a GIF (VBench's)."""
    import numpy as np
    from PIL import Image, ImageSequence

    ours = []
    for i, video in enumerate(videos):
        images = [Image.open(p).convert("RGB") for p in video["frames"]]
        images = [im.resize((im.width * 4, im.height * 4), Image.BICUBIC) for im in images]
        h = images[0].height
        tall = Image.new("RGB", (images[0].width, h * len(images)))
        for k, im in enumerate(images):
            tall.paste(im, (0, k * h))
        q = tall.quantize(colors=256, method=Image.MEDIANCUT, dither=Image.Dither.NONE)
        frames = [q.crop((0, k * h, q.width, (k + 1) * h)) for k in range(len(images))]
        for sub in ("png", "frames"):
            os.makedirs(os.path.join(root, sub, f"v{i}"))
        os.makedirs(os.path.join(root, "videos"), exist_ok=True)
        paths = []
        for k, frame in enumerate(frames):
            paths.append(os.path.join(root, "png", f"v{i}", f"{k:03d}.png"))
            frame.convert("RGB").save(paths[-1])
            frame.convert("RGB").save(os.path.join(root, "frames", f"v{i}", f"{k:03d}.bmp"))
        gif = os.path.join(root, "videos", f"v{i}.gif")
        frames[0].save(gif, save_all=True, append_images=frames[1:], optimize=False, loop=0, duration=100)
        back = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(gif))]
        assert len(back) == len(paths) and all((b == np.asarray(Image.open(p))).all() for b, p in zip(back, paths)), \
            "the GIF does not hold the frames exactly"
        ours.append({"key": f"v{i}", "frames": paths})
    return ours


def _vbench_cache(cache, weights, dino_repo, torch_home):
    import torch
    from clip.model import build_model
    from safetensors.torch import load_file

    def pth(path, state):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(state, path)

    os.makedirs(os.path.join(cache, "clip_model"))
    for name, f in (("ViT-B-32.pt", "clip_b32"), ("ViT-L-14.pt", "clip_l14")):        # TorchScript, as published
        model = build_model(load_file(os.path.join(weights, f + ".safetensors"))).float().eval()
        example = (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), os.path.join(cache, "clip_model", name))
    w = {n: load_file(os.path.join(weights, n + ".safetensors")) for n in ("aesthetic_head", "musiq", "raft", "amt",
                                                                           "dino")}
    pth(os.path.join(cache, "aesthetic_model", "emb_reader", "sa_0_4_vit_l_14_linear.pth"), w["aesthetic_head"])
    pth(os.path.join(cache, "pyiqa_model", "musiq_spaq_ckpt-358bb6af.pth"), w["musiq"])
    pth(os.path.join(cache, "raft_model", "models", "raft-things.pth"), w["raft"])
    pth(os.path.join(cache, "amt_model", "amt-s.pth"), {"state_dict": w["amt"]})
    shutil.copytree(dino_repo, os.path.join(cache, "dino_model", "facebookresearch_dino_main"))
    pth(os.path.join(cache, "dino_model", "dino_vitbase16_pretrain.pth"), w["dino"])
    pth(os.path.join(torch_home, "hub", "checkpoints", "dino_vitbase16_pretrain.pth"), w["dino"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--dino-repo", required=True)
    parser.add_argument("--work", required=True, help="a new folder for the weights, videos and results")
    parser.add_argument("--videos", type=int, default=3)
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work)
    cache, torch_home = os.path.join(work, "cache"), os.path.join(work, "torch_home")
    os.environ["VBENCH_CACHE_DIR"], os.environ["TORCH_HOME"] = cache, torch_home     # before vbench is imported
    weights = os.path.join(work, "weights")
    os.makedirs(weights)
    _random_weights(weights, args.dino_repo)
    with open(args.manifest, encoding="utf-8") as f:
        videos = _same_pixels(json.load(f)["videos"][:args.videos], os.path.join(work, "data"))
    n = len(videos)
    dims = {"subject_consistency": {"dino_weights": f"{weights}/dino.safetensors", "dino_repo": args.dino_repo},
            "background_consistency": {"clip_b32_weights": f"{weights}/clip_b32.safetensors"},
            "aesthetic_quality": {"clip_l14_weights": f"{weights}/clip_l14.safetensors",
                                  "aesthetic_head": f"{weights}/aesthetic_head.safetensors"},
            "imaging_quality": {"musiq_weights": f"{weights}/musiq.safetensors"},
            "dynamic_degree": {"raft_weights": f"{weights}/raft.safetensors"},
            "motion_smoothness": {"amt_weights": f"{weights}/amt.safetensors"}}
    with open(os.path.join(work, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"dimensions": dims, "device": "cpu", "scale": 1, "videos": videos}, f)
    sys.path.insert(0, os.path.join(ROOT, "acdc_core", "bench", "external"))
    import vbench_eval

    vbench_eval.main(os.path.join(work, "manifest.json"), os.path.join(work, "ours.json"))
    with open(os.path.join(work, "ours.json"), encoding="utf-8") as f:
        ours = json.load(f)["scores"]
    _vbench_cache(cache, weights, args.dino_repo, torch_home)
    import vbench.utils
    from vbench.utils import init_submodules

    assert vbench.utils.CACHE_DIR == cache
    submodules = init_submodules(list(dims), local=True, read_frame=True)
    data = os.path.join(work, "data")
    lists = {"subject_consistency": [f"{data}/videos/v{i}.mp4" for i in range(n)],      # read_frame: frames/v{i}
             "background_consistency": [f"{data}/videos/v{i}.mp4" for i in range(n)],
             "aesthetic_quality": [f"{data}/videos/v{i}.gif" for i in range(n)],
             "imaging_quality": [f"{data}/videos/v{i}.gif" for i in range(n)],
             "dynamic_degree": [f"{data}/frames/v{i}" for i in range(n)],
             "motion_smoothness": [f"{data}/frames/v{i}" for i in range(n)]}
    worst = {}
    for d in dims:
        info = os.path.join(work, f"{d}_full_info.json")
        with open(info, "w", encoding="utf-8") as f:
            json.dump([{"prompt_en": "-", "dimension": [d], "video_list": lists[d]}], f)
        _, per_video = getattr(importlib.import_module(f"vbench.{d}"), f"compute_{d}")(info, "cpu", submodules[d])
        theirs = [float(r["video_results"]) / (100.0 if d == "imaging_quality" else 1.0) for r in per_video]
        mine = [ours[f"v{i}"][d] for i in range(n)]
        worst[d] = max(abs(a - b) for a, b in zip(theirs, mine))
        print(f"{d}: vbench {[round(x, 6) for x in theirs]} ours {[round(x, 6) for x in mine]} "
              f"largest difference {worst[d]:.3g}", flush=True)
    with open(os.path.join(work, "worst.json"), "w", encoding="utf-8") as f:
        json.dump(worst, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
