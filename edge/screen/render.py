"""Drawing one screen image with pygame: the mirrored preview letterboxed above the
prompt bar, the face box and the prompt (`Renderer`), and `render_cost_ms`, the cost of
one image, for `edge bench`.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from edge.errors import DoorlockError
from edge.screen.prompts import LOOK, PROMPTS, TEXT_COLOUR, Shown, shown


def load_pygame():
    """pygame-ce with its fonts ready; a one-line DoorlockError when it is not installed."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise DoorlockError("the kiosk screen needs pygame-ce: pip install pygame-ce "
                            "(or set screen.mode = \"none\")") from None
    if not pygame.font.get_init():
        pygame.font.init()
    return pygame


class Renderer:
    """Draws one screen image: the mirrored preview (letterboxed above the prompt bar),
    the face box and the prompt. `render` returns the RGB image; `texts` and `state` say
    what was drawn last (for the tests), `prompt_rect` where the prompt bar is."""

    def __init__(self, width: int = 800, height: int = 480, mirror: bool = True):
        pg = load_pygame()
        self.pg = pg
        self.width, self.height, self.mirror = int(width), int(height), mirror
        bar = max(40, self.height // 6)
        self.prompt_rect = pg.Rect(0, self.height - bar, self.width, bar)
        self.preview_rect = pg.Rect(0, 0, self.width, self.height - bar)
        self.surface = pg.Surface((self.width, self.height))
        self._fonts: dict[int, object] = {}
        self._text_cache: dict[tuple, object] = {}
        self.texts: list[str] = []
        self.state: str | None = None
        self.face_rect = None

    def _font(self, size: int):
        if size not in self._fonts:
            self._fonts[size] = self.pg.font.Font(None, size)
        return self._fonts[size]

    def _text(self, text: str):
        """The text rendered to fit the bar (shrunk for long names); cached."""
        key = (text, self.prompt_rect.size)
        if key not in self._text_cache:
            size = int(self.prompt_rect.height * 0.6)
            limit = self.width - 2 * max(8, self.width // 40)
            img = self._font(size).render(text, True, TEXT_COLOUR)
            while img.get_width() > limit and size > 10:
                size = int(size * 0.9)
                img = self._font(size).render(text, True, TEXT_COLOUR)
            if len(self._text_cache) > 64:
                self._text_cache.clear()
            self._text_cache[key] = img
        return self._text_cache[key]

    def render(self, frame: np.ndarray | None, face, show: Shown, flash=None) -> np.ndarray:
        """`flash`: the light challenge's RGB colour, filling the preview instead of the picture."""
        pg, surf, pr = self.pg, self.surface, self.preview_rect
        surf.fill((0, 0, 0))
        self.face_rect = None
        if flash is not None:
            surf.fill(tuple(int(v) for v in flash), pr)
        elif frame is not None:
            fh, fw = frame.shape[:2]
            scale = min(pr.width / fw, pr.height / fh)
            w, h = max(1, round(fw * scale)), max(1, round(fh * scale))
            x0, y0 = pr.x + (pr.width - w) // 2, pr.y + (pr.height - h) // 2
            img = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            if self.mirror:
                img = cv2.flip(img, 1)
            img = np.ascontiguousarray(img)
            surf.blit(pg.image.frombuffer(img.data, (w, h), "RGB"), (x0, y0))
            if face is not None:
                bx0, by0, bx1, by1 = (float(v) for v in face.box)
                if self.mirror:
                    bx0, bx1 = fw - bx1, fw - bx0
                rect = pg.Rect(round(x0 + bx0 * scale), round(y0 + by0 * scale),
                               max(1, round((bx1 - bx0) * scale)), max(1, round((by1 - by0) * scale)))
                rect = rect.clip(pg.Rect(x0, y0, w, h))
                if rect.width and rect.height:
                    pg.draw.rect(surf, show.colour, rect, width=max(2, self.width // 200))
                    self.face_rect = rect
        surf.fill(show.colour, self.prompt_rect)
        text = self._text(show.text)
        surf.blit(text, text.get_rect(center=self.prompt_rect.center))
        self.texts, self.state = [show.text], show.state
        out = np.frombuffer(pg.image.tobytes(surf, "RGB"), np.uint8)
        return out.reshape(self.height, self.width, 3)


class FaceBox:
    """A copy of the face box only: the renderer thread needs nothing else of the face."""

    __slots__ = ("box",)

    def __init__(self, box):
        self.box = tuple(float(v) for v in box)


def render_cost_ms(frames=100, width: int = 800, height: int = 480, frame_size=(640, 480)) -> float:
    """Mean milliseconds to draw one screen image (preview, face box, prompt) at
    width x height. frames: a number of synthetic camera frames of frame_size, or an
    iterable of RGB frames. This is the renderer thread's cost per drawn image; it runs
    beside recognition, not in its path."""
    r = Renderer(width, height)
    if isinstance(frames, int):
        rng = np.random.default_rng(0)
        fw, fh = frame_size
        base = rng.integers(0, 255, (fh, fw, 3), np.uint8)
        distinct = [np.roll(base, 8 * k, axis=1) for k in range(8)]
        frames = [distinct[i % 8] for i in range(max(1, frames))]
    frames = list(frames)
    states = list(PROMPTS)
    r.render(frames[0], None, shown(LOOK))   # warm up: fonts, caches
    t = time.perf_counter()
    for i, frame in enumerate(frames):
        fh, fw = frame.shape[:2]
        box = FaceBox((fw * 0.35, fh * 0.25, fw * 0.6, fh * 0.7))
        r.render(frame, box, shown(states[i % len(states)], "Ada Lovelace"))
    return 1000 * (time.perf_counter() - t) / len(frames)
