"""Small, exact stand-ins for the ARM, the DM corrector and the memory LLM, to test the loop's logic.

They meet the same protocols as the real backends but their behaviour is simple enough to predict:
the fake ARM's "image" is a flat colour per token, so decode/encode are exact inverses on its grid.
"""
from __future__ import annotations

import torch

from acdc_core.arm.base import ARMContext, SamplingSettings
from acdc_core.progress import no_progress


class FakeARM:
    family = "fake"
    codebook = codebook_size = 16
    previews = False

    def __init__(self, size: int = 8, grid: int = 2):
        self.image_size = (size, size)
        self.grid = grid
        self.tokens_per_image = grid * grid
        self.device = torch.device("cpu")
        self.weights = torch.nn.Linear(1, 1)
        self.contexts_seen: list[ARMContext] = []
        self.moves: list[str] = []

    video_capable = True

    def sample_chunk(self, context, prompt, *, settings: SamplingSettings, generator, images_per_chunk=1,
                     continues=False, progress=no_progress):
        self.contexts_seen.append(context)
        # Depends on the seed and on every token already in context (so a swap changes what follows).
        offset = sum(int(c.tokens.sum()) for c in context.chunks)
        draw = torch.randint(0, self.codebook, (images_per_chunk, self.tokens_per_image), generator=generator)
        for k in range(self.tokens_per_image):
            progress("arm", k + 1, self.tokens_per_image)
        return (draw + offset) % self.codebook

    def fit_context(self, context, prompt, *, images_per_chunk=1, continues=False):
        """A window of ``context_window`` frames (None: no limit), by the engine's long-story policy."""
        from acdc_core.arm.decoding import window_policy

        window = getattr(self, "context_window", None)
        return next(i for i in window_policy(len(context)) if window is None or len(i) <= window)

    def decode(self, tokens):
        levels = tokens.float() / (self.codebook - 1)                      # [N, T]
        grid = levels.view(-1, 1, self.grid, self.grid).expand(-1, 3, -1, -1)
        return torch.nn.functional.interpolate(grid, size=self.image_size, mode="nearest")

    def encode(self, images):
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.mean(1, keepdim=True), self.grid)
        return (pooled.view(images.shape[0], -1) * (self.codebook - 1)).round().long()

    def to(self, device):
        self.moves.append(str(device))
        return self

    def modules(self):
        return {"weights": self.weights}


class FakeCorrector:
    """'Corrects' by pulling the image towards a grey level set by the prompt's length, by ``strength``."""

    kind = "fake"
    schedulers = ("ddim", "euler")
    image_multiple = 1
    text_window = 77

    def __init__(self, size: int = 16):
        self.native_size = (size, size)
        self.calls: list[dict] = []

    def fit_prompt(self, prompt: str) -> str:
        return " ".join(prompt.split()[:20])

    def target(self, prompt: str) -> float:
        return (len(prompt) % 10) / 9

    def correct(self, images, prompts, *, strength, steps=50, guidance_scale=7.5, seed=0, negative_prompt="",
                scheduler=None, mask=None, mask_dilate=8, mask_feather=8, progress=no_progress):
        self.calls.append({"prompt": prompts, "strength": strength, "seed": seed, "mask": mask,
                           "shape": tuple(images.shape), "scheduler": scheduler})
        out = images * (1 - strength) + self.target(prompts) * strength
        if mask is not None:
            out = torch.where(mask > 0.5, out, images)
        return out

    def to(self, device):
        return self

    def modules(self):
        return {}


class FakeVideoCorrector(FakeCorrector):
    """A video DM stand-in: pulls every frame of a window towards the prompt's grey, by ``strength``, and towards the
    window's mean frame (a 'temporal' repair), so a window is corrected as one."""

    native_frames = 16

    def __init__(self, size: int = 16, max_frames: int = 32):
        super().__init__(size)
        self.max_frames = max_frames

    def correct_video(self, frames, prompt, *, strength, steps=50, guidance_scale=7.5, seed=0, negative_prompt="",
                      scheduler=None, progress=no_progress):
        self.calls.append({"prompt": prompt, "strength": strength, "seed": seed, "shape": tuple(frames.shape),
                           "scheduler": scheduler, "steps": steps})
        for k in range(3):
            progress("correct", k + 1, 3)
        mean = frames.mean(0, keepdim=True)
        return (frames * (1 - strength) + (mean + self.target(prompt)) / 2 * strength).clamp(0, 1)


class FakeMemory:
    """Prefixes the first story prompt (the 'who and where') to every later one."""

    mode = "per-frame"

    def __init__(self):
        self.calls = 0

    def check(self):
        pass

    def to(self, device):
        return self

    def modules(self):
        return {}

    def answers_for_story(self, story_prompts):
        return [self.answer_for(i, story_prompts, ()) for i in range(len(story_prompts))]

    def answer_for(self, i, story_prompts, earlier):
        from acdc_core.memory import MemoryAnswer

        self.calls += 1
        return MemoryAnswer(story_prompts[i] if i == 0 else f"{story_prompts[0]} {story_prompts[i]}")


# -- helpers for the ARM backend tests (every family) ----------------------------------------------------------

def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def other_tokens(arm, tokens: torch.Tensor) -> torch.Tensor:
    """Different codes at every position (so the first difference is the chunk's first code)."""
    return (tokens + 1) % arm.codebook_size


def sample_story(arm, prompts, n: int, settings: SamplingSettings, seed: int = 0) -> ARMContext:
    """A context of ``n`` frames, frame i sampled with seed ``seed + i``."""
    ctx = ARMContext()
    for i in range(n):
        ctx = ctx.append(prompts[i], arm.sample_chunk(ctx, prompts[i], settings=settings, generator=gen(seed + i)))
    return ctx


class LMCalls:
    """Counts what reaches a language model: (rows, new positions) of every forward. ``key`` names the
    forward's keyword input that carries the positions (``input_ids`` or ``inputs_embeds``)."""

    def __init__(self, lm: torch.nn.Module, key: str):
        self.calls: list[tuple[int, int]] = []
        self.key = key
        self.handle = lm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = kwargs[self.key]
        self.calls.append((x.shape[0], x.shape[1]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()
