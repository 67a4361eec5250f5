"""Real aligned face chips for calibration and measurement.

Accepts either a one-folder-per-identity tree of ArcFace-template crops (112x112, like
`../shared/data/faces/glint_celebs`), which are mapped onto FeatureNet's 150x150 dlib chip
by a similarity transform between the two templates (border padded, not resized), or a
tree of chips already in FeatureNet's 150x150 layout.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np

from edge.errors import DoorlockError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


def identity_folders(root: str | Path) -> dict[str, list[Path]]:
    """{identity: sorted image paths} for a one-folder-per-identity tree."""
    root = Path(root)
    if not root.is_dir():
        raise DoorlockError(f"{root}: face folder not found")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if imgs:
            out[d.name] = imgs
    if not out:
        raise DoorlockError(f"{root}: no identity folders with images")
    return out


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DoorlockError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_featurenet_chip(img: np.ndarray, size: int = 150, template: np.ndarray | None = None
                       ) -> np.ndarray:
    """An aligned crop -> FeatureNet's chip: chips already `size` x `size` pass through
    (an ArcFace-template FeatureNet takes 112x112 crops as they are); 112x112 ArcFace crops
    are remapped onto another template (default dlib's 150x150 chip)."""
    if img.shape[:2] == (size, size):
        return img
    if img.shape[:2] == (112, 112):
        from edge.vision.align import ARCFACE_TEMPLATE_112, DLIB_CHIP_TEMPLATE_150, remap_chip

        to = DLIB_CHIP_TEMPLATE_150 if template is None else template
        return remap_chip(img, ARCFACE_TEMPLATE_112, to, size)
    raise DoorlockError(f"aligned crop of unexpected size {img.shape[1]}x{img.shape[0]} "
                        f"(want 112x112 ArcFace or {size}x{size} chips)")


def sample_chips(root: str | Path, count: int, seed: int = 0, exclude: set[Path] | None = None,
                 size: int = 150, template: np.ndarray | None = None,
                 ) -> tuple[list[np.ndarray], list[Path]]:
    """`count` chips spread evenly over identities (round-robin), reproducibly shuffled."""
    folders = identity_folders(root)
    rng = random.Random(seed)
    pools = {k: [p for p in v if not exclude or p not in exclude] for k, v in folders.items()}
    for v in pools.values():
        rng.shuffle(v)
    picked: list[Path] = []
    while len(picked) < count and any(pools.values()):
        for k in sorted(pools):
            if pools[k] and len(picked) < count:
                picked.append(pools[k].pop())
    return [to_featurenet_chip(read_rgb(p), size, template) for p in picked], picked
