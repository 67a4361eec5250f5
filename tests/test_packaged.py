"""The models ship inside edge (package data, importlib.resources): the packaged files
are the ones NOTICE vouches for, and "default" names the packaged bundle."""

import hashlib
from pathlib import Path

import edge
from edge.assets import bundle_path, mediapipe_dir
from edge.bundle import load_bundle

PKG = Path(edge.__file__).parent


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
