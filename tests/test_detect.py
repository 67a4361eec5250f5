"""BlazeFace detection with our own anchors and decoding, checked on real photos and
against dlib's HOG detector and 5-point landmarks as ground truth."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.vision import detect
from edge.assets import mediapipe_dir
from edge.vision.detect import KEYPOINT_NAMES, Face, FaceDetector, largest_face, plain_nms, ssd_anchors, weighted_nms
from edge.errors import DoorlockError


def _rgb(path):
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def short():
    return FaceDetector("short", min_score=0.6, min_face_px=20)


@pytest.fixture(scope="module")
def full():
    return FaceDetector("full", min_score=0.6, min_face_px=20)


@pytest.fixture(scope="module")
def dlib_truth():
    """dlib's HOG detector and 5-point shape predictor (test-only ground truth)."""
    dlib = pytest.importorskip("dlib")
    frm = pytest.importorskip("face_recognition_models")
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    return dlib.get_frontal_face_detector(), sp


def _plausible(face: Face):
    x0, y0, x1, y1 = face.box
    k = face.keypoints
    assert k.shape == (6, 2)
    # both eyes above the nose, the nose above the mouth
    assert k[0, 1] < k[2, 1] < k[3, 1] and k[1, 1] < k[2, 1]
    # subject's right eye / ear on the image's left
    assert k[0, 0] < k[1, 0] and k[4, 0] < k[5, 0]
    assert k[0, 0] < k[2, 0] < k[1, 0]
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in k[:4])
    assert 0.5 <= face.score <= 1.0


def test_anchor_counts_match_the_models(short, full):
    assert len(ssd_anchors(128, (8, 16, 16, 16), 2)) == 896
    assert len(ssd_anchors(192, (4,), 1)) == 2304
    a = ssd_anchors(128, (8, 16, 16, 16), 2)
    assert a.min() > 0 and a.max() < 1
    np.testing.assert_allclose(a[:2], [[0.5 / 16, 0.5 / 16]] * 2)  # 2 anchors per cell
    np.testing.assert_allclose(a[512], [0.5 / 8, 0.5 / 8])          # first 8x8 cell
    # and what the loaded models emit: one prediction per anchor
    for det, n in ((short, 896), (full, 2304)):
        shapes = [tuple(int(v) for v in o["shape"]) for o in det.model.outputs]
        assert sorted(shapes) == sorted([(1, n, 16), (1, n, 1)]) and len(det.anchors) == n


@pytest.mark.parametrize("name, count", [
    ("fr_examples/lin-manuel-miranda.png", 1), ("fr_examples/alex-lacamoire.png", 1),
    ("fr_examples/test/kit_with_rose.jpg", 2),
    ("fr_examples/test/johnsnow_test1.jpg", 1), ("fr_examples/train/biden/biden.jpg", 1),
    ("deepface_unit/couple.jpg", 2), ("deepface_unit/img1.jpg", 1), ("deepface_unit/img2.jpg", 1),
])
def test_finds_the_faces_in_real_photos(shared, short, name, count):
    faces = short.detect(_rgb(shared("data", "faces", *name.split("/"))))
    assert len(faces) == count
    for f in faces:
        _plausible(f)
    sizes = [f.width * f.height for f in faces]
    assert sizes == sorted(sizes, reverse=True)
    assert largest_face(faces) is faces[0]


def test_agrees_with_dlib(shared, short, dlib_truth):
    """Ground truth from dlib: HOG box centres and the eye centres of its 5-point model."""
    hog, sp = dlib_truth
    photos = sorted(shared("data", "faces", "deepface_unit").glob("img*.jpg"))[:16]
    checked = 0
    for p in photos:
        img = _rgb(p)
        ref = hog(img, 0)
        if len(ref) != 1:
            continue
        ours = short.detect(img)
        assert len(ours) == 1, p.name
        r, f = ref[0], ours[0]
        c_ref = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
        c = np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])
        assert np.linalg.norm(c - c_ref) < 0.25 * r.width(), p.name  # measured: <= 0.17
        assert 0.8 < f.width / r.width() < 1.3, p.name                # measured: 0.92..1.17
        shape = sp(img, r)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float)
        eyes = np.array(sorted([pts[0:2].mean(0), pts[2:4].mean(0)], key=lambda e: e[0]))
        iod = np.linalg.norm(eyes[1] - eyes[0])
        err = np.linalg.norm(f.keypoints[:2] - eyes, axis=1) / iod
        assert err.max() < 0.2, (p.name, err)                        # measured: <= 0.13
        checked += 1
    assert checked >= 10


def test_full_range_model_finds_small_faces(shared, full, short):
    """In obama_and_biden.jpg the faces are ~13 pixels wide in short range's 128x128
    input: too small for it, while full range (192x192, stride 4) finds both."""
    img = _rgb(shared("data", "faces", "fr_examples", "test", "obama_and_biden.jpg"))
    assert short.detect(img) == []
    faces = full.detect(img)
    assert len(faces) == 2
    for f in faces:
        _plausible(f)
    single = _rgb(shared("data", "faces", "fr_examples", "lin-manuel-miranda.png"))
    a, b = full.detect(single), short.detect(single)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].keypoints[:4], b[0].keypoints[:4], atol=0.1 * b[0].width)


def test_no_face_in_noise_or_blank(short, full):
    rng = np.random.default_rng(0)
    for det in (short, full):
        assert det.detect(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) == []
        assert det.detect(np.full((480, 640, 3), 128, np.uint8)) == []
        assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []


def test_min_face_size_and_score_filter(shared):
    img = _rgb(shared("data", "faces", "fr_examples", "lin-manuel-miranda.png"))
    small = cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    found = FaceDetector("short", min_face_px=40).detect(small)
    assert len(found) == 1 and 40 <= found[0].width < 120
    assert FaceDetector("short", min_face_px=120).detect(small) == []
    assert FaceDetector("short", min_score=min(0.999, found[0].score + 0.01)).detect(small) == []
    assert largest_face([]) is None


def test_letterbox_maps_back_to_frame_pixels(shared, short):
    """The same face, padded into a wider or taller frame, is found at the shifted place."""
    img = _rgb(shared("data", "faces", "fr_examples", "lin-manuel-miranda.png"))
    a = short.detect(img)[0]
    h, w = img.shape[:2]
    for dx, dy, shape in ((300, 0, (h, w + 300)), (0, 250, (h + 400, w))):
        big = np.zeros(shape + (3,), np.uint8)
        big[dy:dy + h, dx:dx + w] = img
        b = short.detect(big)[0]
        # a different scale in the 128x128 input moves the estimate a little, not the place
        np.testing.assert_allclose(np.array(b.box) - [dx, dy, dx, dy], a.box, atol=0.05 * a.width)
        np.testing.assert_allclose(b.keypoints - [dx, dy], a.keypoints, atol=0.05 * a.width)


def test_letterbox_keeps_the_aspect_ratio(short):
    img, (fx, fy, pad_x, pad_y) = short.letterbox(np.full((480, 640, 3), 200, np.uint8))
    assert img.shape == (128, 128, 3) and fx == fy == 0.2 and (pad_x, pad_y) == (0, 16)
    assert (img[:16] == 0).all() and (img[-16:] == 0).all() and (img[16:-16] == 200).all()


def test_model_input_range(shared, short):
    """MediaPipe feeds these models [-1, 1]. [0, 1] happens to work about as well (the
    model is tolerant); raw [0, 255] finds nothing, so the scaling is not optional."""
    img = _rgb(shared("data", "faces", "deepface_unit", "img2.jpg"))
    x = short.letterbox(img)[0].astype(np.float32)[None]
    best = {}
    for name, v in (("pm1", x / 127.5 - 1), ("raw", x)):
        logits = short.model.run_all(v)[short._cls]
        best[name] = 1 / (1 + np.exp(-np.clip(logits.max(), -100, 100)))
    assert best["pm1"] > 0.9 and best["raw"] < 0.5


def test_plain_nms_finds_the_same_faces(shared, short):
    img = _rgb(shared("data", "faces", "deepface_unit", "couple.jpg"))
    plain = FaceDetector("short", min_score=0.6, min_face_px=20, nms="plain").detect(img)
    weighted = short.detect(img)
    assert len(plain) == len(weighted) == 2
    for p, w in zip(plain, weighted):
        np.testing.assert_allclose(p.box, w.box, atol=0.1 * w.width)


def test_nms_merges_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.zeros((3, 6, 2))
    kps[1] += 1
    scores = np.array([0.9, 0.6, 0.8])
    merged = weighted_nms(boxes, kps, scores, 0.3)
    assert len(merged) == 2 and merged[0][2] == 0.9
    np.testing.assert_allclose(merged[0][0], [0.4, 0, 10.4, 10])  # score-weighted mean
    np.testing.assert_allclose(merged[0][1], 0.4)
    kept = plain_nms(boxes, kps, scores, 0.3)
    assert len(kept) == 2 and kept[0][0].tolist() == [0, 0, 10, 10]


def test_face_properties():
    f = Face((10.0, 20.0, 50.0, 80.0), 0.9, np.arange(12, dtype=np.float32).reshape(6, 2))
    assert (f.width, f.height, f.size) == (40.0, 60.0, 60.0)
    assert f.keypoint("nose_tip").tolist() == [4, 5] and KEYPOINT_NAMES[3] == "mouth_center"
    small = Face((0.0, 0.0, 5.0, 5.0), 0.99, np.zeros((6, 2)))
    assert largest_face([small, f]) is f


def test_models_are_packaged_and_never_looked_up_elsewhere(monkeypatch):
    """edge/models/mediapipe, via importlib.resources: no find_spec, no other package."""
    def no_lookup(name, *a):
        raise AssertionError(f"find_spec({name!r})")

    monkeypatch.setattr(importlib.util, "find_spec", no_lookup)
    assert mediapipe_dir() == Path(detect.__file__).parents[1] / "models" / "mediapipe"
    for model in ("short", "full"):
        assert FaceDetector(model).name == model


def test_missing_model_file_is_a_clear_error(tmp_path):
    """A broken install: the folder is there but not its models."""
    with pytest.raises(DoorlockError, match="BlazeFace model missing.*face_detection_full_range") as e:
        FaceDetector("full", models_dir=tmp_path)
    assert "\n" not in str(e.value)


def test_bad_arguments():
    with pytest.raises(DoorlockError, match="unknown detector model"):
        FaceDetector("medium")
    with pytest.raises(DoorlockError, match="min_score"):
        FaceDetector("short", min_score=1.5)
    with pytest.raises(DoorlockError, match="unknown NMS"):
        FaceDetector("short", nms="soft")
    with pytest.raises(ValueError, match="RGB frame"):
        FaceDetector("short").detect(np.zeros((10, 10), np.uint8))
