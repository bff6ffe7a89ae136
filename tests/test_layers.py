"""Rules of the code's shape, kept by a test instead of by memory: the engine never imports ComfyUI, node files
reach ComfyUI only through the bridge and never import each other, and imports run one way (no cycles, no
import from a lower layer up into a higher one), read from the source with ``ast``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.floors

ROOT = Path(__file__).resolve().parent.parent
COMFY = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "server", "execution",
         "latent_preview", "node_helpers", "nodes"}   # ComfyUI's top-level modules ("nodes" is one of them too)

# The layers, lowest first: a module may import its own layer or lower ones, never a higher one.
ENGINE_LAYERS = [
    {"errors", "progress", "weights", "cost", "stats"},
    {"images", "devices"},
    {"arm", "correct", "memory"},
    {"state"},
    {"story", "report", "video"},
    {"bench"},
    {"tiny", "toy", "convert", "metrics"},
    {"cli", "cli_common", "cli_video", "cli_bench"},
]
NODE_HELPERS = {"wires", "widgets", "frames", "graph", "masks", "comfy_corrector"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved; ``from x import y`` gives
    x.y when x.y is a module of the project, else x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if candidate in MODULES else base)
    return found


FILES = sorted(p for folder in ("acdc_core", "nodes") for p in (ROOT / folder).rglob("*.py"))
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): {i for i in imports(p) if i in MODULES} for p in FILES}


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_engine_never_imports_comfyui():
    for path in (ROOT / "acdc_core").rglob("*.py"):
        bad = {i for i in imports(path) if top(i) in COMFY}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_node_files_reach_comfyui_only_through_the_bridge_and_never_import_each_other():
    for path in (ROOT / "nodes").glob("*.py"):
        name = path.stem
        reached = {i for i in imports(path) if top(i) in COMFY - {"nodes"}}
        if name != "bridge":
            assert not reached, f"nodes/{path.name} imports ComfyUI ({reached}); go through nodes/bridge.py"
        if name not in NODE_HELPERS | {"bridge", "__init__"}:
            siblings = {i for i in GRAPH[f"nodes.{name}"] if i.startswith("nodes.")
                        and i.split(".")[1] not in NODE_HELPERS | {"bridge"}}
            assert not siblings, f"the node file nodes/{path.name} imports other node files: {siblings}"


def test_imports_run_one_way_in_the_engine():
    rank = {part: k for k, layer in enumerate(ENGINE_LAYERS) for part in layer}
    for name, targets in GRAPH.items():
        if not name.startswith("acdc_core.") or name.count(".") < 1:
            continue
        own = rank[name.split(".")[1]]
        for target in targets:
            assert target.startswith("acdc_core"), f"{name} imports {target}"
            if target != "acdc_core":
                assert rank[target.split(".")[1]] <= own, f"{name} (layer {own}) imports {target} from above"


def test_inside_nodes_helpers_sit_below_node_files_and_the_bridge_below_all():
    for name, targets in GRAPH.items():
        if not name.startswith("nodes."):
            continue
        own = name.split(".")[1]
        for target in targets:
            if target.startswith("acdc_core"):
                continue
            assert target.startswith("nodes"), f"{name} imports {target}"
            other = target.split(".")[1] if "." in target else "__init__"
            if own == "bridge":
                raise AssertionError(f"the bridge imports {target}; it is the lowest layer of the pack")
            if own in NODE_HELPERS:
                assert other in NODE_HELPERS | {"bridge"}, f"the helper {name} imports {target}"
            assert other != "__init__", f"{name} imports the package itself"


def test_there_is_no_import_cycle():
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in GRAPH.get(name, ()):
            if target == name or (name.startswith(target + ".") and target in GRAPH):
                continue   # a package's own modules importing it (its __init__) is how Python packages load
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [target]))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
