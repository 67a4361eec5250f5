"""The house rules a reader relies on: no module so long that it mixes jobs, and module
docstrings that say what and why in a few lines (designs live in docs/)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400
MAX_DOC_LINES = 10
MODULES = sorted(p for pkg in ("edge", "converter") for p in (REPO / pkg).rglob("*.py"))


def _name(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_over_400_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{_name(path)} has {n} lines: split it by job"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_docstrings_are_short(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
    n = len(doc.strip().splitlines())
    assert n <= MAX_DOC_LINES, f"{_name(path)}: a {n}-line docstring; move the design to docs/"
