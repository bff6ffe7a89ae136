"""A toy story world where ACDC's effect is measurable on a CPU, and the pack's built-in default models.

``world`` renders frames and samples stories (with train / held-out splits), ``judge`` reads a frame
back from its pixels and checks it, ``rewriter`` is the rule-based memory baseline, and the
``train_*`` modules train the small models shipped in ``models/`` (one seeded command each).
"""
from .world import Scene, Story, full_prompt, render, sample_story, split_stories, story_split

__all__ = ["Scene", "Story", "full_prompt", "render", "sample_story", "split_stories", "story_split"]
