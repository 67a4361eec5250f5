"""Passive texture presentation-attack detection: Silent-Face's two MiniFASNets, int8.

The motion test in edge/kiosk/liveness.py cannot see a replayed video; these models look at
the texture instead (print dots, screen moire, glare, the card's edge): two 80x80 BGR
patches cut around the face box at 2.7x and 4.0x, each scored by its model, the two
softmaxes averaged; the real class's share is the score. Patches are cut exactly as the
source's CropImage cuts them (the scaled box slid back inside the frame, never padded),
from the BlazeFace box grown by BOX_SCALE to match the source's RetinaFace box. The models
and their manifest ship inside edge, in edge/models/pad (written by `python -m converter
build-pad`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from edge.assets import packaged
from edge.vision.bundle import BundleError, sha256_file
from edge.errors import DoorlockError
from edge.vision.runtime import TFLiteModel

DEFAULT_DIR = packaged("pad")
MANIFEST = "metadata.json"
SCHEMA = "doorlock-pad"
SIZE = 80
BOX_SCALE = 1.0      # BlazeFace box -> the source's RetinaFace box (measured: docs/liveness.md)
THRESHOLD = 0.9      # averaged real-class probability at or above which a frame looks real (measured)


def source_box(box, box_scale: float = BOX_SCALE) -> tuple[int, int, int, int]:
    """A BlazeFace (x0, y0, x1, y1) box, grown about its centre, as the source's detector
    gives it: [int(left), int(top), int(right - left + 1), int(bottom - top + 1)]."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DoorlockError(f"PAD wants a face box (x0, y0, x1, y1), got {box!r}") from None
    if not np.isfinite([x0, y0, x1, y1]).all() or x1 - x0 < 1 or y1 - y0 < 1:
        raise DoorlockError(f"PAD face box {tuple(round(v, 1) for v in (x0, y0, x1, y1))} is empty or not finite")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) / 2 * box_scale, (y1 - y0) / 2 * box_scale
    left, top, right, bottom = cx - hw, cy - hh, cx + hw, cy + hh
    return int(left), int(top), int(right - left + 1), int(bottom - top + 1)


def patch_window(src_w: int, src_h: int, bbox, scale: float) -> tuple[int, int, int, int]:
    """CropImage._get_new_box: the box scaled about its centre (the scale capped so the
    window fits the frame), slid back inside the frame; inclusive (x0, y0, x1, y1)."""
    x, y, box_w, box_h = bbox
    scale = min((src_h - 1) / box_h, min((src_w - 1) / box_w, scale))
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = box_w / 2 + x, box_h / 2 + y
    x0, y0, x1, y1 = cx - new_w / 2, cy - new_h / 2, cx + new_w / 2, cy + new_h / 2
    if x0 < 0:
        x1 -= x0
        x0 = 0
    if y0 < 0:
        y1 -= y0
        y0 = 0
    if x1 > src_w - 1:
        x0 -= x1 - src_w + 1
        x1 = src_w - 1
    if y1 > src_h - 1:
        y0 -= y1 - src_h + 1
        y1 = src_h - 1
    return int(x0), int(y0), int(x1), int(y1)


