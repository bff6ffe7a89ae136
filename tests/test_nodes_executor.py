"""A small stand-in for ComfyUI's executor, so the pack's nodes and workflows run as data in CI (no ComfyUI).

It follows what ComfyUI's ``execution.py`` does with the classic node contract, for the parts the pack
relies on: output nodes drive execution; linked inputs are evaluated first, ``lazy`` ones only when
``check_lazy_status`` asks; an ExecutionBlocker input blocks a node silently; hidden UNIQUE_ID /
DYNPROMPT; ``{"expand": ...}`` adds ephemeral nodes (their output nodes run too) and the node's result
is read from the links it names; outputs are cached by an input signature (class, IS_CHANGED, literal
inputs, ancestors' signatures, the node id for UNIQUE_ID nodes) — or not at all, as with --cache-none.
The loop and mask-painting behaviour was also tried in a real ComfyUI (see the README).

The tests at the bottom pin the stand-in's own behaviour on toy nodes.
"""
from __future__ import annotations

import copy
from typing import Optional
from collections import defaultdict

import pytest

from nodes import bridge


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


class DynPrompt:
    """The executor's view of the prompt: the user's nodes plus ephemeral nodes from expansions."""

    def __init__(self, prompt: dict) -> None:
        self.original = prompt
        self.ephemeral, self.parents, self.display = {}, {}, {}

    def get_node(self, node_id):
        if node_id in self.ephemeral:
            return self.ephemeral[node_id]
        return self.original[node_id]

    def has_node(self, node_id):
        return node_id in self.original or node_id in self.ephemeral

    def all_node_ids(self):
        return set(self.original) | set(self.ephemeral)

    def get_original_prompt(self):
        return self.original

    def get_parent_node_id(self, node_id):
        return self.parents.get(node_id)

    def get_display_node_id(self, node_id):
        while node_id in self.display:
            node_id = self.display[node_id]
        return node_id

    def add_ephemeral_node(self, node_id, info, parent, display):
        assert node_id not in self.original and node_id not in self.ephemeral, f"duplicate node id {node_id}"
        self.ephemeral[node_id] = info
        self.parents[node_id] = parent
        self.display[node_id] = display


class Run:
    def __init__(self):
        self.executed: list[str] = []        # node ids whose function ran, in order
        self.ui = defaultdict(list)          # display node id -> [ui dicts]
        self.values: dict[str, tuple] = {}   # node id -> outputs
        self.dyn: DynPrompt | None = None

    def ran(self, class_type: str) -> list[str]:
        return [n for n in self.executed if self.dyn.get_node(n)["class_type"] == class_type]


