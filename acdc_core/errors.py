"""Errors the engine raises on bad input, before any expensive work starts.

Every message names what is wrong and what to do about it. The classes also derive from the
matching built-in exception so callers that catch ``ValueError``/``FileNotFoundError`` keep working.
"""
from __future__ import annotations


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
