"""The bundle's metadata is checked like code (edge/vision/bundle_check.py): edits that would let
strangers in, and mistyped fields, are refused in one line when the bundle loads; a
threshold override laxer than the calibration reaches is refused too."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import shipped_bundle
from edge.vision.bundle import BundleError, load_bundle
from edge.vision.match import matcher_from_bundle

REPO = Path(__file__).resolve().parents[1]


def _edited(tmp_path, name, edit):
    """A copy of a shipped bundle with metadata.json edited and its file list kept: what
    someone who can write the bundle folder could do."""
    dst = tmp_path / name
    shutil.copytree(shipped_bundle(name), dst)
    meta = json.loads((dst / "metadata.json").read_text())
    edit(meta)
    (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


def _set(path, value):
    def edit(meta):
        node = meta
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("name, path, value, why", [
    ("dlib", ("threshold", "value_flips"), 40, "outside what a calibration gives"),
    ("dlib", ("matcher", "kind"), "l2", "does not fit a l2 matcher"),
    ("dlib", ("matcher", "kind"), "open", "is not one of"),
    ("default", ("threshold", "value_flips"), 1.5, "outside what a calibration gives"),
    ("default", ("threshold", "value"), "0.6", "is not a number"),
    ("default", ("threshold", "value"), [0.6], "is not a number"),
    ("default", ("threshold", "far"), 0.5, "is not a FAR"),
    ("default", ("featurenet", "input_size"), ["112", "112"], "input_size"),
    ("default", ("featurenet", "models"), "featurenet_int8.tflite", "featurenet.models"),
    ("default", ("d",), True, "is not an integer"),
    ("default", ("featurenet", "alignment_template", "points", "nose_tip"), ["a", 1], "not a point"),
])
def test_edits_that_would_open_the_door_or_crash_it_are_refused(tmp_path, name, path, value, why):
    b = _edited(tmp_path, name, _set(path, value))
    with pytest.raises(BundleError) as e:
        load_bundle(b)
    msg = str(e.value)
    assert why in msg and "\n" not in msg and len(msg) < 400


def test_both_shipped_bundles_pass_the_checks():
    for name in ("default", "dlib"):
        load_bundle(shipped_bundle(name))


@pytest.mark.parametrize("name, flips, value, ok", [
    ("default", True, 0.60, True),       # stricter than the bundle's: allowed
    ("default", True, 0.80, False),      # laxer than FAR 1e-2's entry
    ("default", True, 100.0, False),
    ("default", True, 1e308, False),
    ("dlib", True, 12.0, True),
    ("dlib", True, 19.0, False),         # laxer than its calibrated FAR 1e-3
    ("dlib", False, -1.0, False),
])
def test_threshold_override_is_bounded_by_the_calibration(name, flips, value, ok):
    b = load_bundle(shipped_bundle(name))
    if ok:
        assert matcher_from_bundle(b, flips=flips, threshold_override=value).threshold == value
    else:
        with pytest.raises(BundleError, match="threshold_override") as e:
            matcher_from_bundle(b, flips=flips, threshold_override=value)
        assert "\n" not in str(e.value)