def crop_patch(image: np.ndarray, box, scale: float, box_scale: float = BOX_SCALE,
               size: int = SIZE) -> np.ndarray:
    """The size x size patch the source model sees, in `image`'s own channel order."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DoorlockError("PAD wants a uint8 colour frame (H, W, 3), got "
                            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise DoorlockError(f"PAD frame {w}x{h} is too small")
    x0, y0, x1, y1 = patch_window(w, h, source_box(box, box_scale), scale)
    x0, y0 = max(x0, 0), max(y0, 0)        # float rounding at a frame-sized window
    return cv2.resize(image[y0:y1 + 1, x0:x1 + 1], (size, size))


class PadModel:
    """One MiniFASNet .tflite: (N, 80, 80, 3) BGR 0..255 -> (N, 3) softmax."""

    def __init__(self, path, num_threads: int | None = 1):
        self.model = TFLiteModel(path, num_threads=num_threads)
        if self.model.input_shape[1:] != (SIZE, SIZE, 3):
            raise DoorlockError(f"{Path(path).name}: input {self.model.input_shape}, not an 80x80 PAD model")

    def softmax(self, bgr: np.ndarray) -> np.ndarray:
        return self.model(np.asarray(bgr, np.float32))


def load_manifest(root: str | os.PathLike = DEFAULT_DIR) -> dict:
    """edge/models/pad's metadata.json, every listed file checked against its sha256 and size;
    a one-line BundleError otherwise (the door then stays locked, as for a face bundle)."""
    root = Path(root)
    path = root / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (no PAD models; build them with python -m converter build-pad)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or meta.get("schema_version") != 1:
        raise BundleError(f"{path}: not a doorlock PAD manifest (schema {SCHEMA} version 1)")
    files, models = meta.get("files"), meta.get("models")
    if not isinstance(files, dict) or not isinstance(models, dict) or not models:
        raise BundleError(f"{path}: no models or no file list")
    for key, m in models.items():
        if not isinstance(m, dict) or m.get("file") not in files or not isinstance(m.get("scale"), (int, float)):
            raise BundleError(f"{path}: model {key!r} lacks a listed file or a patch scale")
    for name, entry in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise BundleError(f"{path}: bad file name {name!r}")
        f = root / name
        if not f.is_file():
            raise BundleError(f"{f}: missing from the PAD models")
        if not isinstance(entry, dict) or f.stat().st_size != entry.get("bytes") \
                or sha256_file(f) != entry.get("sha256"):
            raise BundleError(f"{f}: size or sha256 differs from {MANIFEST} (altered or corrupt)")
    return meta


class TexturePad:
    """`score(frame_rgb, box)` -> the real-class probability (0..1), both models averaged.

    `last` keeps the last score and per-model probabilities; `score_s` / `scored` add up
    the time spent (latency)."""

    def __init__(self, root: str | os.PathLike = DEFAULT_DIR, num_threads: int | None = 1,
                 box_scale: float = BOX_SCALE, threshold: float = THRESHOLD):
        if not 0.0 < threshold < 1.0:
            raise DoorlockError(f"PAD threshold must be between 0 and 1, got {threshold}")
        if not 0.5 <= box_scale <= 2.0:
            raise DoorlockError(f"PAD box scale must be between 0.5 and 2, got {box_scale}")
        self.root = Path(root)
        self.meta = load_manifest(self.root)
        self.real_class = int(self.meta.get("output", {}).get("real_class", 1))
        self.models = [(float(m["scale"]), PadModel(self.root / m["file"], num_threads))
                       for m in self.meta["models"].values()]
        self.box_scale, self.threshold = float(box_scale), float(threshold)
        self.last: dict | None = None
        self.score_s, self.scored = 0.0, 0

    def patches(self, frame_rgb: np.ndarray, box) -> list[np.ndarray]:
        """The BGR patches, one per model (the frame is RGB, as the kiosk's)."""
        return [crop_patch(frame_rgb, box, s, self.box_scale)[..., ::-1] for s, _ in self.models]

    def score(self, frame_rgb: np.ndarray, box) -> float:
        t0 = time.perf_counter()
        try:
            probs = [m.softmax(p[None])[0] for p, (_, m) in zip(self.patches(frame_rgb, box), self.models)]
            real = float(np.mean([p[self.real_class] for p in probs]))
            self.last = {"real": real, "per_model": [round(float(p[self.real_class]), 4) for p in probs]}
            return real
        finally:
            self.score_s += time.perf_counter() - t0
            self.scored += 1

    def is_real(self, frame_rgb: np.ndarray, box) -> bool:
        return self.score(frame_rgb, box) >= self.threshold

    @property
    def mean_ms(self) -> float:
        return 1000 * self.score_s / self.scored if self.scored else 0.0
