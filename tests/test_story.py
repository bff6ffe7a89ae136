"""The ACDC loop's logic, on exact fakes (the real tiny models run end to end in test_cli.py)."""
import pytest
import torch

from acdc_core.devices import Offloader
from acdc_core.errors import InvalidInputError
from acdc_core.state import StorySettings, new_story
from acdc_core.story import run_story, step_frame
from tests.fakes import FakeARM, FakeCorrector, FakeMemory

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)

PROMPTS = ["Benny the golden dog in a meadow", "He jumps over a log", "He sleeps under the moon"]


def run(settings=StorySettings(steps=10), **kwargs):
    arm, dm, mem = FakeARM(), FakeCorrector(), FakeMemory()
    state = run_story(PROMPTS, arm, dm, mem, settings, **kwargs)
    return state, arm, dm, mem


def test_every_frame_is_corrected_reencoded_and_swapped_in():
    state, arm, dm, mem = run()
    assert len(state.records) == 3 and state.done
    assert len(dm.calls) == 3 and mem.calls == 3
    for record, chunk in zip(state.records, state.context.chunks):
        assert record.corrected
        # v~_i = E(x~_i) at the ARM's size, and v~_i (not v_i) is what the context holds.
        expected = arm.encode(torch.nn.functional.interpolate(record.corrected_image[None], size=arm.image_size,
                                                              mode="bicubic", antialias=True).clamp(0, 1))
        assert torch.equal(record.tokens_after, expected)
        assert torch.equal(chunk.tokens, record.tokens_after)
        assert chunk.prompt == record.story_prompt
    # The ARM sampled frame 3 with the *corrected* frames 1-2 in context.
    seen = arm.contexts_seen[2]
    assert [torch.equal(c.tokens, r.tokens_after) for c, r in zip(seen.chunks, state.records)] == [True, True]
    # The DM got the memory prompt, at its own size; the record keeps both prompts.
    assert dm.calls[1]["prompt"] == f"{PROMPTS[0]} {PROMPTS[1]}" == state.records[1].memory_prompt
    assert dm.calls[1]["shape"] == (1, 3, 16, 16)
    assert state.records[1].story_prompt == PROMPTS[1]
    assert set(state.records[0].seconds) == {"arm", "decode", "memory", "correct", "encode"}


def test_acdc_k_corrects_only_the_first_k_frames():
    state, arm, dm, mem = run(StorySettings(steps=10, correct_frames=1))
    assert [r.corrected for r in state.records] == [True, False, False]
    assert len(dm.calls) == 1 and mem.calls == 1
    later = state.records[2]
    assert later.memory_prompt is None
    assert torch.equal(later.tokens_before, later.tokens_after)
    assert torch.equal(later.arm_image, later.corrected_image)


def test_arm_only_needs_no_diffusion_model():
    arm = FakeARM()
    state = run_story(PROMPTS, arm, None, None, StorySettings(correct_frames=0))
    assert [r.corrected for r in state.records] == [False] * 3


def test_same_seed_same_story_and_other_seed_differs():
    a, *_ = run(StorySettings(steps=10, seed=3))
    b, *_ = run(StorySettings(steps=10, seed=3))
    c, *_ = run(StorySettings(steps=10, seed=4))
    assert all(torch.equal(x.tokens_after, y.tokens_after) for x, y in zip(a.records, b.records))
    assert any(not torch.equal(x.tokens_before, y.tokens_before) for x, y in zip(a.records, c.records))
    assert [r.arm_seed for r in a.records] == [3, 4, 5]


def test_step_frame_leaves_its_input_state_unchanged():
    arm, dm, mem = FakeARM(), FakeCorrector(), FakeMemory()
    state = new_story(PROMPTS)
    one = step_frame(state, arm, dm, mem, StorySettings(steps=10))
    two = step_frame(one, arm, dm, mem, StorySettings(steps=10))
    assert len(state.records) == 0 and len(state.context) == 0
    assert len(one.records) == 1 and len(one.context) == 1
    assert len(two.records) == 2
    assert one.records[0] is two.records[0]


def test_fix_mask_inpaints_only_the_masked_frame_and_region():
    mask = torch.zeros(16, 16)
    mask[4:8, 4:8] = 1
    state, arm, dm, mem = run(StorySettings(steps=10, fix_strength=0.9), fix_masks={1: mask})
    assert [r.fixed for r in state.records] == [False, True, False]
    fix_call = dm.calls[2]  # frame 1 SDEdit, frame 2 SDEdit, frame 2 fix, frame 3 SDEdit
    assert fix_call["mask"].shape == (1, 1, 16, 16) and fix_call["strength"] == 0.9
    sdedit_out = dm.calls[1]
    assert len(dm.calls) == 4 and sdedit_out["mask"] is None


def test_arm_size_mask_is_scaled_to_the_correction_size():
    mask = torch.zeros(8, 8)   # the ARM's size; the DM works at 16x16
    mask[:4] = 1
    state, arm, dm, mem = run(fix_masks={0: mask})
    m = dm.calls[1]["mask"]
    assert m.shape == (1, 1, 16, 16) and m[0, 0, :8].all() and not m[0, 0, 8:].any()


