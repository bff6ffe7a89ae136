"""Offline converters from a model's published release to a folder the engine loads (safetensors only).

Each converter runs once, at conversion time, in an environment the user trusts; the engine never imports
them while it runs a story. ``lwm``: LargeWorldModel's JAX checkpoints (``LWM-Chat-{32K,128K,1M}-Jax``) to a
unified-vocabulary ARM folder (``acdc convert lwm SRC DST``).
"""
from .lwm import check_converted, convert_lwm

__all__ = ["check_converted", "convert_lwm"]
