#!/usr/bin/env bash
# The GPU set, in one call, when a GPU machine is at hand (a few minutes on an H100-class card):
# the ARM decoding modes against transformers' generate in bf16 (Janus-Pro-1B's LM included); several stories in one
# batch against one at a time; our SDEdit against diffusers' img2img pipeline on SD1.5 in fp16; the VQ tokenizers'
# codes in bf16/fp16 against fp32; AnimateDiff's 16-frame 512 px window SDEdit against its diffusers pipeline in fp16
# (time and peak memory); a window swap's forward against a full prefill at LWM-7B's width (8 of its 32 layers); one whole ACDC frame at
# real size in bf16, for each decoding mode.
# Results: benchmarks/results/{arm,batch,sdedit,vq_precision,video_sdedit,video_swap,acdc_frame}_gpu*.md.
#   bash benchmarks/gpu.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$py" benchmarks/bench_arm.py --real --device cuda --dtype bfloat16 --repeats 5 --name arm_gpu_bf16
"$py" benchmarks/bench_batch.py --real --device cuda --dtype bfloat16 --name batch_gpu_bf16
"$py" benchmarks/bench_sdedit.py --real --device cuda --dtype float16 --name sdedit_gpu_fp16
"$py" benchmarks/bench_vq_precision.py --device cuda --name vq_precision_gpu
"$py" benchmarks/bench_video_sdedit.py --real --pipeline --device cuda --dtype float16 --steps 50 --name video_sdedit_gpu_fp16
"$py" benchmarks/bench_video_swap.py --device cuda --dtype bfloat16 --hidden 4096 --layers 8 --name video_swap_gpu_lwm7b_width
for mode in dynamic compiled; do
  "$py" benchmarks/bench_acdc_frame.py --device cuda --dtype bfloat16 --decoding "$mode" --keep /tmp/acdc_frame_models \
    --name "acdc_frame_gpu_bf16_$mode"
done