class MiniComfy:
    """ComfyUI's executor, small. ``cache``: True keeps outputs across runs (--cache-classic, --cache-lru and the
    default); False keeps them within a run only; "none" is --cache-none as ComfyUI 0.33 does it: an output is kept
    only for the consumers known when its node ran, so an input asked for later (a lazy one) is computed again,
    with every node above it that is not kept either (comfy_execution/graph.py: ``add_strong_link`` re-adds a node
    whose output the null cache does not hold)."""

    def __init__(self, classes: dict, cache: bool | str = True) -> None:
        self.classes = classes
        self.cache = {} if cache is True else None
        self.null_cache = cache == "none"
        self._interned: dict[tuple, int] = {}

    def run(self, prompt: dict, outputs: Optional[list] = None) -> Run:
        """Run ``prompt``'s output nodes (``outputs``: only these, as ComfyUI runs only the outputs that passed
        validation; the host reports them as the running outputs)."""
        from nodes import bridge

        run = Run()
        run.dyn = DynPrompt(copy.deepcopy(prompt))
        self._run, self._signatures = run, {}
        every = [i for i in prompt if getattr(self.classes[prompt[i]["class_type"]], "OUTPUT_NODE", False)]
        chosen = every if outputs is None else [i for i in every if i in outputs]
        self._registered: set = set()
        self.register(chosen)
        bridge.HOST.outputs, bridge.HOST.keep_outputs = set(chosen), not self.null_cache
        try:
            for node_id in chosen:
                self.evaluate(node_id)
        finally:
            bridge.HOST.outputs, bridge.HOST.keep_outputs = None, True
        return run

    # -- ComfyUI's cache key: class, IS_CHANGED, literal inputs, ancestors (and the id for UNIQUE_ID nodes) ---
    # An ancestor enters a key as the number its own key was given (``_interned``, kept across runs), so a
    # key stays flat: hashing nested keys would revisit every shared ancestor once per path to it.
    def signature(self, node_id):
        if node_id in self._signatures:
            return self._signatures[node_id]
        node = self._run.dyn.get_node(node_id)
        cls = self.classes[node["class_type"]]
        parts = [node["class_type"]]
        if "UNIQUE_ID" in cls.INPUT_TYPES().get("hidden", {}).values() or getattr(cls, "NOT_IDEMPOTENT", False):
            parts.append(node_id)
        if hasattr(cls, "IS_CHANGED"):
            literals = {k: v for k, v in node["inputs"].items() if not is_link(v)}
            changed = cls.IS_CHANGED(**literals)
            parts.append(object() if changed != changed else repr(changed))  # NaN: never equal, never cached
        for key in sorted(node["inputs"]):
            value = node["inputs"][key]
            parts.append((key, ("link", self.signature(value[0]), value[1])) if is_link(value) else (key, repr(value)))
        key = tuple(parts)
        self._signatures[node_id] = self._interned.setdefault(key, len(self._interned))
        return self._signatures[node_id]

    def lazy_names(self, node_id) -> set:
        node = self._run.dyn.get_node(node_id)
        spec = self.classes[node["class_type"]].INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        return {name for name, entry in declared.items()
                if len(entry) > 1 and isinstance(entry[1], dict) and entry[1].get("lazy")}

    def ready_at_once(self, node_id) -> bool:
        """No input waits on another node (each is a literal or lazy)."""
        lazy = self.lazy_names(node_id)
        return all(not is_link(v) or k in lazy for k, v in self._run.dyn.get_node(node_id)["inputs"].items())

    def register(self, node_ids) -> None:
        """The nodes ComfyUI's execution list knows it will need: these and everything above them through inputs
        that are not lazy (it follows lazy inputs only when a node asks for them)."""
        todo = [n for n in node_ids if n not in self._registered]
        while todo:
            node_id = todo.pop()
            if node_id in self._registered:
                continue
            self._registered.add(node_id)
            lazy = self.lazy_names(node_id)
            todo += [v[0] for k, v in self._run.dyn.get_node(node_id)["inputs"].items() if is_link(v) and k not in lazy]

    def evaluate_late(self, node_ids) -> dict:
        """--cache-none: inputs a node asks for lazily, all at once. A node the execution list knows of and has not
        run yet runs once, for every consumer; any other is added now, and it and every node above it that already
        ran run again (their outputs were kept only for the consumers known then). Returns node id -> outputs."""
        run = self._run
        late = [n for n in node_ids if n not in self._registered or n in run.values]   # not pending: added again
        self.register(late)
        if not late:
            return {n: self.evaluate(n) for n in node_ids}
        kept, run.values = run.values, {}
        try:
            return {n: self.evaluate(n) for n in node_ids}
        finally:
            run.values = {**run.values, **kept}

    def evaluate(self, node_id) -> tuple:
        run = self._run
        if node_id in run.values:
            return run.values[node_id]
        key = self.signature(node_id)
        if self.cache is not None and key in self.cache:
            run.values[node_id], ui = self.cache[key]
            if ui:  # as ComfyUI re-sends a cached node's ui
                run.ui[run.dyn.get_display_node_id(node_id)].append(ui)
            return run.values[node_id]
        node = run.dyn.get_node(node_id)
        cls = self.classes[node["class_type"]]
        spec = cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        hidden = spec.get("hidden", {})
        lazy = {name for name, (_, *opts) in declared.items() if opts and opts[0].get("lazy")}
        kwargs, blocked = {}, False
        for name, value in node["inputs"].items():
            if name in hidden and not is_link(value):
                kwargs[name] = value  # a literal for a declared hidden input (set by an expansion)
            if name not in declared or (is_link(value) and name in lazy):
                continue
            kwargs[name] = self.evaluate(value[0])[value[1]] if is_link(value) else value
            blocked = blocked or bridge.is_blocked(kwargs[name])
        if blocked:  # ExecutionBlocker(None): the node is skipped silently, its outputs block in turn
            outputs = tuple(bridge.blocker() for _ in cls.RETURN_TYPES)
            run.values[node_id] = outputs
            return outputs
        for name, kind in hidden.items():
            if kind in ("UNIQUE_ID", "DYNPROMPT", "PROMPT"):
                kwargs[name] = {"UNIQUE_ID": node_id, "DYNPROMPT": run.dyn,
                                "PROMPT": run.dyn.get_original_prompt()}[kind]
        obj = cls()
        if hasattr(obj, "check_lazy_status"):
            while True:
                wanted = [n for n in obj.check_lazy_status(**{**{n: None for n in lazy}, **kwargs}) or []
                          if n not in kwargs and is_link(node["inputs"].get(n))]
                if not wanted:
                    break
                links = {name: node["inputs"][name] for name in wanted}
                got = (self.evaluate_late([link[0] for link in links.values()]) if self.null_cache
                       else {link[0]: self.evaluate(link[0]) for link in links.values()})
                for name, link in links.items():
                    kwargs[name] = got[link[0]][link[1]]
        bridge.HOST.executing = node_id              # what ComfyUI's execution context says while a node runs
        try:
            result = getattr(obj, cls.FUNCTION)(**kwargs)
        finally:
            bridge.HOST.executing = None
        run.executed.append(node_id)
        ui = None
        if isinstance(result, dict):
            ui = result.get("ui") if "expand" not in result else None
            if result.get("ui"):
                run.ui[run.dyn.get_display_node_id(node_id)].append(result["ui"])
            if "expand" in result:
                for new_id, info in result["expand"].items():
                    run.dyn.add_ephemeral_node(new_id, info, node_id, info.get("override_display_id", node_id))
                new_outputs = [i for i, info in result["expand"].items()
                               if getattr(self.classes[info["class_type"]], "OUTPUT_NODE", False)]
                self.register(new_outputs + [r[0] for r in result["result"] if is_link(r)])
                # ComfyUI picks a ready output node first: one whose inputs are all lazy (the close node's last
                # copy) asks for them before any other copy has run.
                new_outputs.sort(key=lambda i: not self.ready_at_once(i))
                for new_id in new_outputs:
                    self.evaluate(new_id)
                outputs = tuple(self.evaluate(r[0])[r[1]] if is_link(r) else r for r in result["result"])
            else:
                outputs = tuple(result["result"])
        else:
            outputs = tuple(result)
        run.values[node_id] = outputs
        if self.cache is not None:
            self.cache[key] = (outputs, ui)
        return outputs


