"""FID's Inception-v3 features (torch-fidelity's TF-compatible port, as torchmetrics' FrechetInceptionDistance loads
it) of a benchmark's frames and reference frames: run by ``acdc bench external --evaluator inception`` with the
Python of the environment ``acdc bench external-setup --evaluator inception`` made (torch-fidelity imports
torchvision, which needs a torch of its own). Never imported by ``acdc_core``.

    ENV/bin/python inception_eval.py MANIFEST OUT

MANIFEST (JSON): ``weights`` (the Inception weights as one safetensors file), ``device``, ``frames``: a list of
{"key", "image" (a PNG)}. OUT: a safetensors file, one 2048-wide pool feature per key -- torchmetrics'
``NoTrainInceptionV3(features_list=["2048"])`` on the uint8 frame, exactly what FrechetInceptionDistance
accumulates; the merge computes the distance (the same formula, tested equal). The weights go in as safetensors:
torch-fidelity's constructor reads only a torch file, so they are written to a private temporary one first.
"""
import json
import os
import sys
import tempfile


def main(manifest_path: str, out_path: str) -> int:
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from torchmetrics.image.fid import NoTrainInceptionV3

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inception.pth")
        torch.save(load_file(manifest["weights"]), path)
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=path)
    device = manifest.get("device", "cpu")
    net = net.to(device).eval()
    features = {}
    with torch.no_grad():
        for n, frame in enumerate(manifest["frames"]):
            with Image.open(frame["image"]) as image:
                pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)[None]
            features[frame["key"]] = net(pixels.to(device)).reshape(-1).double().cpu().contiguous()
            if (n + 1) % 200 == 0:
                print(f"inception_eval: {n + 1}/{len(manifest['frames'])} frames", file=sys.stderr, flush=True)
    save_file(features, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
