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

``expand_story_loop`` is a pure function over the prompt graph (``{id: {"class_type", "inputs"}}``),
testable without ComfyUI.
"""
from __future__ import annotations

from typing import Callable, Optional

from acdc_core.errors import InvalidInputError
from acdc_core.state import StoryState, new_story
from . import bridge
from .values import (CATEGORY, LOOP, STORY, LoopHandle, parse_prompts, story_results, tooltip)

OPEN = "ACDC_LoopOpen"
CLOSE = "ACDC_LoopClose"
PROMPTS = "ACDC_StoryPrompts"
FRAME_INPUT = "acdc_frame"  # hidden input that marks the copies the close node makes (their frame, 1-based)

Graph = dict  # {node_id: {"class_type": str, "inputs": {name: literal | [node_id, output_index]}}}


def is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def _consumers(graph: Graph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {node_id: [] for node_id in graph}
    for node_id, node in graph.items():
        for value in node.get("inputs", {}).values():
            if is_link(value) and value[0] in out and node_id not in out[value[0]]:
                out[value[0]].append(node_id)
    return out


def _reachable(consumers: dict[str, list[str]], start: str) -> set[str]:
    seen, stack = set(), list(consumers.get(start, []))
    while stack:
        node_id = stack.pop()
        if node_id not in seen:
            seen.add(node_id)
            stack.extend(consumers.get(node_id, []))
    return seen


def _topological(graph: Graph, nodes: set[str]) -> list[str]:
    """``nodes`` in dependency order; ties keep the graph's order (so the result is deterministic)."""
    order, placed = [], set()
    pending = [n for n in graph if n in nodes]
    while pending:
        progressed = False
        for node_id in list(pending):
            parents = {v[0] for v in graph[node_id].get("inputs", {}).values() if is_link(v)}
            if not (parents & nodes) - placed:
                order.append(node_id)
                placed.add(node_id)
                pending.remove(node_id)
                progressed = True
        if not progressed:
            raise InvalidInputError(f"the loop body has a cycle through nodes {sorted(pending)}.")
    return order


def loop_body(graph: Graph, open_id: str, close_id: str) -> list[str]:
    """The nodes between the open and the close node: downstream of open, not downstream of close."""
    consumers = _consumers(graph)
    after_close = _reachable(consumers, close_id) | {close_id}
    body = _reachable(consumers, open_id) - after_close
    return _topological(graph, body)


def clone_id(close_id: str, frame: int, node_id: str) -> str:
    """The id of ``node_id``'s copy for ``frame`` (1-based): unique in the prompt and the same every run."""
    return f"{close_id}.{frame}.{node_id}"


