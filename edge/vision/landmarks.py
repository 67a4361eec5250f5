"""Face mesh landmarks: MediaPipe's 468-point face mesh refines a BlazeFace detection.

BlazeFace's six keypoints (eye centres, nose, mouth centre, ears) are coarse, and none of
them is a point of the template FeatureNet was trained on (dlib's chip: the mean of each
eye's six contour points, the nose tip, the two mouth corners). The mesh
(`face_landmark.tflite`, shipped in edge/models/mediapipe, run through
LiteRT on a 192x192 crop around the detection) has those very points, so alignment uses
them (`Mesh.points5`) when the mesh is confident, and the liveness check tracks the same
mesh. One mesh per judged face, shared by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.assets import mediapipe_dir
from edge.errors import DoorlockError
from edge.vision.runtime import TFLiteModel

MESH_FILE = "face_landmark.tflite"
MESH_SIZE = 192
ROI_SCALE = 1.5           # MediaPipe: the mesh crop is 1.5x the detection box (square, long side)
MIN_MESH_SCORE = 0.5      # below this the mesh model says there is no (frontal enough) face


# Face-mesh landmark indices (MediaPipe's canonical face mesh).
# Eyes in eye-aspect-ratio order: outer corner, two upper-lid points, inner corner, two
# lower-lid points (p1..p6 of Soukupova and Cech's EAR), for each of the image's eyes.
EYE_A = (33, 160, 158, 133, 153, 144)
EYE_B = (362, 385, 387, 263, 373, 380)
NOSE_TIP = 4               # mesh point at the tip of the nose (dlib's point 30)
MOUTH_A, MOUTH_B = 61, 291  # mouth corners, image's left and right (dlib's 48 and 54)


def mesh_model_path(models_dir: Path | None = None) -> Path:
    """face_landmark.tflite, packaged with edge unless `models_dir` says otherwise."""
    path = Path(models_dir or mediapipe_dir()) / MESH_FILE
    if not path.is_file():
        raise DoorlockError(f"face mesh model missing: {path} (a broken install: reinstall doorlock)")
    return path


@dataclass
class Mesh:
    """The face mesh of one face: the 192x192 RGB crop it was run on, the 2x3 affine from
    crop to frame pixels, the 468 landmarks in crop pixels (x, y, z) and the model's
    face-presence score."""

    crop: np.ndarray
    matrix: np.ndarray
    points: np.ndarray   # (468, 3) float64, crop pixels
    score: float

    def frame_points(self) -> np.ndarray:
        """The landmarks' (x, y) in frame pixels."""
        return self.points[:, :2] @ self.matrix[:, :2].T + self.matrix[:, 2]

    @property
    def usable(self) -> bool:
        """The model is confident there is a face: its points can be trusted."""
        return self.score >= MIN_MESH_SCORE

    def points5(self) -> np.ndarray:
        """(5, 2) frame pixels in edge.vision.align.LANDMARKS5 order, the points of dlib's chip
        template: each eye's centre (mean of its six contour points), the nose tip, the
        two mouth corners (image's left, then right)."""
        p = self.frame_points()
        return np.array([p[list(EYE_A)].mean(0), p[list(EYE_B)].mean(0), p[NOSE_TIP],
                         p[MOUTH_A], p[MOUTH_B]], np.float64)


class FaceMesh:
    """MediaPipe's face-landmark model through LiteRT: `run(frame_rgb, face)` -> Mesh."""

    def __init__(self, num_threads: int | None = None, models_dir: Path | None = None):
        self.model = TFLiteModel(mesh_model_path(models_dir), num_threads)
        shape = self.model.input_shape
        if shape[1:] != (MESH_SIZE, MESH_SIZE, 3):
            raise DoorlockError(f"{MESH_FILE}: unexpected input shape {shape}")
        sizes = [int(np.prod(o["shape"])) for o in self.model.outputs]
        if 468 * 3 not in sizes or 1 not in sizes:
            raise DoorlockError(f"{MESH_FILE}: unexpected outputs {sizes}")
        self._pts, self._flag = sizes.index(468 * 3), sizes.index(1)

    @staticmethod
    def crop_matrix(face) -> np.ndarray:
        """2x3 affine from mesh-input pixels to frame pixels: a square 1.5x the detection
        box's long side, centred on the box, turned so the eyes are level (MediaPipe's
        detection-to-ROI rule)."""
        x0, y0, x1, y1 = face.box
        side = ROI_SCALE * max(x1 - x0, y1 - y0)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        k = np.asarray(face.keypoints, np.float64)
        dx, dy = k[1] - k[0]  # from the eye on the image's left to the one on its right
        angle = np.arctan2(dy, dx)
        c, s = np.cos(angle), np.sin(angle)
        rot = side / MESH_SIZE * np.array([[c, -s], [s, c]])
        t = centre - rot @ np.array([MESH_SIZE / 2, MESH_SIZE / 2])
        return np.hstack([rot, t[:, None]])

    def run(self, frame_rgb: np.ndarray, face) -> Mesh:
        m = self.crop_matrix(face)
        crop = cv2.warpAffine(frame_rgb, m, (MESH_SIZE, MESH_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)
        outs = self.model.run_all(crop.astype(np.float32)[None] / 255.0)
        pts = outs[self._pts].reshape(468, 3).astype(np.float64)
        logit = float(np.clip(outs[self._flag].reshape(-1)[0], -100, 100))
        return Mesh(crop, m, pts, 1.0 / (1.0 + np.exp(-logit)))
