"""The official VBench (vbench 0.1.5) over a benchmark's videos: its own dimension functions, on its own models,
run by ``acdc bench external --evaluator vbench`` with the Python of the environment ``acdc bench external-setup
--evaluator vbench`` made (vbench pins transformers 4 and numpy 1). Never imported by ``acdc_core``.

    ENV/bin/python vbench_eval.py MANIFEST OUT

MANIFEST (JSON): ``dimensions`` ({dimension: {field: path}}, the files each needs), ``device``, ``scale`` (a whole
factor every frame is enlarged by first, bicubic, so that its shorter side is 128 px or more: VBench's RAFT needs
that; larger frames go in as they are), ``videos``: a list of {"key", "frames" (PNG paths, in order)}. OUT (JSON):
{"scores": {key: {dimension: value}}}, VBench's per-video result for each dimension asked for, on its reported scale
(``imaging_quality`` divided by 100, as VBench divides its mean; ``dynamic_degree`` 1.0 or 0.0).

What runs is vbench's own code: ``subject_consistency``, ``background_consistency`` (frame folders, its
``read_frame`` mode), ``dynamic_degree``, ``motion_smoothness`` (frame folders) and, for the two per-frame
dimensions, ``laion_aesthetic`` and ``technical_quality`` on each frame as a one-frame PNG video (lossless; VBench
reads a video's frames one by one and a video's score is their mean, taken here). Two things differ from its
``compute_*`` functions. The input: lossless frame folders, where VBench's users mostly give mp4 files (for an mp4
its dynamic degree keeps every round(fps / 8)-th frame, for a folder every frame, so above about 12 fps dynamic
degree can differ from VBench's on the mp4). The loading: every model comes from the safetensors file given (the
published weights, converted once by the user), written to a private temporary file in the layout vbench's loader
reads (CLIP: built by clip's own ``build_model``, as ``clip.load`` does), never from the network.
"""
import json
import os
import sys
import tempfile


def _torch_file(tmp, name, state, wrap=None):
    import torch

    path = os.path.join(tmp, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state if wrap is None else {wrap: state}, path)
    return path


def _clip(weights, device):
    """OpenAI CLIP from its state dict, built as ``clip.load(..., jit=False)`` builds it after reading the published
    archive (``clip.load`` itself cannot read a plain state dict: its archive attempt consumes the file)."""
    from clip.clip import _transform
    from clip.model import build_model
    from safetensors.torch import load_file

    model = build_model(load_file(weights)).to(device)
    if str(device) == "cpu":
        model.float()
    return model, _transform(model.visual.input_resolution)


def _write_frames(videos, scale, root):
    """Each video's frames, enlarged, as BMPs in root/frames/vNNNNN/ (what VBench's read_frame mode and its folder
    readers take; BMP, since its OpenCV reader fails on PNGs once pyiqa's libraries are loaded) and each distinct
    frame as a one-frame PNG video. Returns (folders, the video paths read_frame derives them from, {source PNG: its
    one-frame video})."""
    from PIL import Image

    singles, folders, paths = {}, [], []
    os.makedirs(os.path.join(root, "single"))
    for i, video in enumerate(videos):
        folder = os.path.join(root, "frames", f"v{i:05d}")
        os.makedirs(folder)
        for k, source in enumerate(video["frames"]):
            with Image.open(source) as image:
                image = image.convert("RGB")
                if scale > 1:
                    image = image.resize((image.width * scale, image.height * scale), Image.BICUBIC)
                image.save(os.path.join(folder, f"{k:03d}.bmp"))
                if source not in singles:
                    singles[source] = os.path.join(root, "single", f"{len(singles):06d}.png")
                    image.save(singles[source])
        folders.append(folder)
        paths.append(os.path.join(root, "videos", f"v{i:05d}.mp4"))
    return folders, paths, singles


def _per_frame(videos, written, results):
    """A video's score from its frames' (one-frame videos'): their mean, as VBench averages a video's frames."""
    by_path = {r["video_path"]: r["video_results"] for r in results}
    return [sum(by_path[written[f]] for f in v["frames"]) / len(v["frames"]) for v in videos]


