"""The README's screenshots: a PNG of every screen state (docs/screen-<state>.png), drawn on
the built-in demo video. `python -m edge.tools.screenshots [DIR]`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import cv2

from edge.screen.prompts import CAMERA_FAULT, LOOK, PROMPTS, shown
from edge.screen.render import Renderer
from edge.tools.demo import sample_frames

log = logging.getLogger(__name__)


def screenshots(outdir: str | os.PathLike, width: int = 800, height: int = 480) -> list[Path]:
    """A PNG of every screen state, drawn on a frame of the built-in demo video with the
    face found by the detector (docs/screen-<state>.png)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    frames = list(sample_frames(120))
    empty, frame = frames[5], frames[60]     # the empty scene; the face walking in
    box = None
    try:
        from edge.vision.detect import FaceDetector

        faces = FaceDetector("short").detect(frame)
        box = faces[0] if faces else None
    except Exception as exc:  # the screenshots can do without the detector
        log.warning("no face box in the screenshots: %s", exc)
    r = Renderer(width, height)
    out = []
    for state in PROMPTS:
        img = {LOOK: empty, CAMERA_FAULT: None}.get(state, frame)
        face = box if state not in (LOOK, CAMERA_FAULT) else None
        image = r.render(img, face, shown(state, "Eileen Collins"))
        path = outdir / f"screen-{state.replace('_', '-')}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        out.append(path)
    return out


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "docs"
    for p in screenshots(target):
        print(p)
