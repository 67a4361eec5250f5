"""Import rules, read from the source (every import, the lazy ones inside functions too):
the device never reaches the converter, a training framework or the tools package; the
recognition pipeline never reaches the door, the screen or enrolment; and no two modules
import each other, however indirectly."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_FOR_EDGE = ("converter", "tensorflow", "keras", "torch")
# edge's layers below the pipeline's users: vision may import only these of edge
VISION_MAY_IMPORT = ("edge.vision", "edge.errors", "edge.assets", "edge.service")
# the command line may start a tool; nothing that runs at the door may
MAY_IMPORT_TOOLS = ("edge.__main__", "edge.cli", "edge.tools")


def imports(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # from pkg import module
    return out


def modules(top: str) -> dict[str, tuple[Path, str]]:
    """Dotted module name -> (file, the package its relative imports start from)."""
    out = {}
    for p in sorted((REPO / top).rglob("*.py")):
        parts = p.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (p, name if p.name == "__init__.py" else name.rpartition(".")[0])
    return out


EDGE = modules("edge")


def edge_imports(name: str) -> set[str]:
    """The edge modules `name` imports (a `from pkg import mod` counts as mod)."""
    path, package = EDGE[name]
    got = set()
    for m in imports(path, package):
        while m and m not in EDGE:
            m = m.rpartition(".")[0]
        if m and m != name and m != "edge":
            got.add(m)
    return got


@pytest.mark.parametrize("name", sorted(EDGE))
def test_the_device_never_imports_the_converter_or_a_training_framework(name):
    path, package = EDGE[name]
    bad = sorted(m for m in imports(path, package) if m.split(".")[0] in FORBIDDEN_FOR_EDGE)
    assert bad == [], f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in EDGE if not n.startswith(MAY_IMPORT_TOOLS)))
def test_nothing_that_runs_at_the_door_imports_the_tools(name):
    bad = sorted(m for m in edge_imports(name) if m.startswith("edge.tools"))
    assert bad == [], f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in EDGE if n.startswith("edge.vision")))
def test_the_recognition_pipeline_never_imports_door_screen_or_enrolment(name):
    bad = sorted(m for m in edge_imports(name) if not m.startswith(VISION_MAY_IMPORT))
    assert bad == [], f"{name} imports {bad}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = n
        n += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = n
                    n += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_circle_in_edge():
    assert _cycles({name: edge_imports(name) for name in EDGE}) == []


def test_the_reader_sees_lazy_imports_and_circles(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import tensorflow as tf\n    from .kiosk import loop\n")
    assert {"tensorflow", "edge.kiosk", "edge.kiosk.loop"} <= imports(f, "edge")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
