"""Device and dtype choice, and moving models off the accelerator while another stage runs.

Nothing here hard-codes a device: the caller (ComfyUI's model management, the CLI's --device, a test)
decides; ``pick_device`` is only the headless default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch


def pick_device(requested: Optional[str] = None) -> torch.device:
    """The requested device, else the first available accelerator, else the CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: Optional[str] = None) -> torch.dtype:
    """float32 on the CPU (half precision is slow there); bfloat16 where supported, else float16."""
    if requested and requested != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                    "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[requested]
        except KeyError:
            from .errors import InvalidInputError
            raise InvalidInputError(
                f"unknown dtype {requested!r}; use auto, float32, float16 or bfloat16.") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


class Placement(Protocol):
    """Where a host keeps models: the story loop calls ``use(model)`` before each stage with the model it needs
    (an ARM, a corrector, a memory module: anything with ``to`` and ``modules``), or None."""

    def use(self, model: Any) -> Any: ...


@dataclass
class Offloader:
    """The headless ``Placement``: keeps at most one stage's model on the compute device when ``offload`` is on.

    ``use(model)`` moves ``model`` to ``device`` and, with offload, every other model it has placed to
    ``offload_device``. With offload off, each model stays where it was first put. Moving a model is not a
    change of its meaning, so this is not the kind of mutation ComfyUI's cache cares about; inside ComfyUI the
    node pack's bridge places models through ComfyUI's own model management instead.
    """

    device: torch.device
    offload: bool = True
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _placed: list = field(default_factory=list)
    _current: Any = None

    def use(self, model: Any) -> Any:
        if model is None or model is self._current or not model.modules():
            return model   # nothing to move (e.g. an HTTP endpoint has no weights here)
        if self.offload and self.device != self.offload_device:
            for other in self._placed:
                if other is not model:
                    other.to(self.offload_device)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        model.to(self.device)
        if not any(m is model for m in self._placed):
            self._placed.append(model)
        self._current = model
        return model
