"""5-point similarity alignment onto a template, and remapping between templates.

A recognition network only gives stable descriptors when every face reaches it at the
place, scale and roll of the template it was trained on, so we fit a similarity (no shear:
the face keeps its shape) from the detector's keypoints to the template and warp the frame.
Points are in image coordinates ((0, 0) = centre of the top-left pixel, as in OpenCV), and
"left"/"right" mean the image's sides: LANDMARKS5's "eye_left" is the subject's right eye.
Coordinates and point order: docs/models.md, "Alignment".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

LANDMARKS5 = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
# Points some detectors give instead of a template's own: name -> the template points averaged.
DERIVED = {
    "mouth_center": ("mouth_left", "mouth_right"),  # BlazeFace has no mouth corners
    "eye_center": ("eye_left", "eye_right"),
}

# dlib's 150x150 face chip, as dlib.get_face_chip(img, shape, size=150, padding=0.25) makes it
# for dlib_face_recognition_resnet_model_v1. get_face_chip_details maps dlib's mean face shape
# (mean_face_shape_x/y in dlib/image_transforms/interpolation.h, points 17..67 of the 68-point
# layout, unit square) to the chip by p_chip = (padding + mean) / (1 + 2 padding) * size,
# i.e. (0.25 + mean) * 100 for size 150. Eye = mean of the 6 eye points (36-41 on the image's
# left, 42-47 on its right); nose = point 30 (tip); mouth corners = points 48 and 54.
DLIB_CHIP_TEMPLATE_150 = np.array([(47.549, 46.599), (100.476, 46.599), (74.013, 76.563),
                                   (50.415, 103.023), (97.610, 103.023)], np.float64)
# The ArcFace 112x112 template (insightface), used by glint-style aligned crops.
ARCFACE_TEMPLATE_112 = np.array([(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                                 (41.5493, 92.3655), (70.7299, 92.2041)], np.float64)

# Border fill for remap_chip (a tight crop moved into a looser chip must invent its edges).
# Measured with dlib's own network: see remap_chip.
REMAP_BORDER = cv2.BORDER_REFLECT


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection)
    mapping src points onto dst points (Umeyama 1991). Returns a 2x3 matrix.

    Least squares, not an exact 2- or 3-point fit: one noisy keypoint then moves the chip
    by a fraction of its error instead of all of it."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points all coincide: no similarity is defined")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1  # the best fit would mirror the face: take the best proper rotation
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(pts, np.float64)
    return pts @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def template_points(template, names: Sequence[str]) -> np.ndarray:
    """(len(names), 2) points of a template by name: the LANDMARKS5 names, or DERIVED ones
    (e.g. "mouth_center", the mean of the two mouth corners). `template` is a (5, 2) array
    in LANDMARKS5 order or a mapping name -> (x, y)."""
    if isinstance(template, Mapping):
        named = {k: np.asarray(v, np.float64) for k, v in template.items()}
    else:
        t = np.asarray(template, np.float64)
        if t.shape != (5, 2):
            raise ValueError(f"a 5-point template is (5, 2), got {t.shape}")
        named = dict(zip(LANDMARKS5, t))
    out = []
    for n in names:
        if n in named:
            out.append(named[n])
        elif n in DERIVED and all(p in named for p in DERIVED[n]):
            out.append(np.mean([named[p] for p in DERIVED[n]], axis=0))
        else:
            raise KeyError(f"template has no point {n!r} (has {', '.join(named)})")
    return np.array(out, np.float64).reshape(-1, 2)


def blazeface_points(keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """BlazeFace's keypoints [right eye, left eye, nose tip, mouth centre, ears] (subject's
    sides: the subject's right eye is on the image's left) -> our image-side names:
    {eye_left, eye_right, nose, mouth_center}. The ears are left out: they are unreliable
    as soon as the head turns, and no template has them."""
    k = np.asarray(keypoints, np.float64)
    if k.ndim != 2 or k.shape[1] != 2 or len(k) < 4:
        raise ValueError(f"BlazeFace keypoints are (6, 2), got {k.shape}")
    return {"eye_left": k[0], "eye_right": k[1], "nose": k[2], "mouth_center": k[3]}


def _shrink_first(frame: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For a warp that shrinks by more than 2x: area-average the part of the frame the chip
    sees down to twice the chip's scale, and the matrix that then maps it to the chip.
    Bilinear warpAffine samples only 4 pixels per output pixel, so a big face would alias;
    dlib's extract_image_chip avoids that with an image pyramid, and so do we."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale >= 0.5:
        return frame, m
    h, w = frame.shape[:2]
    corners = transform_points(cv2.invertAffineTransform(m), [[0, 0], [size, 0], [0, size], [size, size]])
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 3, [w, h])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return frame, m  # the chip sees (almost) nothing of the frame: border only
    crop = frame[y0:y1, x0:x1]
    f = 2 * scale
    nw, nh = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
    small = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    fx, fy = nw / (x1 - x0), nh / (y1 - y0)
    # cv2.resize maps pixel centres: x_small = (x - x0 + 0.5) * fx - 0.5
    tx, ty = (0.5 - x0) * fx - 0.5, (0.5 - y0) * fy - 0.5
    m2 = np.empty((2, 3))
    m2[:, 0], m2[:, 1] = m[:, 0] / fx, m[:, 1] / fy
    m2[:, 2] = m[:, 2] - m2[:, 0] * tx - m2[:, 1] * ty
    return small, m2


def warp_to_chip(frame: np.ndarray, m: np.ndarray, size: int,
                 border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The size x size chip seen through the 2x3 frame->chip matrix m (bilinear, with
    area averaging first when m shrinks a lot)."""
    if frame is None or frame.ndim not in (2, 3) or frame.size == 0:
        raise ValueError("align wants an image (H, W[, 3])")
    src, m2 = _shrink_first(frame, np.asarray(m, np.float64), size)
    return cv2.warpAffine(src, m2, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def align_face(frame_rgb: np.ndarray, src_points: np.ndarray, template: np.ndarray, size: int = 150,
               border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Warp the face so its landmarks (N, 2) land on the template's (N, 2), least squares:
    a size x size chip of the frame's dtype. The border mode hardly matters for faces well
    inside the frame (measured: reflect, replicate and constant gave the same mean cosine
    to dlib's chips, to 4 decimals, on 72 photos); replicate avoids hard black edges for
    faces cut by the frame's edge."""
    m = estimate_similarity(src_points, template)
    return warp_to_chip(frame_rgb, m, size, border)


def align_blazeface(frame_rgb: np.ndarray, face, template5: np.ndarray, size: int = 150,
                    border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Align a detected face (edge.vision.detect.Face) onto a 5-point template: its eyes and nose
    onto the template's, its mouth centre onto the mean of the template's mouth corners."""
    pts = blazeface_points(face.keypoints)
    names = list(pts)
    return align_face(frame_rgb, np.array([pts[n] for n in names]), template_points(template5, names),
                      size, border)


def align_detected(frame_rgb: np.ndarray, face, template5: np.ndarray, size: int = 150,
                   border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Align a detected face onto the 5-point template by the best points it has: its face
    mesh's five template points (edge.vision.landmarks.Mesh.points5) when the mesh is confident,
    else BlazeFace's keypoints (align_blazeface).

    Measured on the Hamilton clip, BioMetricNet-M against the two enrolment photos: mean z
    of the enrolled person's close-up frames 10.80 with BlazeFace's keypoints, 9.95 with the
    mesh's points; the lowest z of a person not enrolled 13.59 and 13.69 (higher is safer)."""
    if aligned_by_mesh(face):
        return align_face(frame_rgb, face.mesh.points5(), np.asarray(template5, np.float64), size, border)
    return align_blazeface(frame_rgb, face, template5, size, border)


def aligned_by_mesh(face) -> bool:
    """Whether align_detected places this face by its mesh (else by BlazeFace's keypoints):
    the matcher compares it with gallery chips made the same way."""
    mesh = getattr(face, "mesh", None)
    return mesh is not None and mesh.usable


def remap_chip(chip: np.ndarray, from_template: np.ndarray, to_template: np.ndarray, size: int,
               border: int = REMAP_BORDER) -> np.ndarray:
    """Move an already-aligned crop from one template to another (e.g. a 112x112 ArcFace
    crop onto dlib's 150x150 chip): the similarity between the templates, border padded.
    Not a plain resize: the templates put the face at different places and scales.

    ArcFace -> dlib: the dlib chip sees crop x 5..108, y 20..124, so its bottom ~17 rows
    (below the chin) lie outside the crop and must be filled. Measured with dlib's network,
    mean cosine to dlib's own chip (border: reflect / reflect_101 / replicate / constant;
    plain resize):
      - 71 real photos, our 112 ArcFace crop vs dlib's chip of the full photo (the real
        surroundings): 0.9914 / 0.9912 / 0.9910 / 0.9912; resize 0.909.
      - 103 glint crops vs dlib's chip of the 3x upscaled crop (dlib fills outside the
        crop with black, which flatters constant): 0.9916 / 0.9917 / 0.9909 / 0.9935;
        resize 0.907.
    The modes differ by < 0.003, a resize by 0.08. Reflect is the default: best against
    real surroundings, and best in an earlier identity test on 450 glint crops (TAR at FAR
    1e-3: reflect 79.2%, constant 78.1%, replicate 76.6%, resize 18.7%)."""
    return align_face(chip, np.asarray(from_template, np.float64), np.asarray(to_template, np.float64),
                      size, border)