def expand_story_loop(graph: Graph, *, open_id: str, close_id: str, first: int, total: int, outputs: int,
                      rewrite: Optional[Callable[[str, dict, int], dict]] = None) -> tuple[Graph, tuple]:
    """The expansion that makes frames ``first+1 .. total`` (1-based), and the close node's result links.

    ``rewrite(class_type, inputs, frame)`` may adapt a copy's literal inputs to its frame (the fix node
    keeps only its own frame's painted mask). ``graph`` is not changed.
    """
    if close_id not in graph or open_id not in graph:
        raise InvalidInputError("the loop's open or close node is not in the prompt.")
    if not 0 <= first < total:
        raise InvalidInputError(f"nothing to expand: frames {first + 1}..{total}.")
    close_inputs = graph[close_id].get("inputs", {})
    if close_inputs.get("loop") != [open_id, 0] and close_inputs.get("loop") != [open_id, 0.0]:
        raise InvalidInputError("Loop Frame (close)'s loop input must come straight from Loop Frame (open).")
    story = close_inputs.get("story")
    body = loop_body(graph, open_id, close_id)
    if not is_link(story) or story[0] not in body:
        raise InvalidInputError(
            "Loop Frame (close)'s story input must come from the chain inside the loop (the Re-Tokenize after "
            "the frame is made), not from Loop Frame (open) itself or from outside the loop.")
    inside = set(body) | {open_id}

    expansion: Graph = {}
    for index in range(first, total):
        frame = index + 1

        def remap(value, frame=frame):
            if is_link(value) and value[0] in inside:
                return [clone_id(close_id, frame, value[0]), int(value[1])]
            return value  # a literal, or a link to a node outside the loop (a loader, the story prompts)

        for node_id in [open_id] + body:
            node = graph[node_id]
            inputs = {name: remap(value) for name, value in node.get("inputs", {}).items()}
            if node_id == open_id:
                inputs[FRAME_INPUT] = frame  # marks the copy (hidden input); its cache key stays the same
                if index > first:  # frame k starts from the story as frame k-1 left it
                    inputs["resume"] = [clone_id(close_id, frame - 1, story[0]), int(story[1])]
            if rewrite is not None:
                inputs = rewrite(node["class_type"], inputs, frame)
            expansion[clone_id(close_id, frame, node_id)] = {
                "class_type": node["class_type"], "inputs": inputs, "override_display_id": node_id}

    end = clone_id(close_id, total, close_id)
    inputs = dict(close_inputs)
    inputs["loop"] = [clone_id(close_id, total, open_id), 0]
    inputs["story"] = [clone_id(close_id, total, story[0]), int(story[1])]
    inputs[FRAME_INPUT] = total
    expansion[end] = {"class_type": graph[close_id]["class_type"], "inputs": inputs,
                      "override_display_id": close_id}
    return expansion, tuple([end, k] for k in range(outputs))


def plan_from_graph(graph: Graph, close_id: str) -> Optional[tuple[str, int, int]]:
    """(open id, frames already made, frames in the story) read from the prompt alone, without running a node.

    Possible when Loop Frame (open) takes its prompts straight from a Story Prompts node's text and resumes
    nothing; otherwise None (the close node then waits for Loop Frame (open) to run).
    """
    link = graph.get(close_id, {}).get("inputs", {}).get("loop")
    if not is_link(link) or graph.get(link[0], {}).get("class_type") != OPEN:
        return None
    opened = graph[link[0]].get("inputs", {})
    source = opened.get("prompts")
    if "resume" in opened or not is_link(source) or graph.get(source[0], {}).get("class_type") != PROMPTS:
        return None
    text = graph[source[0]].get("inputs", {}).get("text")
    lines = parse_prompts(text) if isinstance(text, str) else ()
    return (link[0], 0, len(lines)) if lines else None


def rewrite_for_frame(class_type: str, inputs: dict, frame: int) -> dict:
    """Let a node class adapt its copy's inputs to ``frame`` (its ``acdc_frame_inputs`` classmethod)."""
    from . import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS.get(class_type)
    adapt = getattr(cls, "acdc_frame_inputs", None)
    return adapt(inputs, frame) if adapt is not None else inputs


def prompt_graph(dynprompt) -> Graph:
    """The prompt as the executor holds it now (the user's nodes plus expansions so far)."""
    ids = sorted(dynprompt.all_node_ids(), key=lambda s: (len(s), s))
    return {node_id: dynprompt.get_node(node_id) for node_id in ids}


