"""Face detection with landmarks: Google's BlazeFace TFLite models, decoded by our code.

The models ship inside this package (edge/models/mediapipe, with their Apache-2.0 LICENSE
and a NOTICE of where they came from). We generate MediaPipe's SSD anchors, letterbox the
frame, decode boxes and the 6 keypoints, and merge overlapping detections with MediaPipe's
weighted NMS (or plain NMS). Owning the decoding keeps the device free of MediaPipe and of its numpy-1-only ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.assets import mediapipe_dir
from edge.errors import DoorlockError
from edge.vision.runtime import TFLiteModel

# MediaPipe's SsdAnchorsCalculator options (face_detection_short_range.pbtxt /
# face_detection_full_range.pbtxt): short range 4 layers, strides 8, 16, 16, 16, scales
# 0.1484375..0.75, aspect ratio 1 plus the interpolated one -> 2 anchors per cell, fixed
# anchor size (so only centres matter): 16*16*2 + 8*8*2*3 = 896. Full range: 1 layer,
# stride 4, no interpolated ratio -> 1 anchor per cell: 48*48 = 2304. The detector checks
# these counts against the model's output shapes when it loads.
MODELS = {
    "short": dict(file="face_detection_short_range.tflite", size=128, strides=(8, 16, 16, 16),
                  anchors_per_layer=2),
    "full": dict(file="face_detection_full_range.tflite", size=192, strides=(4,),
                 anchors_per_layer=1),
}
# BlazeFace's keypoint order; subject-centric: the subject's right eye is on the image's left.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                  "left_ear_tragion")


@dataclass
class Face:
    """A detected face in frame pixels. Keypoints are BlazeFace's 6 (subject-centric: the
    subject's right eye is on the image's left)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float                             # sigmoid confidence, 0..1
    keypoints: np.ndarray                    # (6, 2) frame pixels, KEYPOINT_NAMES order
    mesh: object = None                      # edge.vision.landmarks.Mesh once refined (FaceDetector.refine)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        return max(self.width, self.height)

    def keypoint(self, name: str) -> np.ndarray:
        """One keypoint by its KEYPOINT_NAMES name, as (x, y)."""
        return self.keypoints[KEYPOINT_NAMES.index(name)]


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


def box_iou(box, boxes) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box with each row of `boxes`."""
    box, boxes = np.asarray(box, np.float64), np.atleast_2d(np.asarray(boxes, np.float64))
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float):
    """MediaPipe's WEIGHTED suppression: each cluster of detections overlapping the best
    remaining one by more than `iou` is replaced by their score-weighted mean box and
    keypoints, with the best score. Steadier boxes frame to frame than plain NMS."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        members = alive & (box_iou(boxes[i], boxes) > iou)
        members[i] = True
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        alive &= ~members
    return out


