"""Import rules, read from the source (every import, the lazy ones inside functions too):
the device package never reaches the converter, TensorFlow, Keras or PyTorch, and the
recognition pipeline never reaches the door, the screen or enrolment."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_FOR_EDGE = ("converter", "tensorflow", "keras", "torch")
VISION = ("camera", "runtime", "detect", "landmarks", "align", "embed", "match", "bundle",
          "bundle_check", "gallery")
NOT_FOR_VISION = ("door", "lock", "screen", "stick", "enrol", "keys", "kiosk", "app", "bench",
                  "schedule", "watchdog", "liveness", "attacks", "demo")


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
                out.add(mod)
                if not node.module:   # from . import x
                    out.update(f"{mod}.{a.name}" for a in node.names)
            else:
                out.add(node.module)
    return out


def _modules(pkg: str):
    return sorted((REPO / pkg).glob("*.py"))


@pytest.mark.parametrize("path", _modules("edge"), ids=lambda p: p.stem)
def test_the_device_never_imports_the_converter_or_a_training_framework(path):
    bad = sorted(m for m in imports(path, "edge") if m.split(".")[0] in FORBIDDEN_FOR_EDGE)
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("name", VISION)
def test_the_recognition_pipeline_never_imports_door_screen_or_enrolment(name):
    got = imports(REPO / "edge" / f"{name}.py", "edge")
    bad = sorted(m for m in got if m.startswith("edge.") and m.split(".")[1] in NOT_FOR_VISION)
    assert bad == [], f"edge/{name}.py imports {bad}"


def test_the_reader_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import tensorflow as tf\n    from .kiosk import Kiosk\n")
    assert {"tensorflow", "edge.kiosk"} <= imports(f, "edge")
