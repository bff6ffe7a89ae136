"""One whole ACDC frame at real size on this machine, stage by stage: seconds and peak memory of the ARM (Janus-Pro-1B,
384 px, 576 codes with CFG), the VQ decode, the memory LLM (Qwen2.5-0.5B-Instruct's size), SDEdit at t' = 0.5 of 50
DDIM steps with SD1.5 at 512 px (25 steps, CFG 7.5) and the re-encode; and ACDC's overhead over the ARM alone (ARM +
decode), the cost the paper never reported, measured in the same run.

Random weights at the published configs, written once to a folder in the layouts the loaders read (a transformers
Janus, a diffusers SD1.5 from the configs shipped in acdc_core/correct/configs/sd15, a transformers Qwen2 with a small
chat tokenizer) and loaded through the engine's own loaders; the frame runs through the engine's step functions (as
``story.step_frame`` composes them). The cost is a trained model's; the pictures are noise. The random memory LLM
stops where its random weights happen to (up to ``max_new_tokens``, 96), so its time is indicative only; the weights
are memory-mapped, so each stage's time includes reading its model's weights the first time they are used.

    .venv/bin/python benchmarks/bench_acdc_frame.py [--keep DIR] [--dtype float32] [--decoding dynamic]

About 12 minutes on 2 CPU cores the first time (writing 10 GB of weights), 15 GiB of memory. Writes
results/acdc_frame.{md,json}.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import load_average, write_results  # noqa: E402
from benchmarks.bench_arm import JANUS_PRO_1B  # noqa: E402

PAGE = 4096
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True)
PROMPT = "A golden retriever named Benny plays in a sunlit meadow."


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 30


class Peak:
    """Samples the process's resident memory every 20 ms; ``stage(name)`` records each stage's peak."""

    def __init__(self) -> None:
        self.now = self.high = rss_gib()
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.stages: dict[str, tuple[float, float]] = {}

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.high = max(self.high, rss_gib())

    @contextmanager
    def stage(self, name: str):
        self.high = rss_gib()
        start = time.perf_counter()
        yield
        self.stages[name] = (time.perf_counter() - start, max(self.high, rss_gib()))


def write_sd15(folder: Path) -> Path:
    """A random-weight SD1.5 in the diffusers layout at ``folder`` (from the configs the pack ships), unless there."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if (folder / "model_index.json").is_file():
        return folder
    configs = Path(__file__).resolve().parent.parent / "acdc_core" / "correct" / "configs" / "sd15"
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")).save_pretrained(folder / "text_encoder")
    DDIMScheduler.from_config(DDIMScheduler.load_config(configs / "scheduler")).save_pretrained(folder / "scheduler")
    shutil.copytree(configs / "tokenizer", folder / "tokenizer")
    shutil.copy(configs / "model_index.json", folder / "model_index.json")
    return folder


