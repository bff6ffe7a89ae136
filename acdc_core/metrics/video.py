"""VBench-style video metrics (Huang et al. 2024): the dimensions the paper's Table 3 reports, computed as VBench
computes them but in this project, on models you placed -- "VBench-style", not VBench's own numbers (those come
only from the official package, run in its own environment).

Each takes a video's frames [H, W, 3] uint8 and returns per-frame values (NaN where a frame has none) and the
video's score:

- ``subject_consistency`` (DINO ViT-B/16 [CLS], ``features.ClsFeatures``) and ``background_consistency`` (CLIP
  ViT-B/32 image embeddings, ``features.ClipImageFeatures``): at frame t >= 2, the mean of max(0, cos(f_t,
  f_{t-1})) and max(0, cos(f_t, f_1)); the video's score is the mean over t >= 2 (``consistency``);
- ``aesthetic``: LAION's aesthetic predictor, a linear head on CLIP ViT-L/14's unit-length image embedding, divided
  by 10 (VBench's scale, 0..1), per frame; the video's score is the mean (``Aesthetic``);
- ``dynamic_degree``: optical flow between consecutive frames (``flow(a, b) -> [2, H, W]`` in pixels; RAFT, a
  torchvision model, ``RaftFlow``); a step counts as moving when the mean of its top 5% flow magnitudes exceeds
  6 x min(H, W) / 256; the video is dynamic (1.0) when at least round(4 x frames / 16) steps move
  (``dynamic_degree``).

VBench samples some dimensions at a lower frame rate and crops its own way; these follow its formulas on the frames
they are given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from ..images import enlarge_factor

__all__ = ["consistency", "Aesthetic", "dynamic_degree", "moving_steps", "RaftFlow", "VBenchStyleMetric"]


def consistency(features: np.ndarray) -> tuple[list[float], float]:
    """(per frame, video) VBench consistency of frame features [T, D]: frame 1 NaN."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise InvalidInputError(f"consistency needs the features of 2 or more frames as [T, D]; got {f.shape}.")
    unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    previous = np.maximum(0.0, (unit[1:] * unit[:-1]).sum(1))
    first = np.maximum(0.0, unit[1:] @ unit[0])
    per_frame = (previous + first) / 2
    return [float("nan")] + per_frame.tolist(), float(per_frame.mean())


