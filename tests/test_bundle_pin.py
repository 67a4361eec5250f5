"""The gallery pins the bundle it was enrolled with (metadata.json's sha256, which lists
every model file's sha256): a bundle edited afterwards, even within the metadata's valid
ranges, is refused by the kiosk and by enrolment; only the installer records a new one."""

import json
import shutil

import numpy as np
import pytest

from edge.app import install_gallery, load_models
from edge.assets import bundle_path
from edge.vision.bundle import load_bundle
from edge.config import config_from_dict
from edge.vision.gallery import Gallery, GalleryError, featurenet_fingerprint, load_gallery


@pytest.fixture
def door(tmp_path):
    """A copy of the default bundle and a gallery of one person enrolled with it."""
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(bundle_path(config_from_dict({}).recognition.bundle), bundle_dir)
    cfg = config_from_dict({"recognition": {"bundle": str(bundle_dir), "gallery": str(tmp_path / "gallery")}})
    bundle = load_bundle(bundle_dir)
    g = Gallery(featurenet_fingerprint(bundle), bundle.metadata["d"], bundle_sha256=bundle.metadata_sha256)
    g.add("Ada", np.random.default_rng(0).normal(size=(1, bundle.metadata["d"])).astype(np.float32))
    path = tmp_path / "gallery" / "gallery.npz"
    g.save(path)
    return cfg, bundle_dir, path


def _edit_threshold(bundle_dir, factor):
    """What the issue found: a threshold moved by hand in metadata.json. The model files are
    untouched, so their sha256s in the metadata still hold."""
    meta_path = bundle_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    t = meta["threshold"]
    key = next(k for k in ("value_flips", "value") if isinstance(t.get(k), (int, float)))
    t[key] = t[key] * factor
    meta_path.write_text(json.dumps(meta, indent=1))


def test_the_pin_is_recorded_at_enrolment(door):
    cfg, bundle_dir, path = door
    assert load_gallery(path).bundle_sha256 == load_bundle(bundle_dir).metadata_sha256
    assert load_models(cfg).gallery.names == ["Ada"]


def test_an_edited_bundle_is_refused_in_one_line(door):
    cfg, bundle_dir, _ = door
    _edit_threshold(bundle_dir, 0.999)   # still inside every range the metadata check allows
    load_bundle(bundle_dir)              # the bundle alone still loads ...
    with pytest.raises(GalleryError) as e:
        load_models(cfg)                 # ... but not with the gallery that pinned it
    assert "bundle changed since enrolment" in str(e.value) and "\n" not in str(e.value)


def test_the_installer_records_an_updated_bundle(door):
    cfg, bundle_dir, path = door
    _edit_threshold(bundle_dir, 0.999)
    before = path.read_bytes()
    assert "now pins the installed bundle" in install_gallery(cfg)
    assert load_models(cfg).gallery.names == ["Ada"]   # the people are kept
    assert path.read_bytes() != before
    assert "already pins" in install_gallery(cfg)


def test_the_installer_makes_an_empty_gallery_that_pins(tmp_path, door):
    cfg, bundle_dir, _ = door
    cfg = cfg.replace(recognition={"gallery": str(tmp_path / "new")})
    assert "made an empty gallery" in install_gallery(cfg)
    g = load_gallery(tmp_path / "new" / "gallery.npz")
    assert len(g) == 0 and g.bundle_sha256 == load_bundle(bundle_dir).metadata_sha256


def test_a_gallery_from_before_pins_takes_the_bundle_at_its_next_save(door):
    cfg, bundle_dir, path = door
    g = load_gallery(path)
    g.bundle_sha256 = None
    g.save(path)
    parts = load_models(cfg)
    assert parts.gallery.bundle_sha256 == load_bundle(bundle_dir).metadata_sha256
    parts.gallery.save(path)
    assert load_gallery(path).bundle_sha256 == parts.bundle.metadata_sha256


def test_a_bad_pin_in_the_header_is_a_corrupt_gallery(door):
    _, _, path = door
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"]))
    header["bundle_sha256"] = ["not", "a", "digest"]
    arrays["header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(GalleryError, match="bad bundle pin"):
        load_gallery(path)