def plain_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float):
    """Classic NMS: keep the best detection, drop those overlapping it by more than `iou`."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if alive[i]:
            out.append((boxes[i], keypoints[i], float(scores[i])))
            alive &= ~(box_iou(boxes[i], boxes) > iou)
    return out


class FaceDetector:
    """BlazeFace through LiteRT. `detect(frame_rgb)` -> faces, largest first.

    "short" (128x128 input) suits faces within ~2 m of the camera, the door-lock case;
    "full" (192x192) also finds small, distant faces. `min_face_px` drops faces whose box
    is narrower than that many frame pixels: too small to recognise reliably.

    `refine(frame_rgb, face)` adds the face mesh (edge.vision.landmarks) to the one face to be
    judged, whose points alignment then uses: the kiosk and enrolment both go through it,
    so gallery and probe chips are made the same way. `landmarks=False` leaves faces with
    BlazeFace's keypoints only."""

    def __init__(self, model: str = "short", min_score: float = 0.5, min_face_px: float = 40,
                 nms_iou: float = 0.3, num_threads: int | None = None, models_dir: Path | None = None,
                 nms: str = "weighted", landmarks: bool = True):
        if model not in MODELS:
            raise DoorlockError(f"unknown detector model {model!r} (use 'short' or 'full')")
        if not 0.0 <= min_score <= 1.0:
            raise DoorlockError(f"detector min_score must be between 0 and 1, not {min_score}")
        if min_face_px < 0:
            raise DoorlockError(f"detector min_face_px must be >= 0, not {min_face_px}")
        if nms not in ("weighted", "plain"):
            raise DoorlockError(f"unknown NMS {nms!r} (use 'weighted' or 'plain')")
        opts = MODELS[model]
        path = Path(models_dir or mediapipe_dir()) / opts["file"]
        if not path.is_file():
            raise DoorlockError(f"BlazeFace model missing: {path} (a broken install: reinstall doorlock)")
        self.model = TFLiteModel(path, num_threads=num_threads)
        self.name = model
        self.size = opts["size"]
        if self.model.input_shape[1:3] != (self.size, self.size):
            raise DoorlockError(f"{path.name}: input {self.model.input_shape}, "
                                f"expected {self.size}x{self.size}")
        self.anchors = ssd_anchors(self.size, opts["strides"], opts["anchors_per_layer"])
        outs = self.model.outputs
        # regressors have 16 values per anchor (box + 6 keypoints), scores 1
        try:
            self._reg = next(i for i, o in enumerate(outs) if o["shape"][-1] == 16)
            self._cls = next(i for i, o in enumerate(outs) if o["shape"][-1] == 1)
        except StopIteration:
            raise DoorlockError(f"{path.name}: not a BlazeFace model (outputs "
                                f"{[tuple(int(v) for v in o['shape']) for o in outs]})") from None
        for i in (self._reg, self._cls):
            n = int(np.prod(outs[i]["shape"][:-1]))
            if n != len(self.anchors):
                raise DoorlockError(f"{path.name}: {n} predictions but {len(self.anchors)} anchors")
        self.min_score, self.min_face_px, self.nms_iou, self.nms = min_score, min_face_px, nms_iou, nms
        self.landmarks = landmarks
        self._num_threads, self._mesh = num_threads, None

    def letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The frame shrunk to fit the model input with its aspect ratio kept, centred on
        black; and (fx, fy, pad_x, pad_y) to map back. Shrinking uses area averaging: a
        bilinear shrink of a 1080p frame to 128 pixels aliases and moves the keypoints."""
        h, w = frame.shape[:2]
        s = self.size
        f = s / max(h, w)
        nw, nh = max(1, min(s, round(w * f))), max(1, min(s, round(h * f)))
        img = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        pad_x, pad_y = (s - nw) // 2, (s - nh) // 2
        img = cv2.copyMakeBorder(img, pad_y, s - nh - pad_y, pad_x, s - nw - pad_x,
                                 cv2.BORDER_CONSTANT, value=(0, 0, 0))
        return img, (nw / w, nh / h, float(pad_x), float(pad_y))

    def raw(self, frame_rgb: np.ndarray, above: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        """All anchors' boxes (N, 4) and keypoints (N, 6, 2) in letterboxed model pixels,
        their scores (N,), and the letterbox mapping: before thresholds and NMS. With
        `above`, only the anchors scoring at least that are decoded (a frame has a few of
        896: decoding them all was a fifth of the detector's time)."""
        if frame_rgb is None or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.size == 0:
            raise ValueError("detect() wants an RGB frame (H, W, 3)")
        img, mapping = self.letterbox(np.ascontiguousarray(frame_rgb))
        # MediaPipe feeds these models [-1, 1] (ImageToTensorCalculator output_tensor_float_range)
        x = img.astype(np.float32)[None] / 127.5 - 1.0
        outs = self.model.run_all(x)
        reg = outs[self._reg].reshape(-1, 16)
        logits = np.clip(outs[self._cls].reshape(-1).astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        anchors = self.anchors
        if above is not None:
            sel = np.flatnonzero(scores >= above)
            reg, scores, anchors = reg[sel], scores[sel], anchors[sel]
        reg = reg.astype(np.float64)
        s = float(self.size)
        # offsets are in input pixels, relative to the anchor centre (fixed anchor size 1)
        centre = anchors * s
        cx, cy = reg[:, 0] + centre[:, 0], reg[:, 1] + centre[:, 1]
        bw, bh = reg[:, 2], reg[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) + centre[:, None, :]
        return boxes, kps, scores, mapping

    def detect(self, frame_rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 frame, largest first, in frame pixel coordinates
        ((0, 0) is the centre of the top-left pixel, as in OpenCV)."""
        boxes, kps, scores, (fx, fy, pad_x, pad_y) = self.raw(frame_rgb, above=self.min_score)
        if not len(scores):
            return []
        merge = weighted_nms if self.nms == "weighted" else plain_nms
        faces = []
        for box, kp, score in merge(boxes, kps, scores, self.nms_iou):
            # letterbox pixels (edges at integers) -> frame pixels (centres at integers)
            b = (box - [pad_x, pad_y, pad_x, pad_y]) / [fx, fy, fx, fy] - 0.5
            k = (kp - [pad_x, pad_y]) / [fx, fy] - 0.5
            face = Face(tuple(float(v) for v in b), score, k.astype(np.float32))
            if face.width >= self.min_face_px:
                faces.append(face)
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces

    def refine(self, frame_rgb: np.ndarray, face: Face) -> Face:
        """The face with its mesh (face.mesh), when landmarks are on; the same Face object."""
        if self.landmarks:
            if self._mesh is None:
                from edge.vision.landmarks import FaceMesh

                self._mesh = FaceMesh(self._num_threads)
            face.mesh = self._mesh.run(frame_rgb, face)
        return face


def largest_face(faces: list[Face]) -> Face | None:
    """The face nearest the camera (largest box), or None: the one a door lock acts on."""
    return max(faces, key=lambda f: f.width * f.height) if faces else None
