"""Loop Frame (open) / (close): one queued prompt makes the whole story.

The user wires the per-frame chain once, between the two loop nodes:

    Story Prompts -> Loop Frame (open) -> ARM Token Generator -> VQ Detokenize -> LLM Memory Prompt
                  -> SDEdit Correct -> Inpaint Physical Fix -> Re-Tokenize -> Loop Frame (close)

How it runs (ComfyUI node expansion, as in the open/close loop of ComfyUI's own execution tests):

* The chain as wired is a template. Loop Frame (open) sees that a close node consumes it and blocks
  the template's outputs (silently), so the template body never computes anything itself.
* Loop Frame (close) reads the prompt graph (hidden DYNPROMPT), finds the body (every node downstream
  of the open node that is not downstream of the close node: the stage nodes, and also any Preview
  or Save node inside the loop) and returns an expansion that holds one copy of the body per frame.
  Frame k's copy of the open node takes frame k-1's story (the output of its Re-Tokenize copy), so
  the story state flows from frame to frame through ordinary links. A last copy of the close node
  collects the finished story.
* Copies get deterministic ids ``{close}.{frame}.{node}`` and show on the node they copy. ComfyUI's
  cache keys a copy by its inputs and everything upstream, so a re-run recomputes exactly what a change
  reaches: a new t' re-runs each frame from its SDEdit on (the ARM tokens of frame 1 and every memory
  prompt before the first change come from the cache); a mask painted for frame 3 reaches only frame
  3's fix node (see ``InpaintFix.acdc_frame_inputs``), so frames 1-2 come from the cache and 3..N
  are regenerated from the fixed frame. Nothing is kept between runs outside ComfyUI's cache, so
  Cancel leaves no stale loop state, and ``--cache-none`` just recomputes everything.
* Planning first. ComfyUI's default cache (RAM pressure) drops, after every node it runs, the entries
  the current run has not touched yet, and a frame's copies are touched only when the close node
  expands. So the close node must expand before any other node runs: it reads the frame count from
  the Story Prompts text in the graph (``plan_from_graph``) and needs no input evaluated (both of its
  inputs are lazy), and the wired open node is never cached (``LoopOpen.IS_CHANGED``), which keeps the
  Preview/Save nodes of the wired chain from being ready before the close node. When the prompts come
  from elsewhere, the close node waits for the open node instead (correct, but it may recompute more).

The graph algebra (``expand_story_loop``, ``plan_from_graph``, ...) is pure and lives in ``graph.py``; each
frame's copy of a node class may adapt its inputs to its frame (``FRAME_ADAPTERS``: the fix node keeps only its
own frame's painted mask).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from acdc_core.errors import InvalidInputError
from acdc_core.state import StoryState, new_story, story_lines
from . import bridge
from .frames import story_results
from .graph import CLOSE, FRAME_INPUT, OPEN, expand_story_loop, plan_from_graph, prompt_graph
from .masks import PAINTED, frame_inputs
from .widgets import tooltip
from .wires import CATEGORY, LOOP, STORY, STORY_OUTPUT_NAMES, STORY_OUTPUT_TOOLTIPS, STORY_OUTPUTS, LoopHandle

# Node classes whose copy for a frame adapts its literal inputs to that frame: class_type -> (inputs, frame) -> inputs.
FRAME_ADAPTERS = {name: frame_inputs for name in PAINTED}


def rewrite_for_frame(class_type: str, inputs: dict, frame: int) -> dict:
    adapt = FRAME_ADAPTERS.get(class_type)
    return adapt(inputs, frame) if adapt is not None else inputs


def start_state(prompts: str, resume: Optional[StoryState]) -> StoryState:
    """The story to continue: ``resume`` if given (its frames must match the prompts), else a new one."""
    lines = story_lines(prompts)
    if resume is None:
        return new_story(lines)
    if not lines or tuple(lines) == resume.prompts:
        return resume
    done = [r.story_prompt for r in resume.records]
    if len(lines) < len(done) or tuple(lines[:len(done)]) != tuple(done):
        raise InvalidInputError(
            f"the story to resume has {len(done)} frame(s) made from other prompts than the first "
            f"{len(done)} line(s) given; resume with the same opening lines.")
    return replace(resume, prompts=tuple(lines), planned_memory=None)


class LoopOpen:
    DESCRIPTION = ("Start of the per-frame chain. Wire the frame's stages after it and end them in Loop Frame "
                   "(close): one run then makes every frame of the story, each with the story so far in "
                   "context. Outputs the story so far, the frame number and its story line.")
    CATEGORY = f"{CATEGORY}/loop"
    FUNCTION = "open"
    RETURN_TYPES = (LOOP, STORY, "INT", "STRING")
    RETURN_NAMES = ("loop", "story", "frame", "prompt")
    OUTPUT_TOOLTIPS = (
        "Connect to Loop Frame (close)'s loop input.",
        "The story so far (the frames before this one, corrected frames swapped in).",
        "This frame's number (1-based).",
        "This frame's line of the story.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"prompts": ("STRING", tooltip("The story, one line per frame (from Story Prompts).",
                                                       forceInput=True))},
            "optional": {"resume": (STORY, tooltip("Continue this story instead of starting a new one (e.g. a "
                                                   "finished story with lines added). The loop also uses this "
                                                   "input to hand each frame the story so far."))},
            "hidden": {"unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT", FRAME_INPUT: "INT"},
        }

    @classmethod
    def IS_CHANGED(cls, acdc_frame=None, **_):
        # The chain as wired runs again on every queue (it only blocks itself and is free), so that Loop
        # Frame (close) is the first node of every run: it re-plans the frames before ComfyUI's default
        # cache drops entries of the last run that this run has not touched yet. Copies are stable.
        # The price: every node after the close node re-runs on every queue too (a Save Image there writes
        # again; inside the loop each frame's Save runs once). A stable value here would let an identical
        # re-queue run nothing, but its frames' copies would go untouched and be dropped, so the next change
        # (a new t') would recompute every frame: tried in ComfyUI 0.33, see the README.
        return float("nan") if acdc_frame is None else acdc_frame

    def open(self, prompts, resume=None, unique_id=None, dynprompt=None, acdc_frame=None):
        state = start_state(prompts, resume)
        total = len(state.prompts)
        if acdc_frame is None:  # the chain as the user wired it: Loop Frame (close) makes a copy per frame
            closes = self.close_ids(unique_id, dynprompt)
            if not closes:
                raise InvalidInputError("Loop Frame (open) needs a Loop Frame (close) at the end of the chain "
                                        "(its loop input connected to this node's loop output).")
            running = bridge.running_outputs()
            if running is not None and not running & set(closes):
                # ComfyUI runs the outputs that validate: the nodes inside the loop would make nothing without it.
                raise InvalidInputError(
                    f"Loop Frame (close) (node {closes[0]}) is not part of this run, so the story cannot run: it "
                    "failed validation (fix the error shown on it, e.g. a removed story link), or only outputs inside "
                    "the loop were queued (queue the whole workflow); no frame is made.")
            blocked = bridge.blocker()  # the wired chain itself computes nothing
            return (LoopHandle(str(unique_id), total, state), blocked, blocked, blocked)
        if state.done:
            raise InvalidInputError(f"the story's {total} frame(s) are all made; add lines to continue it.")
        index = state.next_index
        bridge.frame_progress(index, total, dynprompt.get_parent_node_id(unique_id) if dynprompt else None)
        return (LoopHandle(str(unique_id), total, state, frame=index), state, index + 1, state.prompts[index])

    @staticmethod
    def close_ids(unique_id, dynprompt) -> list[str]:
        """The Loop Frame (close) nodes whose loop input is this open node."""
        if dynprompt is None:
            return []
        return [n for n in dynprompt.all_node_ids() if dynprompt.get_node(n).get("class_type") == CLOSE
                and dynprompt.get_node(n).get("inputs", {}).get("loop") == [unique_id, 0]]


class LoopClose:
    DESCRIPTION = ("End of the per-frame chain: runs the chain between Loop Frame (open) and here once per frame "
                   "of the story (as many frames as the story has lines) and outputs the finished story. Preview "
                   "and Save nodes inside the chain show every frame. Shows ARM vs corrected frames side by side.")
    CATEGORY = f"{CATEGORY}/loop"
    FUNCTION = "close"
    OUTPUT_NODE = True
    RETURN_TYPES = STORY_OUTPUTS
    RETURN_NAMES = STORY_OUTPUT_NAMES
    OUTPUT_TOOLTIPS = STORY_OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "loop": (LOOP, tooltip("From Loop Frame (open).", lazy=True)),
                "story": (STORY, tooltip("The story after this frame: the output of Re-Tokenize at the end of "
                                         "the chain.", lazy=True)),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT", FRAME_INPUT: "INT"},
        }

    def check_lazy_status(self, loop=None, story=None, unique_id=None, dynprompt=None, acdc_frame=None):
        if acdc_frame is not None:  # the copy after the last frame: it collects the finished story
            return [name for name, value in (("loop", loop), ("story", story)) if value is None]
        # The wired close node plans the frames from the prompt alone when it can, so it needs no input
        # and runs first (see LoopOpen.IS_CHANGED); otherwise it waits for Loop Frame (open).
        if loop is None and (dynprompt is None or plan_from_graph(prompt_graph(dynprompt), str(unique_id)) is None):
            return ["loop"]
        return []

    def close(self, loop=None, story=None, unique_id=None, dynprompt=None, acdc_frame=None):
        if acdc_frame is not None:
            if not isinstance(story, StoryState):
                raise InvalidInputError("Loop Frame (close)'s story input must come from Re-Tokenize.")
            parent = dynprompt.get_parent_node_id(unique_id) if dynprompt is not None else unique_id
            bridge.frame_progress(len(story.records), len(story.prompts), parent)
            return story_results(story)
        if dynprompt is None:
            raise InvalidInputError("Loop Frame (close) needs ComfyUI's prompt graph (hidden DYNPROMPT).")
        graph = prompt_graph(dynprompt)
        plan = plan_from_graph(graph, str(unique_id))
        if plan is None:
            if not isinstance(loop, LoopHandle):
                raise InvalidInputError("Loop Frame (close)'s loop input must come from Loop Frame (open).")
            if loop.start >= loop.total:  # a resumed story with nothing left to make
                return story_results(loop.start_state)
            plan = (loop.open_id, loop.start, loop.total)
        open_id, first, total = plan
        expansion, result = expand_story_loop(graph, open_id=open_id, close_id=str(unique_id), first=first,
                                              total=total, outputs=len(self.RETURN_TYPES), rewrite=rewrite_for_frame)
        bridge.frame_progress(first, total, unique_id)
        return {"result": result, "expand": expansion}

NODES = {
    OPEN: (LoopOpen, "Loop Frame (open)"),
    CLOSE: (LoopClose, "Loop Frame (close)"),
}