@pytest.mark.parametrize("kwargs, match", [
    (dict(fix_masks={1: torch.ones(5, 7)}), "5x7"),
    (dict(fix_masks={7: torch.ones(16, 16)}), "frame 8"),
    (dict(settings=StorySettings(strength=0.0)), "t'"),
    (dict(settings=StorySettings(strength=1.5)), "t'"),
    (dict(settings=StorySettings(steps=0)), "steps"),
    (dict(settings=StorySettings(correct_frames=-1)), "correct_frames"),
])
def test_bad_input_fails_before_the_arm_runs(kwargs, match):
    arm = FakeARM()
    with pytest.raises(InvalidInputError, match=match):
        run_story(PROMPTS, arm, FakeCorrector(), FakeMemory(), **kwargs)
    assert arm.contexts_seen == []


@pytest.mark.parametrize("prompts", [[], ["", "  "], "\n\n"])
def test_empty_story_is_refused(prompts):
    with pytest.raises(InvalidInputError, match="empty"):
        run_story(prompts, FakeARM(), FakeCorrector(), FakeMemory())


def test_correction_without_a_diffusion_model_is_refused():
    with pytest.raises(InvalidInputError, match="diffusion model"):
        run_story(PROMPTS, FakeARM(), None, FakeMemory())


def test_cancel_from_progress_stops_the_loop_and_keeps_earlier_state():
    class Cancelled(Exception):
        pass

    def progress(stage, step, total, preview=None):
        if stage == "frame" and step == 1:
            raise Cancelled

    arm, dm, mem = FakeARM(), FakeCorrector(), FakeMemory()
    one = step_frame(new_story(PROMPTS), arm, dm, mem, StorySettings(steps=10))
    with pytest.raises(Cancelled):
        run_story(PROMPTS, arm, dm, mem, StorySettings(steps=10), start=one, progress=progress)
    assert len(one.records) == 1


def test_resuming_after_a_fix_keeps_earlier_frames_and_regenerates_later_ones():
    arm, dm, mem = FakeARM(), FakeCorrector(), FakeMemory()
    one = step_frame(new_story(PROMPTS), arm, dm, mem, StorySettings(steps=10))   # a state is a value: keep it
    first = run_story(PROMPTS, arm, dm, mem, StorySettings(steps=10), start=one)
    mask = torch.zeros(16, 16)
    mask[:, :8] = 1
    resumed = run_story(PROMPTS, arm, dm, mem, StorySettings(steps=10), start=one, fix_masks={1: mask})
    assert resumed.records[0] is first.records[0] is one.records[0]
    assert resumed.records[1].fixed and not first.records[1].fixed
    assert torch.equal(resumed.records[1].tokens_before, first.records[1].tokens_before)
    assert not torch.equal(resumed.records[1].tokens_after, first.records[1].tokens_after)


def test_placement_offloads_the_idle_model():
    class Model:
        def __init__(self):
            self.where = "nowhere"

        def to(self, device):
            self.where = str(device)
            return self

        def modules(self):
            return {"w": torch.nn.Linear(1, 1)}

    place = Offloader(device=torch.device("meta"), offload=True)
    a, b = Model(), Model()
    place.use(a)
    assert a.where == "meta"
    place.use(b)
    assert (a.where, b.where) == ("cpu", "meta")
    keep = Offloader(device=torch.device("meta"), offload=False)
    keep.use(a), keep.use(b)
    assert (a.where, b.where) == ("meta", "meta")


def test_a_t_prime_is_checked_against_the_steps_only_where_it_is_used():
    # The ARM alone runs no denoising step, so a schedule too short for t' is no error there ...
    arm_only = run_story(PROMPTS, FakeARM(), None, None, StorySettings(steps=1, correct_frames=0))
    assert len(arm_only.records) == len(PROMPTS)
    # ... and the fix's t' matters only when a frame has a mask; both fail before the ARM runs.
    run_story(PROMPTS, FakeARM(), FakeCorrector(), FakeMemory(), StorySettings(steps=2, strength=1.0, fix_strength=0.4))
    arm = FakeARM()
    with pytest.raises(InvalidInputError, match="fix_strength"):
        run_story(PROMPTS, arm, FakeCorrector(), FakeMemory(), StorySettings(steps=2, strength=1.0, fix_strength=0.4),
                  fix_masks={0: torch.ones(16, 16)})
    with pytest.raises(InvalidInputError, match="strength \\(t'\\) 0.4 with 2 steps"):
        run_story(PROMPTS, arm, FakeCorrector(), FakeMemory(), StorySettings(steps=2, strength=0.4))
    assert arm.contexts_seen == []


def test_the_strip_says_when_the_dm_was_given_the_story_lines():
    from acdc_core.memory import MemoryModule, MemorySettings
    from acdc_core.report import story_rows

    settings = StorySettings(steps=2, strength=1.0)
    with_memory = run_story(PROMPTS, FakeARM(), FakeCorrector(), FakeMemory(), settings)
    without = run_story(PROMPTS, FakeARM(), FakeCorrector(), MemoryModule(None, MemorySettings(mode="off")), settings)
    assert [label for label, _ in story_rows(with_memory.records)] == ["ARM frame (before correction)",
                                                                       "ACDC (corrected, in context)"]
    assert story_rows(without.records)[1][0] == "ACDC without memory (DM given the story lines)"
