"""The merge step: score every finished item of a benchmark folder with the metrics and write the tables.

It reads only what the runs wrote (``bench.json``, ``items.jsonl``, one folder per variant and item), in the item
set's order, so the tables do not depend on how the items were sharded or in what order they finished. An item that
is missing or damaged is refused with its name (re-run ``acdc bench run`` to redo it), never merged.

Tables (``OUT/merged/``): per metric, the mean of every variant at every frame index with a 95% bootstrap interval
over items; the paired differences that matter (ACDC's variants against ARM only, ACDC against ACDC without memory)
over the later half of the frames and over all frames; what the story shows and what went back into the ARM's
context; and the cost per frame and stage (seconds, peak memory) with ACDC's overhead over ARM only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..stats import bootstrap_difference, fid_table
from .items import read_items
from .reference import read_reference
from .store import (BENCH_FILE, ITEMS_FILE, RUN_FILE, check_item, item_dir, read_frames, segment_label,
                    segment_names, video_segments, window_of)
from .variants import slug

__all__ = ["collect", "score", "merge", "fid_tables", "video_score_tables", "COMPARISONS"]

# (a, b): a - b, where both variants ran
COMPARISONS = (("ACDC", "ARM only"), ("ACDC", "ACDC w/o memory"), ("ACDC #2", "ARM only"),
               ("ACDC w/o memory", "ARM only"), ("ACDC", "DM alone"),
               ("ACDC (first window)", "ARM only"), ("ACDC (every window)", "ARM only"),
               ("ACDC (every window)", "ACDC (first window)"),
               ("ACDC (first window) t'=0.4", "ACDC (first window)"), ("ACDC (first window) t'=0.6", "ACDC (first window)"))
KINDS = ("shown", "context")
# Columns that are 1 at frame 1 by definition (consistency with frame 1): their earlier frames start at frame 2.
ANCHORED = ("consistent", "consistency_first")


def collect(out, *, verify: bool = True) -> tuple[dict, list, list[str]]:
    """(bench identity, items, variant names) of a benchmark folder whose every item is complete (``verify``: the
    files of every item re-hashed; without it, only the bench's own records are read)."""
    out = Path(out)
    try:
        identity = json.loads((out / BENCH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InvalidInputError(f"{out} holds no benchmark ({BENCH_FILE} is missing or unreadable); run "
                                "`acdc bench run --out` there first.") from None
    items = read_items(out / ITEMS_FILE)
    variants = [v["name"] for v in identity["variants"]]
    bad = [(v, item.id, why) for item in items for v in variants
           if verify and (why := check_item(item_dir(out, slug(v), item.id))) is not None]
    if bad:
        shown = "; ".join(f"{v} / {i}: {why}" for v, i, why in bad[:5])
        raise InvalidInputError(f"{len(bad)} of {len(items) * len(variants)} runs in {out} are not complete ({shown}"
                                f"{' ...' if len(bad) > 5 else ''}). Run the same `acdc bench run` again to finish "
                                "them (every shard), then merge.")
    return identity, items, variants


def score(out, metrics: Sequence) -> dict:
    """{kind: {variant: {column: array [items, frames]}}} for every metric's columns, and the runs' cost records."""
    out = Path(out)
    identity, items, variants = collect(out)
    frames = max(item.frames or len(item.prompts) for item in items)
    scores: dict = {kind: {v: {} for v in variants} for kind in KINDS}
    runs: dict = {v: [] for v in variants}
    for v in variants:
        for item in items:
            folder = item_dir(out, slug(v), item.id)
            runs[v].append(json.loads((folder / RUN_FILE).read_text(encoding="utf-8")))
            for kind in KINDS:
                pictures = read_frames(folder, kind)
                if not pictures:
                    continue
                for metric in metrics:
                    for column, values in metric.score(pictures, item).items():
                        row = np.full(frames, np.nan)
                        row[:len(values)] = values
                        scores[kind][v].setdefault(column, []).append(row)
    arrays = {kind: {v: {c: np.stack(rows) for c, rows in cols.items()} for v, cols in by_v.items() if cols}
              for kind, by_v in scores.items()}
    return {"identity": identity, "items": [i.id for i in items], "frames": frames, "scores": arrays, "runs": runs}


def _cell(values: np.ndarray) -> tuple[float, float, float]:
    return bootstrap_difference(values[:, None], np.zeros((len(values), 1)), frames=slice(None))


def _per_frame_rows(scores: dict, frames: int) -> list[dict]:
    rows = []
    for v, columns in scores.items():
        for column, values in columns.items():
            row = {"variant": v, "metric": column}
            for i in range(frames):
                mean, low, high = _cell(values[:, i])
                row[f"f{i + 1}"] = None if np.isnan(mean) else [round(mean, 4), round(low, 4), round(high, 4)]
            rows.append(row)
    return rows


def _split(identity: dict, frames: int) -> int:
    """Where a benchmark's later frames start (0-based): after the first window for videos (the paper's frames
    L+1..N), else the later half."""
    window = window_of(identity)
    return frames // 2 if window is None else window


def _differences(scores: dict, frames: int, half: int, video: bool = False) -> list[dict]:
    later = slice(half, None)
    rows = []
    for a, b in COMPARISONS:
        if a not in scores or b not in scores:
            continue
        for column in scores[a]:
            if column not in scores[b]:
                continue
            for span, name in ((later, f"{later.start + 1}-{frames}"), (slice(None), f"1-{frames}")):
                mean, low, high = bootstrap_difference(scores[a][column], scores[b][column], frames=span)
                rows.append(_row(f"{a} - {b}", column, name, mean, low, high))
    # error accumulation (the paper's claim): each variant's later frames against its earlier ones, per item. In a
    # video the judge reads every frame against frame 1 (and motion from frame 2), so the earlier frames are 2..L,
    # and the last window is compared too.
    spans = [(slice(half, None), f"{half + 1}-{frames}")]
    if video:
        spans.append((slice(frames - half, None), f"{frames - half + 1}-{frames}"))
    for v, columns in scores.items():
        for column, values in columns.items():
            first = 1 if video or column in ANCHORED else 0
            if half - first < 1:
                continue
            early = _item_mean(values[:, first:half])
            for span, name in spans:
                mean, low, high = bootstrap_difference(_item_mean(values[:, span]), early, frames=slice(None))
                rows.append(_row(f"{v}: later - earlier frames", column, f"{name} vs {first + 1}-{half}", mean, low,
                                 high))
    return rows


def _item_mean(values: np.ndarray) -> np.ndarray:
    """[items, 1]: each item's mean over the frames where the score applies (NaN where it applies to none)."""
    counts = np.isfinite(values).sum(axis=1, keepdims=True)
    sums = np.where(np.isfinite(values), values, 0.0).sum(axis=1, keepdims=True)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _row(difference: str, metric: str, frames: str, mean: float, low: float, high: float) -> dict:
    return {"difference": difference, "metric": metric, "frames": frames, "mean": round(mean, 4),
            "ci95_low": round(low, 4), "ci95_high": round(high, 4), "excludes_zero": bool(low > 0 or high < 0)}


def _cost_rows(runs: dict) -> list[dict]:
    rows, totals = [], {}
    for v, records in runs.items():
        frames = sum(len(r["frames"]) for r in records)
        stages: dict = {}
        for r in records:
            for name, c in r["cost"].items():
                s = stages.setdefault(name, {"seconds": 0.0, "peak_mb": 0.0})
                s["seconds"] += c["seconds"]
                s["peak_mb"] = max(s["peak_mb"], c["peak_mb"])
        totals[v] = sum(r["seconds"] for r in records) / frames
        for name, s in stages.items():
            rows.append({"variant": v, "stage": name, "seconds_per_frame": round(s["seconds"] / frames, 4),
                         "peak_mb": s["peak_mb"]})
        rows.append({"variant": v, "stage": "total (wall)", "seconds_per_frame": round(totals[v], 4),
                     "peak_mb": max((s["peak_mb"] for s in stages.values()), default=0.0)})
    if "ARM only" in totals and totals["ARM only"] > 0:
        for row in rows:
            if row["stage"] == "total (wall)":
                row["x ARM only"] = round(totals[row["variant"]] / totals["ARM only"], 2)
    return rows


def _markdown(rows: list[dict], title: str, notes: str = "") -> str:
    if not rows:
        return f"# {title}\n\n(nothing)\n"
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(value) -> str:
        if isinstance(value, list):
            return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    lines = [f"# {title}", "", notes, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def fid_tables(out, backbone, *, resamples: int = 100) -> tuple[dict, dict]:
    """(reference source, {"fid_shown": rows, "fid_context": rows}): the Frechet distance of every variant's frames
    to the reference frames (``reference.py``) in ``backbone``'s features (``metrics.features``)."""
    _, items, variants = collect(out, verify=False)
    source, reference = read_reference(out, items)
    ref = [backbone.features(frames) for frames in reference]
    tables = {}
    for kind in KINDS:
        features = {}
        for v in variants:
            rows = [read_frames(item_dir(out, slug(v), item.id), kind) for item in items]
            if all(rows):
                features[v] = [backbone.features(frames) for frames in rows]
        tables[f"fid_{kind}"] = fid_table(features, ref, resamples=resamples, backbone=backbone.name)
    return source, tables


def video_score_tables(out, videos) -> dict:
    """{"vbench_<kind>": rows, "vbench_differences_<kind>": rows}: per variant and dimension, the mean per-video score
    (``videos``: ``external.ExternalVideoScores``) over all frames and over frames L+1..N scored as a video of their
    own, with a bootstrap interval over items; and the paired differences of ``COMPARISONS``."""
    identity, items, variants = collect(out, verify=False)
    window = window_of(identity)
    if window is None:
        raise InvalidInputError(f"{out} is a story benchmark: the official VBench's tables are for videos.")
    spans = segment_names(window)
    tables = {}
    for kind in KINDS:
        values: dict = {}       # variant -> dimension -> [items, spans]
        for v in variants:
            for i, item in enumerate(items):
                frames = read_frames(item_dir(out, slug(v), item.id), kind)
                for s, segment in enumerate(video_segments(len(frames), window) if frames else ()):
                    what = f"{v} / {item.id} ({kind}, frames {segment_label(segment)})"
                    for dimension, x in videos.score(frames[segment[0]:segment[1]], what).items():
                        values.setdefault(v, {}).setdefault(dimension, np.full((len(items), len(spans)), np.nan))[i, s] = x
        rows, differences = [], []
        for v, dimensions in values.items():
            for dimension, a in dimensions.items():
                row = {"variant": v, "dimension": dimension}
                for s, span in enumerate(spans):
                    mean, low, high = _cell(a[:, s])
                    row[span] = None if np.isnan(mean) else [round(mean, 4), round(low, 4), round(high, 4)]
                rows.append(row)
        for a, b in COMPARISONS:
            for dimension in values.get(a, {}) if b in values else ():
                for s, span in enumerate(spans):
                    mean, low, high = bootstrap_difference(values[a][dimension][:, s:s + 1],
                                                           values[b][dimension][:, s:s + 1], frames=slice(None))
                    differences.append(_row(f"{a} - {b}", dimension, span, mean, low, high))
        tables[f"vbench_{kind}"], tables[f"vbench_differences_{kind}"] = rows, differences
    return tables


def merge(out, metrics: Sequence, *, target: Optional[Path] = None, fid=None, fid_resamples: int = 100,
          videos=None) -> dict:
    """Score ``out`` and write ``merged/`` (Markdown tables and ``merged.json``); returns what was written. ``fid``:
    a feature backbone (``metrics.features``) to add the FID tables with, against ``OUT/reference``; ``videos``: an
    external evaluator's per-video scores (``external.ExternalVideoScores``, the official VBench) to add its tables."""
    out = Path(out)
    result = score(out, metrics)
    frames, n = result["frames"], len(result["items"])
    tables = {}
    for kind in KINDS:
        scores = result["scores"][kind]
        tables[f"per_frame_{kind}"] = _per_frame_rows(scores, frames)
        tables[f"differences_{kind}"] = _differences(scores, frames, _split(result["identity"], frames),
                                                     result["identity"].get("kind") == "video")
    tables["cost"] = _cost_rows(result["runs"])
    source = None
    if fid is not None:
        source, fids = fid_tables(out, fid, resamples=fid_resamples)
        tables.update(fids)
    if videos is not None:
        tables.update(video_score_tables(out, videos))
    target = Path(target) if target else out / "merged"
    target.mkdir(parents=True, exist_ok=True)
    what = {"shown": "the frames shown (the DM's output where corrected)",
            "context": "the frames as they went back into the ARM's context (re-encoded with its tokenizer, decoded)"}
    memory_kind = next((r["memory_kind"] for rs in result["runs"].values() for r in rs), "")
    for kind in KINDS:
        (target / f"per_frame_{kind}.md").write_text(_markdown(
            tables[f"per_frame_{kind}"], f"Per frame index: {what[kind]}",
            f"{n} items; mean [95% bootstrap interval over items, 2000 resamples]."), encoding="utf-8")
        (target / f"differences_{kind}.md").write_text(_markdown(
            tables[f"differences_{kind}"], f"Paired differences: {what[kind]}",
            f"{n} items; paired bootstrap over items (2000 resamples), 95% percentile interval."), encoding="utf-8")
    for kind in KINDS if fid is not None else ():
        (target / f"fid_{kind}.md").write_text(_markdown(
            tables[f"fid_{kind}"], f"Frechet distance to the reference frames: {what[kind]}",
            f"{n} items; reference: {source}; {fid.description}; ci95: bootstrap over items ({fid_resamples} "
            "resamples, each item with its "
            "reference frames); fN: at frame index N alone."), encoding="utf-8")
    for kind in KINDS if videos is not None else ():
        (target / f"vbench_{kind}.md").write_text(_markdown(
            tables[f"vbench_{kind}"], f"Official VBench 0.1.5 (per video): {what[kind]}",
            f"{n} items; VBench 0.1.5's own dimension functions on its own models (`acdc bench external --evaluator "
            "vbench`); 'frames L+1-N': those frames scored as a video of their own; mean [95% bootstrap interval over "
            "items].") + "\n" + _markdown(
            tables[f"vbench_differences_{kind}"], "Paired differences", "Paired bootstrap over items (2000 "
            "resamples), 95% percentile interval."), encoding="utf-8")
    (target / "cost.md").write_text(_markdown(
        tables["cost"], "Cost per frame and stage",
        f"Seconds per frame (all items of the variant), peak memory: {memory_kind}. 'total (wall)' includes what "
        "no stage timed; 'x ARM only': its ratio to ARM only's."), encoding="utf-8")
    (target / "merged.json").write_text(json.dumps(
        {"items": result["items"], "identity": result["identity"], "tables": tables,
         "scores": {kind: {v: {c: a.tolist() for c, a in cols.items()} for v, cols in by_v.items()}
                    for kind, by_v in result["scores"].items()}}, indent=1), encoding="utf-8")
    return {"target": target, "tables": tables, "result": result}
