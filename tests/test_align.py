"""Alignment: exact similarity estimation, landmarks land on the template, and chips
aligned from BlazeFace's keypoints give the same dlib descriptors as dlib's own chips."""

import cv2
import numpy as np
import pytest

from edge.align import (ARCFACE_TEMPLATE_112, DLIB_CHIP_TEMPLATE_150, align_blazeface, align_face,
                        estimate_similarity, remap_chip, transform_points)


def _similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


def test_recovers_a_known_similarity_exactly():
    m = _similarity(17, 1.7, 12.5, -4.0)
    src = np.array([[10, 20], [50, 22], [30, 45], [15, 60], [48, 61]], float)
    np.testing.assert_allclose(estimate_similarity(src, transform_points(m, src)), m, atol=1e-9)


def test_least_squares_under_noise_beats_exact_fit_on_two_points():
    rng = np.random.default_rng(0)
    m = _similarity(-8, 0.9, 3, 7)
    src = rng.uniform(0, 100, (40, 2))
    dst = transform_points(m, src) + rng.normal(0, 1.0, (40, 2))
    est = estimate_similarity(src, dst)
    assert np.abs(est[:, :2] - m[:, :2]).max() < 0.02 and np.abs(est[:, 2] - m[:, 2]).max() < 1.0
    resid = np.linalg.norm(transform_points(est, src) - dst, axis=1).mean()
    two = estimate_similarity(src[:2], dst[:2])
    assert resid <= np.linalg.norm(transform_points(two, src) - dst, axis=1).mean()


def test_never_reflects():
    src = np.array([[0, 0], [10, 0], [0, 10]], float)
    mirrored = src * [-1, 1]
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_landmarks_land_on_the_template():
    m = _similarity(20, 2.5, 200, 100)
    frame_pts = transform_points(m, DLIB_CHIP_TEMPLATE_150)
    frame = np.zeros((600, 800, 3), np.uint8)
    for i, (x, y) in enumerate(frame_pts):
        cv2.circle(frame, (int(round(x)), int(round(y))), 6, (255, 40 * i, 0), -1)
    chip = align_face(frame, frame_pts, DLIB_CHIP_TEMPLATE_150, 150)
    for i, (x, y) in enumerate(DLIB_CHIP_TEMPLATE_150):
        assert chip[int(round(y)), int(round(x)), 0] > 200, f"landmark {i} not at its template place"


def test_remap_moves_arcface_points_to_dlib_points():
    crop = np.zeros((112, 112, 3), np.uint8)
    x, y = ARCFACE_TEMPLATE_112[2]  # nose tip
    cv2.circle(crop, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    chip = remap_chip(crop, ARCFACE_TEMPLATE_112, DLIB_CHIP_TEMPLATE_150, 150, cv2.BORDER_CONSTANT)
    m = estimate_similarity(ARCFACE_TEMPLATE_112, DLIB_CHIP_TEMPLATE_150)
    want = transform_points(m, ARCFACE_TEMPLATE_112[2:3])[0]
    ys, xs = np.nonzero(chip[:, :, 0] > 128)
    np.testing.assert_allclose([xs.mean(), ys.mean()], want, atol=1.0)
    # and that place is close to dlib's own nose position (the templates agree)
    assert np.linalg.norm(want - DLIB_CHIP_TEMPLATE_150[2]) < 6


def test_our_chips_match_dlibs_own_chips_on_real_faces(shared):
    """The issue's proof: BlazeFace keypoints + our alignment vs dlib's detector, 5-point
    landmarks and get_face_chip, both described by dlib's own network."""
    dlib = pytest.importorskip("dlib")
    frm = pytest.importorskip("face_recognition_models")
    from edge.detect import FaceDetector

    det = FaceDetector("short", min_face_px=20)
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    root = shared("data", "faces")
    photos = sorted((root / "deepface_unit").glob("img*.jpg"))[:30]
    photos += sorted((root / "fr_examples" / "train").glob("*/*.jpg"))
    cos, refs, ours = [], [], []
    for p in photos:
        bgr = cv2.imread(str(p))
        if bgr is None:
            continue
        img = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        boxes, faces = hog(img, 1), det.detect(img)
        if len(boxes) != 1 or len(faces) != 1:
            continue
        a = np.array(rec.compute_face_descriptor(dlib.get_face_chip(img, sp(img, boxes[0]), size=150, padding=0.25)))
        b = np.array(rec.compute_face_descriptor(align_blazeface(img, faces[0], DLIB_CHIP_TEMPLATE_150, 150)))
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        refs.append(a)
        ours.append(b)
    cos = np.array(cos)
    print(f"alignment vs dlib chips on {len(cos)} real faces: mean cosine {cos.mean():.4f}, min {cos.min():.4f}")
    assert len(cos) >= 20
    assert cos.mean() >= 0.985 and cos.min() >= 0.96
    # our chip is described as the same face: nearer to dlib's chip of it than to any other
    refs, ours = np.array(refs), np.array(ours)
    d = np.linalg.norm(ours[:, None] - refs[None], axis=-1)
    assert (d.argmin(1) == np.arange(len(ours))).mean() >= 0.95
    assert np.diag(d).max() < 0.3
