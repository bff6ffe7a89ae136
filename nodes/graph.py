"""The prompt graph as data: the pure algebra behind Loop Frame (close)'s expansion.

A graph is ComfyUI's API prompt, ``{node_id: {"class_type": str, "inputs": {name: literal | [node_id, slot]}}}``.
Nothing here runs a node or imports ComfyUI: the loop's body, the copies of it per frame with deterministic ids,
and the frame count read from the Story Prompts text are all functions of the graph alone (tested as data).
"""
from __future__ import annotations

from typing import Callable, Optional

from acdc_core.errors import InvalidInputError
from acdc_core.state import story_lines

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


def copy_of(copy_id: str) -> Optional[tuple[str, int, str]]:
    """(close node, frame, original node) of a loop copy's id (``clone_id``'s inverse), or None for another id."""
    close, _, rest = str(copy_id).rpartition(".")
    close, _, frame = close.rpartition(".")
    return (close, int(frame), rest) if close and frame.isdigit() and rest else None


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
    lines = story_lines(text) if isinstance(text, str) else ()
    return (link[0], 0, len(lines)) if lines else None


def prompt_graph(dynprompt) -> Graph:
    """The prompt as the executor holds it now (the user's nodes plus expansions so far)."""
    ids = sorted(dynprompt.all_node_ids(), key=lambda s: (len(s), s))
    return {node_id: dynprompt.get_node(node_id) for node_id in ids}
