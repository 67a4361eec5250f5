"""The README stays the one page a new reader needs: short, and naming every module."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _layout_rows(text: str) -> dict[str, str]:
    """The layout table: folder ("edge/vision/") -> the rest of its row."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| `([a-z_/]+/)` \|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_readme_is_short_and_its_layout_table_names_every_module():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 10_000, f"README.md is {len(text)} characters; move detail to docs/"
    rows = _layout_rows(text)
    missing = []
    for pkg in ("edge", "converter"):
        for p in sorted((REPO / pkg).rglob("*.py")):
            folder = p.parent.relative_to(REPO).as_posix() + "/"
            if f"`{p.name}`" not in rows.get(folder, ""):
                missing.append(f"{folder}{p.name}")
    assert missing == [], f"not in the README's layout table: {missing}"


def test_the_layout_reader_sees_a_missing_module():
    rows = _layout_rows("| `edge/vision/` | `align.py` alignment, `detect.py` BlazeFace |\n")
    assert "`detect.py`" in rows["edge/vision/"] and "`embed.py`" not in rows["edge/vision/"]


def test_readme_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text)
               if not t.startswith(("http", "#", "mailto:"))]
    assert targets and all((REPO / t).exists() for t in targets), \
        [t for t in targets if not (REPO / t).exists()]
