"""How t' (SDEdit's strength) maps to denoising steps: the one rule, used to check settings before any model
loads and to pick the timesteps the corrector runs.

The schedule is the ``steps``-step "trailing" one of ``T`` training timesteps (T = 1000 for Stable Diffusion):
``t_k = round(T - k * T / steps) - 1`` for k = 0..steps-1, so it starts at t = T - 1 (pure noise) and timestep t
stands for diffusion time (t + 1) / T. SDEdit keeps exactly the timesteps with ``(t + 1) / T <= t'``. Whenever
``steps`` divides T that is ``floor(t' * steps)`` of them: t' = 0.5 with 50 steps runs 25, from t = 499.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidInputError

TRAIN_TIMESTEPS = 1000   # Stable Diffusion's, and the default of every diffusers scheduler


def trailing_timesteps(steps: int, train_steps: int = TRAIN_TIMESTEPS) -> np.ndarray:
    """The trailing schedule ``[steps]`` (descending), as diffusers builds it for ``timestep_spacing="trailing"``."""
    return np.round(np.arange(train_steps, 0, -train_steps / steps)).astype(np.int64) - 1


def kept(timesteps, strength: float, train_steps: int = TRAIN_TIMESTEPS):
    """Which of ``timesteps`` lie at or below t': a boolean mask (numpy or torch, like its input)."""
    # A little slack so that e.g. 0.57 * 1000 = 569.999... still keeps t = 569.
    return timesteps + 1 <= strength * train_steps + 1e-6


def steps_run(strength: float, steps: int, train_steps: int = TRAIN_TIMESTEPS) -> int:
    """How many denoising steps SDEdit runs at t' = ``strength`` out of a ``steps``-step schedule."""
    return int(kept(trailing_timesteps(steps, train_steps), strength, train_steps).sum())


def check_range(strength: float, steps: int, name: str = "t'") -> None:
    """Raise a clear error unless t' is in (0, 1] and steps a whole number >= 1 (what a setting alone can say)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InvalidInputError(f"steps must be a whole number >= 1, got {steps!r}.")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:  # and NaN
        raise InvalidInputError(
            f"{name} must be in (0, 1]: it is the fraction of diffusion time the frame is noised to; got "
            f"{strength!r}. The paper uses 0.4-0.5 for images.")


def check_strength(strength: float, steps: int, name: str = "t'", train_steps: int = TRAIN_TIMESTEPS) -> int:
    """Raise a clear error unless t' is in (0, 1] and leaves at least one step to run; return the step count."""
    check_range(strength, steps, name)
    count = steps_run(strength, steps, train_steps)
    if count == 0:
        needed = max(steps + 1, math.ceil(1 / strength - 1e-9))
        while not steps_run(strength, needed, train_steps):
            needed += 1
        raise InvalidInputError(
            f"{name} {strength} with {steps} steps leaves no denoising step to run (the finest step is "
            f"{train_steps // steps} of {train_steps} timesteps); use at least {needed} steps or a higher {name}.")
    return count
