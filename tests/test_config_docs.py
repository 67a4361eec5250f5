"""doorlock.toml and docs/configuration.md are written from the key declarations and
cannot drift from them: the committed files, the ranges they show and the generator."""

import dataclasses
import re

import pytest

from edge import config_docs
from edge.config import SECTIONS, config_from_dict
from edge.errors import DoorlockError
from edge.settings import DOC_ORDER


def test_committed_files_are_what_the_generator_writes():
    assert config_docs.stale() == [], "run: python -m edge.config_docs"


def test_check_finds_a_hand_edit_and_a_missing_file(tmp_path, capsys):
    for rel in config_docs.outputs():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    assert config_docs.main(["--root", str(tmp_path)]) == 0
    assert config_docs.main(["--check", "--root", str(tmp_path)]) == 0
    toml = tmp_path / config_docs.TOML_PATH
    toml.write_text(toml.read_text().replace("pin = 17", "pin = 18"))
    (tmp_path / config_docs.MD_PATH).unlink()
    capsys.readouterr()
    assert config_docs.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "doorlock.toml differs" in err and "configuration.md differs" in err
    assert config_docs.stale(tmp_path) == [config_docs.TOML_PATH, config_docs.MD_PATH]


def _fields():
    return [(name, f) for name in DOC_ORDER for f in dataclasses.fields(SECTIONS[name])]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _toml_line(f) -> str:
    m = f.metadata
    if m["optional"]:
        return f"# {f.name} = {config_docs.toml_value(m['example'])}"
    return f"{f.name} = {config_docs.toml_value(f.default)}"


def _comments_above_keys() -> dict[tuple[str, str], str]:
    """{(section, key): the comment right above the key's line}, as one line of text."""
    lines = config_docs.render_toml().splitlines()
    out = {}
    for name in DOC_ORDER:
        keys = {_toml_line(f): f.name for f in dataclasses.fields(SECTIONS[name])}
        block = []
        for ln in lines[lines.index(f"[{name}]") + 1:]:
            if ln.startswith("["):
                break
            if ln in keys:
                out[(name, keys[ln])] = _flat(" ".join(c[1:] for c in block))
                block = []
            elif ln.startswith("#"):
                block.append(ln)
    return out


def _md_row(name: str, key: str) -> str:
    section = config_docs.render_markdown().split(f"\n## [{name}]\n")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith(f"| `{key}` | ")]
    assert len(rows) == 1, f"{name}.{key}"
    return rows[0]


def test_every_section_once_and_every_key_documented():
    assert sorted(DOC_ORDER) == sorted(SECTIONS)
    comments = _comments_above_keys()
    for name, f in _fields():
        m = f.metadata
        assert m["doc"].strip() and "|" not in m["doc"], f"{name}.{f.name}"
        assert (m["example"] is not None) == m["optional"] == (f.default is None), f"{name}.{f.name}"
        # doorlock.toml says the doc right above the key (once), the page has its row
        assert _flat(m["doc"]) in comments[(name, f.name)], f"{name}.{f.name}"
        assert _md_row(name, f.name)
        if m["optional"]:  # the commented-out example in doorlock.toml is a valid value
            assert getattr(getattr(config_from_dict({name: {f.name: m["example"]}}), name), f.name) == m["example"]
    assert len(comments) == len(_fields())


def _validator_range(name, f) -> str:
    """The range the validator's out-of-range message names for a number key."""
    m = f.metadata
    value = (m["hi"] + 1) if m["hi"] is not None else (m["lo"] - 1)
    with pytest.raises(DoorlockError) as exc:
        config_from_dict({name: {f.name: value}})
    return re.search(r"\(allowed: (.*)\)$", str(exc.value))[1]


def test_the_ranges_shown_are_the_validators():
    """Each number key's range in both files is the one its out-of-range error names."""
    comments = _comments_above_keys()
    checked = 0
    for name, f in _fields():
        m = f.metadata
        if m["kind"] not in ("int", "float") or (m["lo"] is None and m["hi"] is None):
            continue
        shown = m["rule"] or _validator_range(name, f)
        assert f"Allowed: {shown}." in comments[(name, f.name)], f"{name}.{f.name}"
        assert f" | `{shown}` | " in _md_row(name, f.name), f"{name}.{f.name}"
        checked += 1
    assert checked > 40


def test_choices_are_all_named():
    comments = _comments_above_keys()
    for name, f in _fields():
        if f.metadata["kind"] == "choice":
            for c in f.metadata["choices"]:
                assert f'"{c}"' in comments[(name, f.name)] and f'`"{c}"`' in _md_row(name, f.name)


def test_markdown_text_is_escaped_and_linked():
    md = config_docs._md('Topic root; "" = "doorlock/<door_id>", a <b> tag, see docs/mqtt.md#topics & docs/x.md.')
    assert md == ('Topic root; `""` = `"doorlock/<door_id>"`, a &lt;b&gt; tag, see '
                  '[mqtt.md](mqtt.md#topics) &amp; [x.md](x.md).')
    assert config_docs._cell("a:\n  one\n  two") == "a:<br>one<br>two"
    with pytest.raises(ValueError):
        config_docs._cell("a | b")


def test_toml_values():
    tv = config_docs.toml_value
    assert (tv(True), tv(3), tv(15.0), tv(1e-07), tv("a\"b"), tv(()), tv(("x", "y"))) == (
        "true", "3", "15.0", "1e-07", '"a\\"b"', "[]", '["x", "y"]')


def _anchor(heading: str) -> str:
    """GitHub's id for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_files_and_pages_the_texts_name_exist():
    repo = config_docs.REPO
    texts = [m.metadata["doc"] for _, m in _fields()]
    texts += [getattr(SECTIONS[name], "about", "") for name in DOC_ORDER]
    text = "\n".join(texts)
    paths = set(re.findall(r"\bedge/[\w/]+\.py\b", text)) | set(re.findall(r"\bdocs/[\w-]+\.md\b", text))
    assert len(paths) > 10 and [p for p in paths if not (repo / p).is_file()] == []
    for page, anchor in re.findall(r"\bdocs/([\w-]+\.md)#([\w-]+)", text):
        headings = re.findall(r"^#+ (.*)$", (repo / "docs" / page).read_text(encoding="utf-8"), flags=re.M)
        assert anchor in {_anchor(h) for h in headings}, f"docs/{page}#{anchor}"
    for folder in re.findall(r"\(edge/models/(\w+)\)", text):
        assert (repo / "edge/models" / folder).is_dir()