def write_models(folder: Path) -> dict[str, Path]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from acdc_core.tiny.janus import build_tiny_janus
    from acdc_core.tiny.llm import build_tiny_llm

    paths = {"arm": folder / "janus-pro-1b", "dm": folder / "sd15", "llm": folder / "qwen2.5-0.5b"}
    if not (paths["arm"] / "config.json").is_file():
        build_tiny_janus(paths["arm"], seed=0, image_size=384, **JANUS_PRO_1B)
    write_sd15(paths["dm"])
    if not (paths["llm"] / "model.safetensors").is_file() and not any(paths["llm"].glob("model-*.safetensors")):
        build_tiny_llm(paths["llm"], seed=0, model_type="qwen2")       # its chat tokenizer
        for old in paths["llm"].glob("model*.safetensors"):
            old.unlink()
        small = Qwen2Config.from_pretrained(paths["llm"])
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(**{**QWEN_05B, "eos_token_id": small.eos_token_id,
                                                "pad_token_id": small.pad_token_id}))
        model.save_pretrained(paths["llm"], safe_serialization=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="write the model folders here and keep them (default: a temporary folder)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--decoding", default="dynamic", choices=("dynamic", "static", "compiled"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="e.g. cuda (a GPU: see gpu.sh); every model stays there")
    parser.add_argument("--name", default="acdc_frame", help="the results file's name (results/<name>.md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from acdc_core.arm import load_arm
    from acdc_core.correct import load_corrector
    from acdc_core.memory import MemoryModule, load_local_llm
    from acdc_core.memory.module import MemorySettings
    from acdc_core.state import StorySettings, new_story
    from acdc_core.story import correct, decode, generate, memory_prompt, reencode

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="acdc_frame_"))
    dtype = getattr(torch, args.dtype)
    load_before = load_average()
    try:
        started = time.perf_counter()
        paths = write_models(folder)
        written = time.perf_counter() - started
        peak = Peak()
        with peak.stage("load"):
            arm = load_arm(paths["arm"], dtype=dtype, decoding=args.decoding, device=args.device)
            corrector = load_corrector(paths["dm"], dtype=dtype, device=args.device)
            memory = MemoryModule(load_local_llm(paths["llm"], dtype=dtype, device=args.device),
                                  MemorySettings(max_new_tokens=96))
        settings = StorySettings(strength=0.5, steps=50, guidance_scale=7.5, scheduler="ddim")
        state = new_story([PROMPT])
        with peak.stage("arm"):
            frame = generate(state, arm, settings)
        with peak.stage("decode"):
            frame = decode(frame, arm)
        with peak.stage("memory"):
            answer = memory_prompt(state, memory, corrector)
        with peak.stage("sdedit"):
            frame = correct(frame, corrector, settings, answer.text)
        with peak.stage("encode"):
            reencode(frame, arm)
        peak.stop.set()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    stages = peak.stages
    frame_s = sum(stages[s][0] for s in ("arm", "decode", "memory", "sdedit", "encode"))
    arm_only = stages["arm"][0] + stages["decode"][0]
    rows = [{"stage": name, "seconds": seconds, "share_of_frame": seconds / frame_s if name != "load" else float("nan"),
             "peak_rss_gib": high} for name, (seconds, high) in stages.items()]
    rows.append({"stage": "ACDC frame (arm + decode + memory + sdedit + encode)", "seconds": frame_s,
                 "share_of_frame": 1.0, "peak_rss_gib": max(h for _, h in stages.values())})
    rows.append({"stage": "ARM only (arm + decode)", "seconds": arm_only, "share_of_frame": arm_only / frame_s,
                 "peak_rss_gib": max(stages["arm"][1], stages["decode"][1])})
    rows.append({"stage": "ACDC overhead over ARM only (ratio)", "seconds": frame_s / arm_only,
                 "share_of_frame": float("nan"), "peak_rss_gib": float("nan")})
    notes = (f"One ACDC frame (frame 1 of a story) at real size, {args.dtype} on {args.device}, {args.threads} CPU "
             f"threads, ARM decoding "
             f"{args.decoding}. ARM: random Janus-Pro-1B (24 x 2048 LM, 576 codes at 384 px, CFG 5, 2 rows); DM: random "
             "SD1.5 (diffusers, 512 px), SDEdit t' = 0.5 of 50 DDIM steps (25 run, CFG 7.5); memory: random "
             "Qwen2.5-0.5B-sized LLM, per-frame, at most 96 new tokens (a random LLM stops where it happens to: "
             "indicative only); encode: Janus' VQ encoder. Weights are memory-mapped: 'load' builds the models, each "
             "stage's time includes reading its weights the first time. peak_rss_gib: the process's resident memory "
             "at its highest during the stage (every model stays loaded). "
             f"Weights written in {written:.0f} s. Load average before: {load_before}, after: {load_average()}.")
    for row in rows:
        print(row)
    print(write_results(args.name, rows, notes))


if __name__ == "__main__":
    main()
