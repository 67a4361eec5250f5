"""The device takes either shipped FeatureNet from its bundle, and a gallery enrolled with
one is refused by the other with a message that says how to re-enrol."""

from pathlib import Path

import numpy as np
import pytest

from conftest import shipped_bundle
from edge.app import load_models
from edge.config import config_from_dict
from edge.vision.gallery import Gallery, GalleryError, featurenet_fingerprint

REPO = Path(__file__).resolve().parents[1]


def _cfg(bundle, gallery):
    return config_from_dict({"recognition": {"bundle": str(shipped_bundle(bundle)), "gallery": str(gallery)},
                             "relay": {"simulated": True}})


@pytest.mark.parametrize("name, size", [("default", 112), ("dlib", 150)])
def test_each_bundle_sets_the_chip_and_template_it_was_trained_on(name, size, tmp_path):
    from edge.tools.demo import SAMPLE_NAME, sample_face_photo
    from edge.enrolment.enrol import enrol_face

    parts = load_models(_cfg(name, tmp_path / "g.npz"), empty_gallery=True)
    assert parts.featurenet.size == (size, size)
    face = enrol_face(sample_face_photo(), parts.detector, parts.featurenet)
    assert face.vector.shape == (128,) and face.flip.shape == (128,)
    parts.gallery.add(SAMPLE_NAME, face.vector, flips=face.flip)
    parts.gallery.save(tmp_path / "g.npz")
    again = load_models(_cfg(name, tmp_path / "g.npz"))
    assert again.gallery.names == [SAMPLE_NAME]


@pytest.mark.parametrize("enrolled_with, loaded_with", [("dlib", "default"), ("default", "dlib")])
def test_a_gallery_of_the_other_featurenet_is_refused_with_the_way_back(enrolled_with, loaded_with, tmp_path):
    from edge.vision.bundle import load_bundle

    other = load_bundle(shipped_bundle(enrolled_with))
    g = Gallery(featurenet_fingerprint(other), 128)
    g.add("Ada", np.ones((1, 128), np.float32))
    path = tmp_path / "gallery.npz"
    g.save(path)
    with pytest.raises(GalleryError) as e:
        load_models(_cfg(loaded_with, path))
    msg = str(e.value)
    assert "another FeatureNet" in msg and "re-enrol" in msg and "edge enrol --from" in msg
    assert "\n" not in msg
