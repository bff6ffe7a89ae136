"""The statistics every table of the project uses: paired bootstrap intervals of differences between variants."""
from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_difference"]


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
