"""The statistics every table of the project uses: paired bootstrap intervals of differences between variants, and
the Frechet distance of two feature sets (FID's formula).

The Frechet distance (Heusel et al. 2017) of two sets of frames' features, against a reference set (the paper:
pseudo ground truth, SDXL-Lightning's frames of the same prompts; the toy world: the renderer's true frames):

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

computed in float64 as torchmetrics' ``FrechetInceptionDistance`` computes it (the trace of the square root from
the eigenvalues of S_a S_b; covariances with N - 1), which a test checks it equals on the same features. The features
are a backbone's (``metrics.features``: FD_CLIP, FD_DINOv2) or FID's own Inception-v3 (an external evaluator,
``bench.external``); every table names them. ``fid_table`` scores one benchmark's variants: the distance over all
frames of all items, a bootstrap interval over items (items resampled with their reference frames: the same
stories on both sides), and the distance at each frame index.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .errors import InvalidInputError

__all__ = ["bootstrap_difference", "frechet_distance", "fid_table"]


def bootstrap_difference(a: np.ndarray, b: np.ndarray, *, frames: slice, samples: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """Mean of (a - b) over ``frames`` and stories, with a 95% percentile interval from resampling
    stories (paired: the same stories and seeds under both variants). ``a``, ``b``: [stories, frames]; NaN marks a
    frame where the score does not apply (left out; a story with no score in ``frames`` is left out)."""
    d = a[:, frames] - b[:, frames]
    counts = np.isfinite(d).sum(axis=1)
    diff = np.where(np.isfinite(d), d, 0.0).sum(axis=1)[counts > 0] / counts[counts > 0]   # per story
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


# -- the Frechet distance of two feature sets (FID's formula) ----------------------------------------------------

def _moments(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    mean = t.mean(0)
    centred = t - mean
    return mean, centred.T @ centred / (t.shape[0] - 1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of two feature sets [N, D] and [M, D] (N, M >= 2)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"the Frechet distance needs two [N, D] feature sets of one width; got {a.shape} and "
                                f"{b.shape}.")
    if len(a) < 2 or len(b) < 2:
        raise InvalidInputError(f"the Frechet distance needs at least 2 frames per set; got {len(a)} and {len(b)}.")
    mu_a, s_a = _moments(a)
    mu_b, s_b = _moments(b)
    root_trace = torch.linalg.eigvals(s_a @ s_b).sqrt().real.sum()
    return float(((mu_a - mu_b) ** 2).sum() + s_a.trace() + s_b.trace() - 2 * root_trace)


def fid_table(features: Mapping[str, Sequence[np.ndarray]], reference: Sequence[np.ndarray], *,
              resamples: int = 100, seed: int = 0, backbone: str = "") -> list[dict]:
    """One row per variant: ``features[variant][i]`` is item i's frames' features [F_i, D], ``reference[i]`` its
    reference frames' [R_i, D]. Columns: all frames (mean of nothing: one distance) with a bootstrap interval over
    items, and the distance at each frame index."""
    if resamples < 0:
        raise InvalidInputError(f"resamples must be >= 0, got {resamples}.")
    n = len(reference)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    ref_all = np.concatenate(list(reference))
    frames = max(len(f) for rows in features.values() for f in rows)
    out = []
    for variant, rows in features.items():
        if len(rows) != n:
            raise InvalidInputError(f"{variant}: {len(rows)} items' features but {n} items of reference.")
        row = {"variant": variant, "features": backbone, "items": n,
               "all frames": round(frechet_distance(np.concatenate(list(rows)), ref_all), 4)}
        if resamples:
            values = [frechet_distance(np.concatenate([rows[i] for i in d]), np.concatenate([reference[i] for i in d]))
                      for d in draws]
            row["ci95_low"] = round(float(np.percentile(values, 2.5)), 4)
            row["ci95_high"] = round(float(np.percentile(values, 97.5)), 4)
        for k in range(frames):
            a = [r[k] for r in rows if len(r) > k]
            b = [r[k] for r in reference if len(r) > k]
            row[f"f{k + 1}"] = round(frechet_distance(np.stack(a), np.stack(b)), 4) if len(a) > 1 else None
        out.append(row)
    return out