# -- the stand-in's own behaviour, on toy nodes --------------------------------------------------------------

class Const:
    RETURN_TYPES = ("INT",)
    FUNCTION = "f"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    def f(self, value):
        return (value,)


class AddOne(Const):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}, "optional": {"other": ("INT", {"lazy": True})}}

    def check_lazy_status(self, value, other=None):
        return ["other"] if value < 0 and other is None else []

    def f(self, value, other=None):
        return (value + 1 if other is None else other,)


class Sink:
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "f"
    seen: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    def f(self, value):
        Sink.seen.append(value)
        return {"ui": {"text": [value]}, "result": ()}


class Block(Const):
    def f(self, value):
        return (bridge.blocker(),)


class Expand(Const):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def f(self, value, unique_id):
        graph = {f"{unique_id}.a": {"class_type": "AddOne", "inputs": {"value": value}},
                 f"{unique_id}.s": {"class_type": "Sink", "inputs": {"value": [f"{unique_id}.a", 0]},
                                    "override_display_id": "shown"}}
        return {"result": ([f"{unique_id}.a", 0],), "expand": graph}


TOYS = {"Const": Const, "AddOne": AddOne, "Sink": Sink, "Block": Block, "Expand": Expand}


def test_stand_in_caches_by_signature_and_follows_lazy_blocked_and_expanded_nodes():
    Sink.seen = []
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "Expand", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "Block", "inputs": {"value": 0}},
              "5": {"class_type": "Sink", "inputs": {"value": ["4", 0]}},
              "6": {"class_type": "AddOne", "inputs": {"value": -1, "other": ["1", 0]}},
              "7": {"class_type": "Sink", "inputs": {"value": ["6", 0]}}}
    comfy = MiniComfy(TOYS)
    run = comfy.run(prompt)
    assert sorted(Sink.seen) == [4, 5, 5]            # the expansion's own sink, node 3, and the lazy input
    assert "5" not in run.executed                  # blocked silently
    assert run.ui["shown"] == [{"text": [5]}]        # shown on the node it names
    again = comfy.run(prompt)
    assert again.executed == []                      # everything from the cache
    prompt["1"]["inputs"]["value"] = 5
    assert set(comfy.run(prompt).executed) == {"1", "2", "2.a", "2.s", "3", "6", "7"}
    assert MiniComfy(TOYS, cache=False).run(prompt).executed  # --cache-none runs it all


def test_stand_in_rejects_duplicate_ids():
    dyn = DynPrompt({"1": {"class_type": "Const", "inputs": {}}})
    with pytest.raises(AssertionError):
        dyn.add_ephemeral_node("1", {}, "2", "2")
