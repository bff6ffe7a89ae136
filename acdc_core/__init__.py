"""ACDC engine: autoregressive multimodal generation with diffusion correction. Never imports ComfyUI."""

__version__ = "0.2.0"
