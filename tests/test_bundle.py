"""The bundle format: write, load, and refuse anything incomplete, altered or unknown."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import shipped_bundle
from edge.vision.bundle import METADATA, SCHEMA_VERSION, BundleError, load_bundle, write_bundle

REPO = Path(__file__).resolve().parents[1]


def _meta():
    return {
        "featurenet": {
            "models": {"int8": "featurenet_int8.tflite", "float": "featurenet_float.tflite"},
            "input_size": [150, 150], "colour_order": "RGB", "input_range": [0, 255],
            "normalisation": {"mean_rgb": [122.782, 117.001, 104.298], "scale": 1 / 256},
            "alignment_template": {"size": 150, "points": {"right_eye": [47.5, 46.6]}},
        },
        "d": 128, "m": 1,
        "targets": {"match": {"mean": [0.0], "std": 1.0}, "nonmatch": {"mean": [40.0], "std": 1.0}},
        "matcher": {"kind": "l2", "models": {}},
        "threshold": {"metric": "l2", "value": 0.6, "accept": "below"},
        "build": {"command": "test"},
    }


def _files():
    return {"featurenet_int8.tflite": b"int8-model-bytes" * 100,
            "featurenet_float.tflite": b"float-model-bytes" * 100}


@pytest.fixture
def bundle_dir(tmp_path):
    write_bundle(tmp_path / "b1", _meta(), _files())
    return tmp_path / "b1"


def test_round_trip_keeps_metadata_and_hashes(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.metadata["schema_version"] == SCHEMA_VERSION
    assert b.metadata["created_at"].endswith("Z")
    assert set(b.metadata["files"]) == set(_files())
    assert b.model_path("featurenet", "int8").read_bytes() == _files()["featurenet_int8.tflite"]
    assert b.input_size == (150, 150)
    assert b.alignment_template["right_eye"] == (47.5, 46.6)


def test_a_flipped_byte_is_refused_naming_the_file(bundle_dir):
    f = bundle_dir / "featurenet_int8.tflite"
    data = bytearray(f.read_bytes())
    data[10] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="featurenet_int8.tflite: sha256 differs"):
        load_bundle(bundle_dir)


def test_truncated_file_is_refused(bundle_dir):
    f = bundle_dir / "featurenet_float.tflite"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(BundleError, match="featurenet_float.tflite: size differs"):
        load_bundle(bundle_dir)


def test_missing_file_is_refused(bundle_dir):
    (bundle_dir / "featurenet_float.tflite").unlink()
    with pytest.raises(BundleError, match="featurenet_float.tflite: missing"):
        load_bundle(bundle_dir)


def test_missing_metadata_is_refused(bundle_dir):
    (bundle_dir / METADATA).unlink()
    with pytest.raises(BundleError, match="metadata.json: missing"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(schema_version=99), "unknown bundle schema version 99"),
    (lambda m: m.update(schema="something-else"), "not a doorlock bundle"),
    (lambda m: m.pop("threshold"), "missing threshold"),
    (lambda m: m["featurenet"].pop("alignment_template"), "missing featurenet.alignment_template"),
    (lambda m: m["featurenet"]["models"].update(int8="other.tflite"), "other.tflite: used by the metadata but not in its file list"),
    (lambda m: m["files"].update({"../escape": {"sha256": "0"}}), "bad file name"),
])
def test_altered_metadata_is_refused(bundle_dir, edit, message):
    meta_path = bundle_dir / METADATA
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


def test_garbage_metadata_is_one_line_error(bundle_dir):
    (bundle_dir / METADATA).write_bytes(b"\x00\xff not json")
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle_dir)
    assert "\n" not in str(exc.value)


def test_existing_bundle_is_not_overwritten_by_default(bundle_dir):
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(bundle_dir, _meta(), _files())


def test_failed_write_leaves_the_old_bundle_intact(bundle_dir):
    bad = _meta()
    bad.pop("d")
    with pytest.raises(BundleError, match="lacks d"):
        write_bundle(bundle_dir, bad, _files(), overwrite=True)
    load_bundle(bundle_dir)  # still verifies
    leftovers = [p.name for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_overwrite_replaces_whole_bundle(bundle_dir):
    files = {"featurenet_int8.tflite": b"new", "featurenet_float.tflite": b"new float"}
    b = write_bundle(bundle_dir, _meta(), files, overwrite=True)
    assert b.model_path("featurenet", "float").read_bytes() == b"new float"


def test_missing_precision_is_a_clear_error(bundle_dir):
    b = load_bundle(bundle_dir)
    with pytest.raises(BundleError, match="no int8 modelnet model"):
        b.model_path("modelnet", "int8")


@pytest.mark.parametrize("name, size, arch", [("default", 112, "mobilefacenet"), ("dlib", 150, "dlib")])
def test_shipped_bundles_verify_and_say_what_they_are(name, size, arch):
    """Both shipped bundles: MobileFaceNet (the default) and dlib's ResNet (CC0 weights)."""
    b = load_bundle(shipped_bundle(name))
    assert b.input_size == (size, size)
    assert b.metadata["d"] == 128
    assert b.metadata["featurenet"].get("arch") == arch
    for precision in ("int8", "float"):
        assert b.model_path("featurenet", precision).is_file()
    q = b.metadata["quality"]
    assert q["int8_vs_float_cosine_mean"] > 0.99
    if arch:  # each bundle names where its weights came from
        fn = b.metadata["featurenet"]
        assert fn["licence"] and fn["training_data"] and fn["source"]


def test_copy_of_bundle_still_verifies(bundle_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    load_bundle(copy)
