"""ARM backends: one small protocol (``base``), one file per model family, and ``load_arm``.

Backends are imported lazily by ``load_arm`` so importing this package stays cheap.
"""
from .base import ARMBackend, ARMContext, CacheMemo, Chunk, SamplingSettings, check_images
from .registry import FAMILIES, check_arm_folder, detect_family, load_arm

__all__ = ["ARMBackend", "ARMContext", "CacheMemo", "Chunk", "SamplingSettings", "check_images",
           "FAMILIES", "check_arm_folder", "detect_family", "load_arm"]
