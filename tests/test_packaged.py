"""The models ship inside edge (package data, importlib.resources): the packaged files
are the ones NOTICE vouches for, and "default" names the packaged bundle."""

import hashlib
import re
import tomllib
from pathlib import Path

import pytest

import edge
from edge.assets import bundle_path, mediapipe_dir
from edge.vision.bundle import load_bundle

PKG = Path(edge.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def test_mediapipe_models_match_their_notice_and_carry_their_licence():
    d = mediapipe_dir()
    notice = (d / "NOTICE").read_text(encoding="utf-8")
    sums = dict(reversed(line.split()) for line in notice.splitlines()
                if len(line.split()) == 2 and len(line.split()[0]) == 64)
    assert sorted(sums) == sorted(p.name for p in d.glob("*.tflite")) == [
        "face_detection_full_range.tflite", "face_detection_short_range.tflite", "face_landmark.tflite"]
    for name, digest in sums.items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (d / "LICENSE").read_text(encoding="utf-8")[:200]


def test_default_names_the_packaged_bundle_and_anything_else_is_a_path():
    assert bundle_path("default") == PKG / "models" / "default"
    assert load_bundle(bundle_path("default")).metadata["featurenet"]["models"]
    assert bundle_path("./default") == Path("default") != bundle_path("default")  # a folder of that name
    assert bundle_path("models/dlib") == Path("models/dlib")


def _requirements(path: Path) -> set[str]:
    """A requirements file's requirements, following -r, spaces and comments dropped."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"\s+#.*|^#.*", "", line).strip()
        if line.startswith("-r "):
            out |= _requirements(path.parent / line[3:].strip())
        elif line:
            out.add(re.sub(r"\s+", "", line).lower())
    return out


def _extra(project: dict, name: str) -> set[str]:
    """An extra of pyproject.toml, with its own doorlock[...] references expanded."""
    out = set()
    for req in project["optional-dependencies"][name]:
        if m := re.fullmatch(r"doorlock\[(.+)\]", req):
            for other in m.group(1).split(","):
                out |= _extra(project, other.strip())
        else:
            out.add(re.sub(r"\s+", "", req).lower())
    return out


@pytest.mark.parametrize("file, extra", [("requirements.txt", None), ("requirements-demo.txt", "demo"),
                                         ("requirements-converter.txt", "converter"),
                                         ("requirements-test.txt", "test")])
def test_requirements_files_are_pyprojects_lists(file, extra):
    """pyproject.toml is the one list; each requirements file is the device set plus one extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    want = {re.sub(r"\s+", "", r).lower() for r in project["dependencies"]}
    if extra:
        want |= _extra(project, extra)
    got = _requirements(REPO / file)
    assert got == want, f"{file}: missing {sorted(want - got)}, not in pyproject {sorted(got - want)}"


def test_the_kiosk_needs_neither_scikit_image_nor_tqdm():
    """They are the demo's and the converter's extras: only edge/tools/demo.py imports one (lazily,
    for the sample photo), and neither is a device dependency."""
    from test_import_rules import imports

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [r for r in project["dependencies"] if r.startswith(("scikit-image", "tqdm"))]
    users = {p.relative_to(PKG).as_posix() for p in sorted(PKG.rglob("*.py"))
             if any(m.split(".")[0] in ("skimage", "tqdm") for m in imports(p, "edge"))}
    assert users == {"tools/demo.py"}