def start_state(prompts: str, resume: Optional[StoryState]) -> StoryState:
    """The story to continue: ``resume`` if given (its frames must match the prompts), else a new one."""
    lines = parse_prompts(prompts)
    if resume is None:
        return new_story(lines)
    if not lines or tuple(lines) == resume.prompts:
        return resume
    done = [r.story_prompt for r in resume.records]
    if len(lines) < len(done) or tuple(lines[:len(done)]) != tuple(done):
        raise InvalidInputError(
            f"the story to resume has {len(done)} frame(s) made from other prompts than the first "
            f"{len(done)} line(s) given; resume with the same opening lines.")
    from dataclasses import replace
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
        return float("nan") if acdc_frame is None else acdc_frame

    def open(self, prompts, resume=None, unique_id=None, dynprompt=None, acdc_frame=None):
        state = start_state(prompts, resume)
        total = len(state.prompts)
        if acdc_frame is None:  # the chain as the user wired it: Loop Frame (close) makes a copy per frame
            if not self.has_close(unique_id, dynprompt):
                raise InvalidInputError("Loop Frame (open) needs a Loop Frame (close) at the end of the chain "
                                        "(its loop input connected to this node's loop output).")
            blocked = bridge.blocker()  # the wired chain itself computes nothing
            return (LoopHandle(str(unique_id), total, state), blocked, blocked, blocked)
        if state.done:
            raise InvalidInputError(f"the story's {total} frame(s) are all made; add lines to continue it.")
        index = state.next_index
        bridge.frame_progress(index, total, dynprompt.get_parent_node_id(unique_id) if dynprompt else None)
        return (LoopHandle(str(unique_id), total, state, frame=index), state, index + 1, state.prompts[index])

    @staticmethod
    def has_close(unique_id, dynprompt) -> bool:
        if dynprompt is None:
            return False
        return any(dynprompt.get_node(n).get("class_type") == CLOSE
                   and dynprompt.get_node(n).get("inputs", {}).get("loop") == [unique_id, 0]
                   for n in dynprompt.all_node_ids())


class LoopClose:
    DESCRIPTION = ("End of the per-frame chain: runs the chain between Loop Frame (open) and here once per frame "
                   "of the story (as many frames as the story has lines) and outputs the finished story. Preview "
                   "and Save nodes inside the chain show every frame. Shows ARM vs corrected frames side by side.")
    CATEGORY = f"{CATEGORY}/loop"
    FUNCTION = "close"
    OUTPUT_NODE = True
    RETURN_TYPES = (STORY, "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("story", "frames", "arm_frames", "dm_prompts")
    OUTPUT_TOOLTIPS = (
        "The finished story (for a later Loop Frame (open)'s resume, or ACDC Story).",
        "Every frame as it went into the ARM's context (corrected and fixed), as one batch.",
        "Every frame as the ARM first drew it, before correction, as one batch.",
        "The prompt the diffusion model got for each frame, one line per frame.",
    )

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


class StoryPrompts:
    DESCRIPTION = ("The story: one line per frame. The first line should name the main character, its species "
                   "and the place; later lines may say \"he\" or \"she\" (the memory LLM fills in who). Blank lines "
                   "and lines starting with # are skipped.")
    CATEGORY = CATEGORY
    FUNCTION = "prompts"
    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("prompts", "frames")
    OUTPUT_TOOLTIPS = ("The story lines, one per frame.", "How many frames the story has.")

    DEFAULT = ("Benny, a golden retriever, plays in a sunny meadow with a red ball.\n"
               "He jumps over a fallen log.\n"
               "He chases a butterfly near the river.\n"
               "He rests in the shade of an oak tree.\n"
               "He watches the sun set behind the hills.\n"
               "He falls asleep under the stars.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", tooltip("One line per frame.", default=cls.DEFAULT,
                                                        multiline=True))}}

    @classmethod
    def VALIDATE_INPUTS(cls, text):
        if text is not None and not parse_prompts(text):
            return "the story is empty: write at least one line (one line per frame)."
        return True

    def prompts(self, text):
        lines = parse_prompts(text)
        if not lines:
            raise InvalidInputError("the story is empty: write at least one line (one line per frame).")
        return ("\n".join(lines), len(lines))


NODES = {
    "ACDC_StoryPrompts": (StoryPrompts, "Story Prompts (ACDC)"),
    OPEN: (LoopOpen, "Loop Frame (open)"),
    CLOSE: (LoopClose, "Loop Frame (close)"),
}
