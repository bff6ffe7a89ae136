"""SDEdit Correct (ACDC step 4): noise the ARM's frame to t' and denoise it with the diffusion model."""
from __future__ import annotations

from acdc_core.images import bhwc_to_nchw, nchw_to_bhwc, resize_to
from . import bridge
from .values import CATEGORY, DM, TOKENS, seed_input, single_image, tooltip


def frame_index(tokens) -> int:
    """0-based index of the frame being made (0 when the node is used outside a story)."""
    return tokens.index if tokens is not None else 0


def correction_hw(dm, size: int) -> tuple[int, int]:
    return (size, size) if size else tuple(dm.native_size)


def bhwc(image):
    """A ComfyUI IMAGE [B, H, W, 3] -> engine [B, 3, H, W] (float), or a clear error."""
    if not hasattr(image, "ndim") or image.ndim != 4 or image.shape[-1] != 3:
        return single_image(image, "image")  # raises, naming the shape it got
    return bhwc_to_nchw(image.float())


def corrects(frame: int, correct_frames: int) -> bool:
    """ACDC #k: only the first k frames are corrected; k = 0 corrects all."""
    return correct_frames == 0 or frame < correct_frames


class SDEditCorrect:
    DESCRIPTION = ("ACDC step 4: SDEdit. Noises the ARM's frame to diffusion time t' and denoises it back with the "
                   "diffusion model, guided by the frame's prompt: local artifacts are fixed while the content "
                   "stays. The frame is corrected at the model's own size (512 for SD1.5). Cancel stops it between "
                   "steps. \"50 DDIM steps at t'=0.5\" runs the 25 steps below t', as in the paper.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "correct"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The corrected frame at the correction size (the frame unchanged when it is not corrected).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dm": (DM, tooltip("From Load Diffusion Model.")),
                "image": ("IMAGE", tooltip("The ARM's frame (from VQ Detokenize).")),
                "prompt": ("STRING", tooltip("The diffusion model's prompt (from LLM Memory Prompt, or the raw "
                                             "story line for the no-memory ablation).", forceInput=True,
                                             lazy=True)),
                "t_prime": ("FLOAT", tooltip("t': how far the frame is noised, as a fraction of diffusion time. "
                                             "Higher changes more. The paper uses 0.4-0.5 for images.",
                                             default=0.5, min=0.01, max=1.0, step=0.01)),
                "steps": ("INT", tooltip("Length of the full DDIM schedule; only the steps at or below t' run "
                                         "(50 at t'=0.5 runs 25).", default=50, min=1, max=1000)),
                "cfg": ("FLOAT", tooltip("Classifier-free guidance of the diffusion model (paper: 7.5).",
                                         default=7.5, min=0.0, max=30.0, step=0.1)),
                "seed": seed_input("Noise seed; frame k uses seed + k - 1 (as the headless engine does)."),
                "negative_prompt": ("STRING", tooltip("What the diffusion model should avoid.", default="")),
                "correct_frames": ("INT", tooltip("ACDC #k: correct only the first k frames; later frames pass "
                                                  "through as the ARM made them. 0 corrects every frame.",
                                                  default=0, min=0, max=10000)),
                "correction_size": ("INT", tooltip("Side in pixels the frame is corrected at; 0 = the model's "
                                                   "native size (512 SD1.5, 1024 SDXL).", default=0, min=0,
                                                   max=4096, step=8)),
            },
            "optional": {
                "tokens": (TOKENS, tooltip("The frame's tokens (from ARM Token Generator): tells this node which "
                                           "frame it corrects, for the per-frame seed and ACDC #k.")),
            },
        }

    def check_lazy_status(self, correct_frames=0, tokens=None, prompt=None, **_):
        # A frame ACDC #k leaves alone needs no prompt, so its memory LLM query never runs.
        if prompt is None and corrects(frame_index(tokens), correct_frames):
            return ["prompt"]
        return []

    def correct(self, dm, image, t_prime, steps, cfg, seed, negative_prompt, correct_frames, correction_size,
                prompt=None, tokens=None):
        index = frame_index(tokens)
        if not corrects(index, correct_frames):
            return (image,)  # the ARM's frame goes on as it is; Re-Tokenize then keeps its tokens
        corrector = dm.use()
        pixels = bhwc(image)                                      # [B, H, W, 3] -> [B, 3, H, W]
        pixels = resize_to(pixels, correction_hw(corrector, correction_size))
        corrected = corrector.correct(pixels, prompt or "", strength=t_prime, steps=steps, guidance_scale=cfg,
                                      seed=int(seed) + index, negative_prompt=negative_prompt,
                                      progress=bridge.progress())
        return (nchw_to_bhwc(corrected),)                         # -> IMAGE [B, H', W', 3]


NODES = {"ACDC_SDEditCorrect": (SDEditCorrect, "SDEdit Correct (ACDC)")}
