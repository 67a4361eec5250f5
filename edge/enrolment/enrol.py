"""Enrolment: photos of a person -> checked, aligned chips -> feature vectors in the gallery.

A photo is accepted only if it holds exactly one face, large and sharp enough to be a
good reference; otherwise it is rejected with the reason, so an administrator knows which
photo to retake.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.vision.align import align_blazeface, align_detected, aligned_by_mesh
from edge.vision.detect import FaceDetector
from edge.vision.embed import FeatureNet
from edge.enrolment.images import MAX_PHOTO_BYTES, decode_photo
from edge.enrolment.manifest import PhotoRejected
from edge.errors import DoorlockError
from edge.service.fsutil import read_regular_fd

MIN_ENROL_FACE_PX = 80      # eye-to-mouth scale is too coarse below this
MIN_SHARPNESS = 20.0        # variance of the Laplacian of the aligned chip


class EnrolError(DoorlockError):
    """A photo that cannot serve as a reference (with the reason)."""


@dataclass
class EnrolledFace:
    """One photo's features: of the chip aligned by the face mesh and of its mirror image,
    and the same aligned by BlazeFace's keypoints (for probes whose mesh is unusable)."""

    vector: np.ndarray
    flip: np.ndarray
    face_px: float
    sharpness: float
    kp_vector: np.ndarray = None
    kp_flip: np.ndarray = None

    def __post_init__(self):
        if self.kp_vector is None:
            self.kp_vector, self.kp_flip = self.vector, self.flip


def read_photo(path: str | Path) -> np.ndarray:
    """RGB array of a photo from a known data set (bench, liveness-eval): any format
    OpenCV reads. Photos from a user go through `read_enrol_photo`."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise EnrolError(f"{path.name}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_regular_file(path: Path, limit: int) -> bytes:
    """The whole of `path`, if it is a regular file of at most `limit` bytes. Opened
    without blocking, so a FIFO or a device is refused instead of hanging the command."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        why = "not found" if exc.errno == errno.ENOENT else f"cannot be opened ({exc.strerror})"
        raise EnrolError(f"{path.name}: {why}") from None
    try:
        return read_regular_fd(fd, limit, path.name, EnrolError,
                               lambda exc: EnrolError(f"{path.name}: cannot be read ({exc.strerror})"))
    finally:
        os.close(fd)


def read_enrol_photo(path: str | Path) -> np.ndarray:
    """RGB array of a photo offered for enrolment (`edge enrol --photo`), with the checks
    a USB stick's photo gets (edge/enrolment/images.py): a regular file (never a FIFO or device) of
    at most 20 MiB, a complete JPEG or PNG whose header declares at most 40 megapixels,
    checked before anything is decoded. EnrolError with the reason otherwise."""
    path = Path(path)
    data = _read_regular_file(path, MAX_PHOTO_BYTES)
    try:
        return decode_photo(data, path.name)
    except PhotoRejected as exc:
        raise EnrolError(str(exc)) from None


def sharpness(chip_rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def enrol_face(image_rgb: np.ndarray, detector: FaceDetector, featurenet: FeatureNet,
               min_face_px: float = MIN_ENROL_FACE_PX, min_sharpness: float = MIN_SHARPNESS,
               ) -> EnrolledFace:
    """Features of the one face in a photo (and of its mirror image), or EnrolError."""
    faces = detector.detect(image_rgb)
    if not faces:
        raise EnrolError("no face found")
    if len(faces) > 1:
        raise EnrolError(f"{len(faces)} faces found, need exactly one")
    face = faces[0]
    size = float(face.box[2] - face.box[0])
    if size < min_face_px:
        raise EnrolError(f"face too small ({size:.0f} px wide, need {min_face_px:.0f})")
    template = featurenet.bundle.template_points()
    chip = align_detected(image_rgb, detector.refine(image_rgb, face), template, featurenet.size[0])
    sharp = sharpness(chip)
    if sharp < min_sharpness:
        raise EnrolError(f"face too blurred (sharpness {sharp:.0f}, need {min_sharpness:.0f})")
    vec, flip = featurenet.embed_with_mirror(chip)
    if not aligned_by_mesh(face):   # the chip is already the keypoint-aligned one
        return EnrolledFace(vec, flip, size, sharp)
    kp_chip = align_blazeface(image_rgb, face, template, featurenet.size[0])
    kp_vec, kp_flip = featurenet.embed_with_mirror(kp_chip)
    return EnrolledFace(vec, flip, size, sharp, kp_vec, kp_flip)
