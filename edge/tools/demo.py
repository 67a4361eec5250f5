"""The built-in default: a sample video made here from a face photo that a pip-installed
package ships (scikit-image's astronaut, Eileen Collins), so the kiosk can be tried on
any machine without a camera, a door or the project's shared data.

The video starts with an empty scene (door stays locked), then the face walks in, moves,
turns slightly, changes scale and lighting (door opens once the identity is confirmed),
then leaves again.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import DoorlockError

SAMPLE_NAME = "Eileen Collins (astronaut)"
W, H, FPS = 640, 480, 15


def sample_face_photo() -> np.ndarray:
    """scikit-image's astronaut photo (RGB, 512x512)."""
    try:
        from skimage import data
    except ImportError:
        raise DoorlockError("the demo needs scikit-image for its sample photo: "
                            "pip install scikit-image") from None
    return np.ascontiguousarray(data.astronaut())


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([60 + 40 * xx / W, 70 + 30 * yy / H, 80 + 20 * (xx + yy) / (W + H)], -1)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def sample_frames(n_frames: int = 120, seed: int = 0):
    """Yield RGB frames: 20 empty, the face for most of the clip, 15 empty at the end."""
    photo = sample_face_photo()
    head = photo[0:300, 80:380]  # head and shoulders of the astronaut
    rng = np.random.default_rng(seed)
    bg = _background(rng)
    empty_head, empty_tail = 20, 15
    for i in range(n_frames):
        frame = bg.copy()
        k = i - empty_head
        n_face = n_frames - empty_head - empty_tail
        if 0 <= k < n_face:
            t = k / max(1, n_face - 1)
            scale = 0.7 + 0.5 * t                     # walking towards the camera
            angle = 6.0 * np.sin(2 * np.pi * t)       # slight head tilt
            cx = W * (0.35 + 0.3 * t)
            cy = H * 0.5 + 15 * np.sin(4 * np.pi * t)
            m = cv2.getRotationMatrix2D((head.shape[1] / 2, head.shape[0] / 2), angle, scale)
            m[:, 2] += (cx - head.shape[1] / 2, cy - head.shape[0] / 2)
            warped = cv2.warpAffine(head, m, (W, H), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT)
            mask = cv2.warpAffine(np.ones(head.shape[:2], np.uint8), m, (W, H)) > 0
            gain = 0.85 + 0.3 * t                     # lighting changes
            frame[mask] = np.clip(warped[mask] * gain, 0, 255).astype(np.uint8)
        noise = rng.normal(0, 4, frame.shape)
        yield np.clip(frame + noise, 0, 255).astype(np.uint8)


def write_sample_video(path: str | Path, n_frames: int = 120, seed: int = 0) -> Path:
    """Write the sample clip (MJPG in AVI: decodable by every OpenCV build)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    if not writer.isOpened():
        raise DoorlockError(f"cannot write the sample video to {path}")
    try:
        for frame in sample_frames(n_frames, seed):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    tmp.replace(path)
    return path
