"""Errors the engine raises on bad input, before any expensive work starts.

Every message names what is wrong and what to do about it. The classes also derive from the
matching built-in exception so callers that catch ``ValueError``/``FileNotFoundError`` keep working.
"""
from __future__ import annotations

import math


class ACDCError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(ACDCError, ValueError):
    """A value given by the user is out of range, of the wrong shape, or empty."""


class MissingModelFilesError(ACDCError, FileNotFoundError):
    """A model folder or checkpoint is missing, or lacks files it needs."""


class UnknownModelFamilyError(ACDCError, ValueError):
    """A model folder holds a model family the engine has no backend for."""


class EndpointUnreachableError(ACDCError, ConnectionError):
    """A configured HTTP endpoint could not be reached or answered with an error."""


class MemoryAnswerError(ACDCError, ValueError):
    """The memory LLM answered with no usable prompt and strict memory makes that an error."""


def check_number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 hint: str = "") -> float:
    """``value`` as a float if it is a finite real number in [minimum, maximum], else a clear error naming ``name``.

    The one rule for every float setting (the CLI, the engine and the nodes): NaN and infinity are refused
    (``nan < 0`` is False, so a bare range check lets NaN through), and so are bools and strings.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number{_bounds(minimum, maximum)}; got {value!r}.{hint}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidInputError(f"{name} must be{_bounds(minimum, maximum)}; got {value!r}.{hint}")
    return float(value)


def _bounds(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f" >= {minimum:g}"
    return f" <= {maximum:g}" if maximum is not None else ""


MAX_SEED = 2**64 - 1     # the largest seed a torch.Generator takes


def check_seed(value, name: str = "seed") -> int:
    """``value`` if it is a whole number in [0, 2^64 - 1] (what torch generators take), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InvalidInputError(f"{name} must be a whole number in [0, 2^64 - 1], got {value!r}.")
    return value


def quote_head(text: str, limit: int = 60) -> str:
    """A user's text for a message: quoted, cut to its first ``limit`` characters (a 10,000-character prompt is
    named by its head and its length, not printed whole)."""
    text = str(text)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
