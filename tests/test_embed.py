"""FeatureNet on the device: precision choice, fallback, and the device never loads TensorFlow."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edge.vision.embed as embed
from conftest import shipped_bundle
from edge.vision.bundle import load_bundle
from edge.errors import DoorlockError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["default", "dlib"])
def bundle(request):
    """Each shipped bundle: the device takes either FeatureNet (its chip size and template)."""
    return load_bundle(shipped_bundle(request.param))


def test_int8_by_default_and_float_on_request(bundle):
    assert embed.FeatureNet(bundle).precision == "int8"
    assert embed.FeatureNet(bundle, "float").precision == "float"


def test_falls_back_to_float_when_int8_will_not_load(bundle, monkeypatch):
    real = embed.TFLiteModel

    def picky(path, **kw):
        if "int8" in Path(path).name:
            raise DoorlockError(f"cannot load model {Path(path).name}: unsupported op")
        return real(path, **kw)

    monkeypatch.setattr(embed, "TFLiteModel", picky)
    fn = embed.FeatureNet(bundle)
    assert fn.precision == "float"


def test_no_usable_model_is_an_error(bundle, monkeypatch):
    def broken(path, **kw):
        raise DoorlockError("cannot load")

    monkeypatch.setattr(embed, "TFLiteModel", broken)
    with pytest.raises(DoorlockError, match="no usable FeatureNet"):
        embed.FeatureNet(bundle)


def test_edgetpu_required_but_absent_is_an_error(bundle, monkeypatch):
    monkeypatch.setattr(embed, "edgetpu_delegate", lambda: None)
    with pytest.raises(DoorlockError, match="Edge TPU"):
        embed.FeatureNet(bundle, edgetpu=True)


def test_int8_and_float_agree_on_a_real_chip(bundle, shared):
    import cv2

    from edge.vision.align import ARCFACE_TEMPLATE_112, remap_chip

    crops = sorted(shared("data", "faces", "glint_celebs").glob("*/*.jpg"))[:5]
    q, f = embed.FeatureNet(bundle, "int8"), embed.FeatureNet(bundle, "float")
    for p in crops:
        chip = remap_chip(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB),
                          ARCFACE_TEMPLATE_112, bundle.template_points(), bundle.input_size[0])
        a, b = q.embed(chip), f.embed(chip)
        assert a.shape == (128,) and a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


@pytest.mark.parametrize("precision", ["int8", "float"])
def test_chip_and_mirror_in_one_run_equal_two_single_runs(bundle, precision):
    """BioMetricNet-M's batch of 2 gives exactly the features of two separate runs."""
    n = bundle.input_size[0]
    chip = np.random.default_rng(3).integers(0, 256, (n, n, 3), dtype=np.uint8)
    fn = embed.FeatureNet(bundle, precision)
    a, m = fn.embed_with_mirror(chip)
    np.testing.assert_allclose(a, fn.embed(chip), atol=1e-5)
    np.testing.assert_allclose(m, fn.embed(np.ascontiguousarray(chip[:, ::-1])), atol=1e-5)
    assert not np.allclose(a, m)
    with pytest.raises(ValueError, match="FeatureNet wants"):
        fn.embed_with_mirror(np.zeros((n + 2, n + 2, 3), np.uint8))


def test_wrong_chip_size_is_refused(bundle):
    with pytest.raises(ValueError, match="FeatureNet wants"):
        embed.FeatureNet(bundle).embed(np.zeros((100, 100, 3), np.uint8))


def test_the_device_side_never_imports_tensorflow_or_the_converter():
    code = ("import sys, edge.app, edge.kiosk.loop, edge.__main__, edge.enrolment.enrol, edge.tools.demo;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'converter')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
