"""ImageReward (Xu et al. 2023) over a benchmark's frames: run by ``acdc bench external`` with the Python of the
ImageReward environment that ``acdc bench external-setup --evaluator imagereward`` made. It is never imported by
``acdc_core``: the ``image-reward`` package pins timm 0.6.13 and fairscale and its BLIP code needs transformers 4,
which cannot live beside this project's transformers 5.

    ENV/bin/python imagereward_eval.py MANIFEST OUT

MANIFEST (JSON): ``weights`` (ImageReward-v1.0's state dict as one safetensors file), ``med_config`` (its
med_config.json), ``tokenizer`` (a local bert-base-uncased tokenizer folder), ``device``, ``frames``: a list of
{"key", "image" (a PNG), "prompt"}. OUT (JSON): {"evaluator": "imagereward", "package": version, "scores": {key:
reward}} -- each reward is ImageReward's own ``model.score(prompt, image)``. Nothing is downloaded: BLIP's tokenizer
comes from ``tokenizer`` (instead of the hub), the weights from ``weights`` (safetensors, not the published pickle).
"""
import json
import sys


def main(manifest_path: str, out_path: str) -> int:
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    import torch
    from importlib.metadata import version
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import BertTokenizer

    import ImageReward.models.BLIP.blip_pretrain as blip_pretrain
    from ImageReward.ImageReward import ImageReward

    def local_tokenizer():
        # BLIP's init_tokenizer, reading the tokenizer from the folder given instead of the hub
        tokenizer = BertTokenizer.from_pretrained(manifest["tokenizer"], local_files_only=True)
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
        return tokenizer

    blip_pretrain.init_tokenizer = local_tokenizer
    device = manifest.get("device", "cpu")
    model = ImageReward(med_config=manifest["med_config"], device=device)
    result = model.load_state_dict(load_file(manifest["weights"]), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        print(f"imagereward_eval: {manifest['weights']} is not ImageReward's state dict (missing {missing[:5]}, "
              f"unexpected {result.unexpected_keys[:5]})", file=sys.stderr)
        return 2
    model = model.to(device).eval()
    scores = {}
    with torch.no_grad():
        for n, frame in enumerate(manifest["frames"]):
            with Image.open(frame["image"]) as image:
                scores[frame["key"]] = float(model.score(frame["prompt"], image.convert("RGB")))
            if (n + 1) % 50 == 0:
                print(f"imagereward_eval: {n + 1}/{len(manifest['frames'])} frames", file=sys.stderr, flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"evaluator": "imagereward", "package": version("image-reward"), "scores": scores}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
