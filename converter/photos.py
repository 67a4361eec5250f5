"""Aligned FeatureNet chips from full photographs, for pair lists of unaligned images
(deepface's `master.csv`, LFW).

Detectors: `dlib` (HOG, 5-point landmarks, `get_face_chip(size=150, padding=0.25)`:
exactly face_recognition's chips; needs `dlib-bin`, a converter-side dependency only),
`blazeface` (BlazeFace's keypoints, the device's alignment before the face mesh) and
`mesh` (the device's own pipeline). The largest face is used, or the one nearest the
centre (`pick="central"`, for LFW); a photo without a face gets no chip and its pairs
count as rejections. More: converter/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

from .faces import read_rgb

DETECTORS = ("dlib", "blazeface", "mesh")


class ChipMaker:
    def __init__(self, detector: str = "dlib", template: np.ndarray | None = None, size: int = 150,
                 pick: str = "largest"):
        if pick not in ("largest", "central"):
            raise DoorlockError(f"unknown face choice {pick!r}")
        self.pick = pick
        if detector not in DETECTORS:
            raise DoorlockError(f"unknown detector {detector!r} (use {' or '.join(DETECTORS)})")
        self.detector_name, self.size = detector, size
        if detector == "dlib":
            try:
                import dlib
            except ImportError:
                raise DoorlockError("the dlib detector needs the dlib-bin wheel "
                                    "(pip install dlib-bin), or use --detector mesh") from None
            import face_recognition_models

            self._dlib = dlib
            self._hog = dlib.get_frontal_face_detector()
            self._shape = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        else:
            from edge.vision.align import DLIB_CHIP_TEMPLATE_150
            from edge.vision.detect import FaceDetector

            self._det = FaceDetector("full", min_face_px=20, landmarks=detector == "mesh")
            self._det_short = FaceDetector("short", min_face_px=20, landmarks=detector == "mesh")
            self._template = DLIB_CHIP_TEMPLATE_150 if template is None else np.asarray(template)

    def _choose(self, faces, shape):
        if self.pick == "largest":
            return max(faces, key=lambda f: f.width * f.height)
        cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
        return min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2)

    def chip(self, img: np.ndarray) -> np.ndarray | None:
        """The chosen face's aligned size x size RGB chip, or None."""
        if self.detector_name == "dlib":
            rects = []
            for upsample in (1, 2):
                rects = self._hog(img, upsample)
                if len(rects):
                    break
            if not len(rects):
                return None
            r = max(rects, key=lambda r: r.width() * r.height())
            shape = self._shape(img, r)
            return np.asarray(self._dlib.get_face_chip(img, shape, size=self.size, padding=0.25))
        from edge.vision.align import align_detected

        det = self._det
        faces = det.detect(img)
        if not faces:
            det, faces = self._det_short, self._det_short.detect(img)
        if not faces:
            return None
        face = self._choose(faces, img.shape)
        # refine adds the mesh only for "mesh" (landmarks on); without it, keypoints align
        return align_detected(img, det.refine(img, face), self._template, self.size)


def photo_chips(paths: list[Path], detector: str = "dlib", progress: bool = True
                ) -> tuple[list[np.ndarray | None], list[Path]]:
    """Chips for every photo (None where no face was found) and the photos without one."""
    import sys

    from tqdm import tqdm

    maker = ChipMaker(detector)
    chips, missed = [], []
    for p in tqdm(paths, desc=f"faces ({detector})", unit="photo", file=sys.stderr, disable=not progress):
        c = maker.chip(read_rgb(p))
        chips.append(c)
        if c is None:
            missed.append(p)
    return chips, missed
