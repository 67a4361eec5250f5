"""The README stays the one page a new reader needs: short, and naming every module."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_its_layout_table_names_every_module():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 10_500, f"README.md is {len(text)} characters; move detail to docs/"
    missing = [f"{p.parent.name}/{p.name}" for pkg in ("edge", "converter")
               for p in sorted((REPO / pkg).glob("*.py")) if f"`{pkg}/{p.name}`" not in text]
    assert missing == [], f"not in the README's layout table: {missing}"


def test_readme_links_resolve():
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text)
               if not t.startswith(("http", "#", "mailto:"))]
    assert targets and all((REPO / t).exists() for t in targets), \
        [t for t in targets if not (REPO / t).exists()]
