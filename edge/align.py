"""5-point similarity alignment onto a template, and remapping between templates.

Points are in image coordinates, ordered [eye on the image's left, eye on the image's right,
nose tip, mouth corner on the image's left, mouth corner on the image's right].
"""

from __future__ import annotations

import cv2
import numpy as np

# dlib's 150x150 face chip (get_face_chip_details with padding 0.25): from dlib's mean face
# shape (dlib/image_transforms/interpolation.h), point = (0.25 + mean) / 1.5 * 150; eye = mean
# of the 6 eye points (36-41, 42-47), nose = point 30, mouth corners = points 48 and 54.
DLIB_CHIP_TEMPLATE_150 = np.array([(47.549, 46.599), (100.476, 46.599), (74.013, 76.563),
                                   (50.415, 103.023), (97.610, 103.023)], np.float64)
# The ArcFace 112x112 template (insightface), used by glint-style aligned crops.
ARCFACE_TEMPLATE_112 = np.array([(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                                 (41.5493, 92.3655), (70.7299, 92.2041)], np.float64)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection)
    mapping src points onto dst points (Umeyama 1991). Returns a 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def align_face(frame: np.ndarray, src_points: np.ndarray, template: np.ndarray, size: int = 150,
               border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Warp the face so its landmarks land on the template: a size x size chip."""
    m = estimate_similarity(src_points, template)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def blazeface_points(keypoints: np.ndarray) -> np.ndarray:
    """BlazeFace's [right eye, left eye, nose tip, mouth centre, ...] (subject-centric, the
    right eye on the image's left) -> (4, 2): eye left, eye right, nose, mouth centre."""
    k = np.asarray(keypoints, np.float64)
    return k[:4].copy()


def template_with_mouth_centre(template5: np.ndarray) -> np.ndarray:
    """The 5-point template reduced to BlazeFace's 4: eyes, nose, mouth centre."""
    t = np.asarray(template5, np.float64)
    return np.vstack([t[:3], t[3:5].mean(0, keepdims=True)])


def align_blazeface(frame: np.ndarray, face, template5: np.ndarray, size: int = 150,
                    border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Align a detected face (edge.detect.Face) onto a 5-point template."""
    return align_face(frame, blazeface_points(face.keypoints), template_with_mouth_centre(template5),
                      size, border)


def remap_chip(chip: np.ndarray, from_template: np.ndarray, to_template: np.ndarray, size: int,
               border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Move an already-aligned crop from one template to another (e.g. a 112x112 ArcFace
    crop onto dlib's 150x150 chip): a similarity between the templates, border padded.

    The dlib chip shows more around the face than the tight ArcFace crop, so the border
    is filled. Measured on 450 glint crops of 18 people (dlib features, L2): reflect
    79.2% TAR at FAR 1e-3, constant 78.1%, replicate 76.6%; a plain resize 18.7%."""
    return align_face(chip, from_template, to_template, size, border)