class Aesthetic:
    """LAION's aesthetic predictor (``sa_0_4_vit_l_14_linear``): Linear(768, 1) on CLIP ViT-L/14's unit image
    embedding. ``head`` is a safetensors file with ``weight`` [1, D] and ``bias`` [1]."""

    def __init__(self, clip_features, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.clip = clip_features
        self.weight, self.bias = weight.double(), bias.double()

    @classmethod
    def load(cls, clip_folder, head_file, device: str = "cpu") -> "Aesthetic":
        from safetensors.torch import load_file

        from ..weights import check_safetensors, is_pickle
        from .features import ClipImageFeatures

        path = Path(head_file).expanduser()
        how = ("LAION's sa_0_4_vit_l_14_linear.pth (github.com/LAION-AI/aesthetic-predictor), converted once by you "
               "to safetensors: safetensors.torch.save_file(torch.load(PTH, weights_only=True), FILE)")
        if not path.is_file():
            raise InvalidInputError(f"no aesthetic head at {path}: place {how}.")
        if is_pickle(path):
            raise InvalidInputError(f"{path.name} is a pickle; this engine loads safetensors only: use {how}.")
        shapes = check_safetensors(path)
        if set(shapes) != {"weight", "bias"} or len(shapes["weight"]) != 2 or shapes["weight"][0] != 1:
            raise InvalidInputError(f"{path.name} is not a linear head (weight [1, D], bias [1]); got "
                                    f"{sorted(shapes)}: use {how}.")
        state = load_file(str(path))
        clip = ClipImageFeatures.from_folder(clip_folder, device)
        width = int(clip.model.config.projection_dim)
        if shapes["weight"][1] != width:
            raise InvalidInputError(f"the aesthetic head takes {shapes['weight'][1]}-wide embeddings but the CLIP at "
                                    f"{clip_folder} makes {width}-wide ones: the head goes with CLIP ViT-L/14.")
        return cls(clip, state["weight"], state["bias"])

    def score(self, frames: Sequence[np.ndarray]) -> tuple[list[float], float]:
        f = torch.as_tensor(self.clip.features(frames))
        unit = f / f.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        per_frame = ((unit @ self.weight.T).squeeze(-1) + self.bias) / 10
        return per_frame.tolist(), float(per_frame.mean())


def moving_steps(frames: Sequence[np.ndarray], flow: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[bool]:
    """Whether each consecutive step moves: the mean of its top 5% flow magnitudes over 6 x min(H, W) / 256."""
    if len(frames) < 2:
        raise InvalidInputError("dynamic degree needs 2 or more frames.")
    h, w = np.asarray(frames[0]).shape[:2]
    threshold = 6.0 * min(h, w) / 256.0
    out = []
    for a, b in zip(frames[:-1], frames[1:]):
        field = np.asarray(flow(np.asarray(a), np.asarray(b)), dtype=np.float64)
        if field.shape != (2, h, w):
            raise InvalidInputError(f"the flow model returned {field.shape}; expected [2, {h}, {w}].")
        magnitude = np.sort(np.hypot(field[0], field[1]).ravel())
        top = magnitude[-max(1, int(0.05 * magnitude.size)):]           # VBench: int(h * w * 0.05)
        out.append(bool(top.mean() > threshold))
    return out


def dynamic_degree(frames: Sequence[np.ndarray], flow) -> tuple[list[float], float]:
    """(per frame: 1.0 where the step into it moves, NaN at frame 1; video: 1.0 when dynamic, else 0.0)."""
    steps = moving_steps(frames, flow)
    needed = round(4 * len(frames) / 16)
    return [float("nan")] + [float(s) for s in steps], float(sum(steps) >= needed)


class RaftFlow:
    """torchvision's RAFT (``raft_large``), weights from a local safetensors file of its state dict."""

    def __init__(self, model, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = device

    @classmethod
    def load(cls, weights_file, device: str = "cpu") -> "RaftFlow":
        from safetensors.torch import load_file

        from ..weights import check_safetensors, is_pickle

        try:
            from torchvision.models.optical_flow import raft_large
        except (ImportError, RuntimeError) as error:
            raise InvalidInputError(f"dynamic degree needs torchvision's RAFT, which does not import here ({error}); "
                                    "run it where torchvision matches the installed torch.") from None
        path = Path(weights_file).expanduser()
        if not path.is_file() or is_pickle(path):
            raise InvalidInputError(f"no RAFT weights at {path}: place torchvision's raft_large state dict as "
                                    "safetensors (Raft_Large_Weights.C_T_SKHT_V2, converted once by you).")
        check_safetensors(path)
        model = raft_large(weights=None)
        model.load_state_dict(load_file(str(path)), strict=True)
        return cls(model, device)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow [2, H, W] in pixels of the frames given. RAFT's correlation pyramid needs sides of 128 px or more:
        smaller frames are enlarged by a whole factor first (bilinear) and the flow brought back (divided by it)."""
        def tensor(x):
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float() / 127.5 - 1
            return t.to(self.device)

        factor = enlarge_factor(*a.shape[:2])
        x, y = tensor(a), tensor(b)
        if factor > 1:
            x, y = (torch.nn.functional.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
                    for t in (x, y))
        big_h, big_w = x.shape[-2:]
        pad_h, pad_w = (-big_h) % 8, (-big_w) % 8          # RAFT wants sides divisible by 8
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            y = torch.nn.functional.pad(y, (0, pad_w, 0, pad_h), mode="replicate")
        field = self.model(x, y)[-1][:, :, :big_h, :big_w]
        if factor > 1:
            field = torch.nn.functional.avg_pool2d(field, factor) / factor
        return field[0].cpu().numpy()


class VBenchStyleMetric:
    """The VBench-style dimensions as a benchmark metric (``acdc_core.metrics``): per-frame columns of the
    dimensions whose models were given (``None``: left out)."""

    name = "vbench-style"

    def __init__(self, *, dino=None, clip_b32=None, aesthetic: "Aesthetic | None" = None, flow=None) -> None:
        self.dino, self.clip_b32, self.aesthetic, self.flow = dino, clip_b32, aesthetic, flow
        self.columns = tuple(c for c, m in (("subject_consistency", dino), ("background_consistency", clip_b32),
                                            ("aesthetic", aesthetic), ("dynamic", flow)) if m is not None)
        if not self.columns:
            raise InvalidInputError("the vbench-style metric needs at least one model: --dino (DINO ViT-B/16), "
                                    "--clip-b32 (CLIP ViT-B/32), --clip-l14 with --aesthetic-head, or --raft.")

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        out = {}
        if self.dino is not None:
            out["subject_consistency"] = consistency(self.dino.features(frames))[0]
        if self.clip_b32 is not None:
            out["background_consistency"] = consistency(self.clip_b32.features(frames))[0]
        if self.aesthetic is not None:
            out["aesthetic"] = self.aesthetic.score(frames)[0]
        if self.flow is not None:
            out["dynamic"] = dynamic_degree(frames, self.flow)[0]
        return out