def main(manifest_path, out_path):
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    import torch
    from safetensors.torch import load_file

    device, videos, dims = manifest.get("device", "cpu"), manifest["videos"], manifest["dimensions"]
    scores = {v["key"]: {} for v in videos}
    with tempfile.TemporaryDirectory(prefix="acdc_vbench_") as root:
        # read_frame mode finds a video's frames at path[:-4].replace('videos', 'frames').replace(' ', '_')
        if " " in root or "videos" in root or "frames" in root:
            raise SystemExit(f"vbench_eval: the temporary folder {root} has a space or 'videos'/'frames' in its "
                             "path, which VBench's frame reader rewrites (or could confuse); set TMPDIR to a plain "
                             "folder.")
        folders, paths, written = _write_frames(videos, int(manifest.get("scale", 1)), root)
        singles = sorted(set(written.values()))
        weights = os.path.join(root, "weights")
        results = {}
        if "subject_consistency" in dims:
            from vbench.subject_consistency import subject_consistency

            d = dims["subject_consistency"]
            model = torch.hub.load(d["dino_repo"], "dino_vitb16", source="local", pretrained=False)
            model.load_state_dict(load_file(d["dino_weights"]), strict=True)
            _, out = subject_consistency(model.to(device), paths, device, True)
            results["subject_consistency"] = [r["video_results"] for r in out]
        if "background_consistency" in dims:
            from vbench.background_consistency import background_consistency

            model, preprocess = _clip(dims["background_consistency"]["clip_b32_weights"], device)
            _, out = background_consistency(model, preprocess, paths, device, True)
            results["background_consistency"] = [r["video_results"] for r in out]
        if "aesthetic_quality" in dims:
            from vbench.aesthetic_quality import get_aesthetic_model, laion_aesthetic

            d = dims["aesthetic_quality"]
            head_folder = os.path.join(weights, "emb_reader")
            _torch_file(head_folder, "sa_0_4_vit_l_14_linear.pth", load_file(d["aesthetic_head"]))
            model, _ = _clip(d["clip_l14_weights"], device)
            _, out = laion_aesthetic(get_aesthetic_model(head_folder).to(device), model, singles, device)
            results["aesthetic_quality"] = _per_frame(videos, written, out)
        if "imaging_quality" in dims:
            from pyiqa.archs.musiq_arch import MUSIQ
            from vbench.imaging_quality import technical_quality

            model = MUSIQ(pretrained_model_path=_torch_file(weights, "musiq_spaq_ckpt.pth",
                                                            load_file(dims["imaging_quality"]["musiq_weights"])))
            model.to(device)
            model.training = False
            _, out = technical_quality(model, singles, device)
            results["imaging_quality"] = [s / 100.0 for s in _per_frame(videos, written, out)]
        if "dynamic_degree" in dims:
            from easydict import EasyDict
            from vbench.dynamic_degree import DynamicDegree, dynamic_degree

            path = _torch_file(weights, "raft-things.pth", load_file(dims["dynamic_degree"]["raft_weights"]))
            model = DynamicDegree(EasyDict({"model": path, "small": False, "mixed_precision": False,
                                            "alternate_corr": False}), device)
            _, out = dynamic_degree(model, folders)
            results["dynamic_degree"] = [float(r["video_results"]) for r in out]
        if "motion_smoothness" in dims:
            import vbench
            from vbench.motion_smoothness import MotionSmoothness, motion_smoothness

            config = os.path.join(os.path.dirname(vbench.__file__), "third_party", "amt", "cfgs", "AMT-S.yaml")
            path = _torch_file(weights, "amt-s.pth", load_file(dims["motion_smoothness"]["amt_weights"]),
                               wrap="state_dict")
            _, out = motion_smoothness(MotionSmoothness(config, path, device), folders)
            results["motion_smoothness"] = [float(r["video_results"]) for r in out]
    for dimension, values in results.items():
        for video, value in zip(videos, values):
            scores[video["key"]][dimension] = float(value)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"scores": scores}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
