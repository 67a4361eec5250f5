"""FeatureNet: our reader + Keras rebuild equals dlib's own network on real faces, and its
TFLite exports (float and full int8) keep that, with Edge TPU ops only."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.dlib_reader import (DlibFormatError, default_weights_path, expected_layer_signature,
                                   read_face_resnet)

from session_cache import computed_once

dlib = pytest.importorskip("dlib", reason="dlib-bin is the test-only reference implementation")
frm = pytest.importorskip("face_recognition_models")

REPO = Path(__file__).resolve().parents[1]


def _dlib_chips(paths):
    """dlib's own aligned 150x150 chips (HOG detector + 5-point landmarks, padding 0.25).
    The detector runs on the photos as they are (no upsampling): it finds the same 20 faces
    in these photos as with one upsampling, in a quarter of the time."""
    detector = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    chips = []
    for p in paths:
        img = dlib.load_rgb_image(str(p))
        for rect in detector(img, 0):
            chips.append(dlib.get_face_chip(img, sp(img, rect), size=150, padding=0.25))
    return chips


@pytest.fixture(scope="module")
def real_chips(shared, tmp_path_factory):
    """dlib's chips of real photos, made once per session (by one xdist worker)."""
    with computed_once(tmp_path_factory, "featurenet-real-chips") as folder:
        file = folder / "chips.npy"
        if not file.is_file():
            photos = sorted(shared("data", "faces", "deepface_unit").glob("img*.jpg"))[:12]
            photos += sorted(shared("data", "faces", "fr_examples", "test").glob("*.jpg"))
            chips = _dlib_chips(photos)
            assert len(chips) >= 12, "expected faces in the shared photos"
            np.save(file, np.stack(chips))
        return np.load(file)


@pytest.fixture(scope="module")
def keras_featurenet():
    from converter.featurenet import load_featurenet

    return load_featurenet()


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_reader_recognises_dlib_face_resnet():
    net = read_face_resnet(default_weights_path())
    assert [layer.describe() for layer in net.layers] == expected_layer_signature()
    assert sum(layer.kind == "con" for layer in net.layers) == 29
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.input_mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)


def test_parity_with_dlib_on_real_faces(real_chips, keras_featurenet):
    """The acceptance proof: cosine >= 0.9999 for every real chip."""
    facerec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    ref = np.array([np.array(facerec.compute_face_descriptor(c)) for c in real_chips])
    ours = keras_featurenet.predict(real_chips.astype(np.float32), verbose=0)
    cos = _cos(ref, ours)
    print(f"parity on {len(cos)} real chips: min cosine {cos.min():.8f}")
    assert cos.min() >= 0.9999
    # also the same length: dlib's L2 threshold 0.6 must mean the same on our features
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(ref, axis=1), rtol=1e-4)


def test_not_a_network_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "garbage.dat"
    bad.write_bytes(b"\x07" * 1000)
    with pytest.raises(DlibFormatError) as exc:
        read_face_resnet(bad)
    assert "garbage.dat" in str(exc.value) and "\n" not in str(exc.value)


def test_truncated_weights_are_refused(tmp_path):
    data = default_weights_path().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="cut.dat"):
        read_face_resnet(cut)


def test_another_dlib_network_is_refused():
    """dlib's CNN face detector is a valid dlib file but not this network."""
    other = Path(frm.cnn_face_detector_model_location())
    with pytest.raises(DlibFormatError, match="not dlib's face ResNet"):
        read_face_resnet(other)


def test_cli_reports_bad_weights_in_one_line(tmp_path):
    bad = tmp_path / "nope.dat"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "converter", "build-featurenet", "--out",
                        str(tmp_path / "b"), "--weights", str(bad)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: nope.dat")
    assert "Traceback" not in r.stderr


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "converter", "build-featurenet", "--help"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "--calibration-count" in r.stdout


@pytest.mark.slow
def test_tflite_exports_keep_the_descriptor(real_chips, keras_featurenet, tmp_path):
    """float TFLite == Keras; full-int8 (calibrated on other real faces) stays close and
    maps to the Edge TPU: int8 in/out, no float tensor, no unsupported op."""
    from converter.export import check_int8_graph, to_float_tflite, to_int8_tflite
    from edge.vision.runtime import TFLiteModel

    calib, held = real_chips[::2], real_chips[1::2]
    fpath, qpath = tmp_path / "f.tflite", tmp_path / "q.tflite"
    fpath.write_bytes(to_float_tflite(keras_featurenet))
    qbytes = to_int8_tflite(keras_featurenet, calib.astype(np.float32))
    qpath.write_bytes(qbytes)
    report = check_int8_graph(qbytes)
    assert report["float_tensors"] == [] and report["not_edgetpu"] == []
    assert report["ops"]["CONV_2D"] == 29

    ref = keras_featurenet.predict(held.astype(np.float32), verbose=0)
    fl, q8 = TFLiteModel(fpath), TFLiteModel(qpath)
    assert q8.is_quantized and not fl.is_quantized
    f_emb = np.concatenate([fl(c[None].astype(np.float32)) for c in held])
    q_emb = np.concatenate([q8(c[None].astype(np.float32)) for c in held])
    assert _cos(f_emb, ref).min() >= 0.99999
    cos8 = _cos(q_emb, f_emb)
    print(f"int8 vs float: mean {cos8.mean():.4f} min {cos8.min():.4f}")
    assert cos8.mean() >= 0.98 and cos8.min() >= 0.95
