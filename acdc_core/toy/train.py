"""Train the toy worlds' models with one seeded command:

    python -m acdc_core.toy.train --out acdc_core/toy/models --seed 0 [--world story|video|both]

Two worker processes of one thread each, so the two cores are used and every run stays deterministic. The story
world (``--world story``): the ARM (``train_arm``, the longest) in one, the DM then the memory LLM
(``train_dm``, ``train_memory``) in the other; about 35 minutes on a 2-core CPU. The video world (``--world
video``): the video ARM (``train_video_arm``) in one, the video DM (``train_video_dm``) in the other; 53 minutes
when timed end to end (README: The toy video world).
These are the trainers' own commands that made the shipped models (their cards name them), with one exception:
the shipped video ARM was trained on 2 threads (``--threads 2 --eval-clips 30``), so this command's 1-thread video
ARM follows the same recipe but differs from it at float level. Each writes
``OUT/<name>`` with its model card; the logs go to ``OUT/<name>.log``. Extra arguments for one trainer:
``--arm-args "--lm-steps 100"``, ``--video-arm-args ...`` and the like (a quick trial; the shipped models use the
defaults).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["TRAINERS", "commands", "main"]

TRAINERS = ("arm", "dm", "memory", "video_arm", "video_dm")   # module acdc_core.toy.train_<name>, folder OUT/<name>
LANES = {"story": [["arm"], ["dm", "memory"]], "video": [["video_arm"], ["video_dm"]]}   # one process per lane


def commands(out: Path, seed: int, extra: dict[str, Sequence[str]]) -> dict[str, list[str]]:
    """The command line of each trainer."""
    return {name: [sys.executable, "-m", f"acdc_core.toy.train_{name}", "--out", str(out / name), "--seed",
                   str(seed), "--threads", "1", *extra.get(name, ())] for name in TRAINERS}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acdc_core.toy.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the three model folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world", choices=("story", "video", "both"), default="both",
                        help="which world's models to train (default both: four lanes, two at a time)")
    for name in TRAINERS:
        parser.add_argument(f"--{name.replace('_', '-')}-args", dest=f"{name}_args", default="",
                            help=f"extra arguments for train_{name}")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    cmds = commands(args.out, args.seed, {n: shlex.split(getattr(args, f"{n}_args")) for n in TRAINERS})
    if args.world == "both":   # two processes at a time: the two long ARMs first, one per core
        lanes = [["arm", "video_dm"], ["video_arm", "dm", "memory"]]
    else:
        lanes = LANES[args.world]
    start = time.perf_counter()
    failed: list[str] = []

    def launch(name: str) -> subprocess.Popen:
        print(f"[{time.perf_counter() - start:6.0f} s] training {name}: {shlex.join(cmds[name])}", flush=True)
        with open(args.out / f"{name}.log", "w", encoding="utf-8") as log:   # the child keeps its own copy
            return subprocess.Popen(cmds[name], stdout=log, stderr=subprocess.STDOUT)

    running = {i: (lane[0], launch(lane[0])) for i, lane in enumerate(lanes)}
    queued = {i: list(lane[1:]) for i, lane in enumerate(lanes)}
    try:
        while running:
            time.sleep(0.5)
            for i, (name, proc) in list(running.items()):
                if proc.poll() is None:
                    continue
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {name}.log)"
                print(f"[{time.perf_counter() - start:6.0f} s] {name} {status}", flush=True)
                if proc.returncode:
                    failed.append(name)
                del running[i]
                if queued[i]:
                    nxt = queued[i].pop(0)
                    running[i] = (nxt, launch(nxt))
    except KeyboardInterrupt:
        for _, proc in running.values():
            proc.terminate()
        raise
    print(f"all trainers finished in {time.perf_counter() - start:.0f} s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
