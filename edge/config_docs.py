"""firmware_config/doorlock.toml and docs/configuration.md, written from edge/settings.py.

Both are generated so that a key's default, range and text cannot drift apart:
`python -m edge.config_docs` rewrites them, `--check` exits 1 when they differ
(tests/test_config_docs.py runs the check). Edit edge/settings.py, never the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import textwrap
from pathlib import Path

from edge.settings import DOC_ORDER, SECTIONS, allowed

REPO = Path(__file__).resolve().parents[1]
TOML_PATH = Path("firmware_config/doorlock.toml")
MD_PATH = Path("docs/configuration.md")
NBSP = "\x00"  # a space the wrapping keeps (a range is not split over two lines)
WIDTH = 94  # a comment line in doorlock.toml, "# " included

TOML_HEAD = """\
doorlock — kiosk configuration (TOML). Installed as /etc/doorlock/doorlock.toml.

Every key below is shown with its default value: delete a line and the default applies.
The service refuses to start on a mistake (unknown key, wrong type, value out of range)
and says which key is wrong, so a typo never silently falls back to a default.
Relative paths are taken from the service's working directory.
Any key can be overridden for one run on the command line as section.key=value."""

MD_HEAD = """\
<!-- Written by `python -m edge.config_docs` from edge/settings.py: edit that, not this page. -->
# Configuration keys

The kiosk reads one TOML file, installed as `/etc/doorlock/doorlock.toml`
(`firmware_config/doorlock.toml` shows every key with its default and a comment). Every key
is declared once, in `edge/settings.py`, with its type, default, range and the text below;
`edge/config.py` validates a file against them, and this page and `doorlock.toml` are
written from them by `python -m edge.config_docs`. Delete a line and the default applies. The
service refuses to start on a mistake (unknown key, wrong type, value out of range) and
says which key is wrong, so a typo never silently falls back to a default. Relative paths
are taken from the service's working directory. Any key can be overridden for one run on
the command line with `--set section.key=value`.

The demo (`python -m edge run` without `--config`) refuses `--gallery` and `--set` of
`recognition.gallery`, `audit.path`, `audit.debug_dir` and `screen.path` (exit 2): it
writes only in its own temporary folder. Give `--config` to run the kiosk on real data."""

TYPES = {"int": "integer", "float": "number", "bool": "true/false", "str": "string",
         "choice": "string", "edgetpu": '"auto" or true/false', "strlist": "list of strings"}


def toml_value(value) -> str:
    """A default as doorlock.toml writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _keys(name: str):
    return dataclasses.fields(SECTIONS[name])


def _rule(m) -> str:
    """The sentence doorlock.toml adds to a key's text: its range, or choices it leaves out."""
    if m["kind"] in ("int", "float"):
        return f"Allowed: {m['rule'] or allowed(m)}.".replace(" ", NBSP)
    if m["kind"] == "choice" and not all(f'"{c}"' in m["doc"] for c in m["choices"]):
        return "One of " + ", ".join(f'"{c}"' for c in m["choices"]) + "."
    return ""


def _comment(text: str) -> list[str]:
    """Text as doorlock.toml comment lines: wrapped; a line starting with two spaces is a
    list item, its continuation indented under it."""
    out = []
    for line in text.split("\n"):
        item = line.startswith("  ")
        out += textwrap.wrap(line.strip(), WIDTH - 2, initial_indent="  " if item else "",
                             subsequent_indent="    " if item else "", break_long_words=False,
                             break_on_hyphens=False) or [""]
    return [("# " + ln if ln else "#").replace(NBSP, " ") for ln in out]


def render_toml() -> str:
    lines = _comment(TOML_HEAD)
    for name in DOC_ORDER:
        lines += ["", f"[{name}]"]
        about = getattr(SECTIONS[name], "about", "")
        if about:
            lines += _comment(about) + ["#"]
        for f in _keys(name):
            m = f.metadata
            doc = m["doc"]
            rule = _rule(m)
            if rule:
                doc = doc + ("\n" if "\n" in doc else " ") + rule
            lines += _comment(doc)
            if m["optional"]:
                lines.append(f"# {f.name} = {toml_value(m['example'])}")
            else:
                lines.append(f"{f.name} = {toml_value(f.default)}")
    return "\n".join(lines) + "\n"


_QUOTED = re.compile(r'("[^"\n]{0,40}")')
_DOC_LINK = re.compile(r"docs/([\w-]+\.md)(#[\w-]+)?")


def _md(text: str) -> str:
    """Plain text as Markdown: quoted values as code, docs/x.md as links, < > escaped."""
    parts = _QUOTED.split(text)
    for i in range(0, len(parts), 2):
        s = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = _DOC_LINK.sub(lambda mo: f"[{mo[1]}]({mo[1]}{mo[2] or ''})", s)
    for i in range(1, len(parts), 2):
        parts[i] = f"`{parts[i]}`"
    return "".join(parts)


def _cell(text: str) -> str:
    if "|" in text:
        raise ValueError(f"a '|' would break the table: {text!r}")
    return "<br>".join(_md(line.strip()) for line in text.split("\n"))


def _range(m) -> str:
    if m["kind"] in ("int", "float"):
        return f"`{m['rule'] or allowed(m)}`"
    if m["kind"] == "choice":
        return ", ".join(f'`"{c}"`' for c in m["choices"])
    if m["kind"] == "edgetpu":
        return '`"auto"`, `true`, `false`'
    return "—"


def render_markdown() -> str:
    out = [MD_HEAD]
    for name in DOC_ORDER:
        out += ["", f"## [{name}]", ""]
        about = getattr(SECTIONS[name], "about", "")
        for para in filter(None, about.split("\n")):
            out += [_md(para), ""]
        out += ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for f in _keys(name):
            m = f.metadata
            kind = TYPES[m["kind"]] + (", optional" if m["optional"] else "")
            default = "unset" if f.default is None else f"`{toml_value(f.default)}`"
            out.append(f"| `{f.name}` | {_md(kind)} | {default} | {_range(m)} | {_cell(m['doc'])} |")
    return "\n".join(out) + "\n"


def outputs() -> dict[Path, str]:
    """Each generated file (relative to the repository) and the text it must hold."""
    assert sorted(DOC_ORDER) == sorted(SECTIONS), "DOC_ORDER must name every section once"
    return {TOML_PATH: render_toml(), MD_PATH: render_markdown()}


def stale(root: Path = REPO) -> list[Path]:
    """The generated files under `root` that differ from what this module writes."""
    out = []
    for rel, text in outputs().items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.config_docs", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report files that differ (exit 1)")
    ap.add_argument("--root", type=Path, default=REPO, help="the repository (default: this checkout)")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale(args.root)
        for rel in bad:
            print(f"{rel} differs from edge/settings.py: run python -m edge.config_docs", file=sys.stderr)
        return 1 if bad else 0
    for rel, text in outputs().items():
        (args.root / rel).write_text(text, encoding="utf-8")
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
