"""Where screen images go (`Display`: `open()`, `show(rgb)`, `close()`), one per
screen.mode: `none` draws nothing; `file` writes every image to a video (MJPG .avi or
.mp4: the demo's "what the lock saw", and the tests'); `pygame` is a fullscreen pygame-ce
window, drawn straight to the screen through KMS/DRM on a Pi without a desktop.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import cv2
import numpy as np

from edge.errors import DoorlockError
from edge.screen.render import load_pygame


class Display:
    """Where screen images go. `size` is the image size it wants (None: as configured);
    `open()` runs in the renderer thread before the first `show`."""

    size: tuple[int, int] | None = None

    def open(self) -> None:
        pass

    def show(self, image: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class NullDisplay(Display):
    """screen.mode = "none"."""


class VideoDisplay(Display):
    """screen.mode = "file": every image to a video file (MJPG in .avi, mp4v in .mp4)."""

    def __init__(self, path: str | os.PathLike, fps: float = 15.0, size: tuple[int, int] = (800, 480)):
        self.path, self.fps, self.size = Path(path), float(fps), tuple(size)
        self.frames = 0
        self._writer = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if not self._writer.isOpened():
            self._writer = None
            raise DoorlockError(f"cannot write the screen video {self.path}")

    def show(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.open()
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def sdl_driver(driver: str) -> str | None:
    """The SDL video driver to ask for: "auto" is KMS/DRM on Linux without X11/Wayland
    (a Pi running only the kiosk), else SDL's own choice (None)."""
    if driver != "auto":
        return driver
    if (platform.system() == "Linux" and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")):
        return "kmsdrm"
    return None


class PygameDisplay(Display):
    """screen.mode = "pygame": fullscreen (the display's own size) or a window."""

    def __init__(self, size: tuple[int, int] = (800, 480), fullscreen: bool = True,
                 driver: str = "auto", title: str = "doorlock"):
        self.size, self.fullscreen, self.driver, self.title = tuple(size), fullscreen, driver, title
        self.window = None

    def open(self) -> None:
        pg = load_pygame()
        drv = sdl_driver(self.driver)
        if drv and not os.environ.get("SDL_VIDEODRIVER"):
            os.environ["SDL_VIDEODRIVER"] = drv
        try:
            pg.display.init()
            if self.fullscreen:
                self.window = pg.display.set_mode((0, 0), pg.FULLSCREEN)
                pg.mouse.set_visible(False)
            else:
                self.window = pg.display.set_mode(self.size)
            pg.display.set_caption(self.title)
        except pg.error as exc:
            raise DoorlockError(f"cannot open the screen (SDL video driver "
                                f"{os.environ.get('SDL_VIDEODRIVER') or 'default'}): {exc}") from None
        self.size = self.window.get_size()

    def show(self, image: np.ndarray) -> None:
        pg = load_pygame()
        h, w = image.shape[:2]
        surf = pg.image.frombuffer(np.ascontiguousarray(image).data, (w, h), "RGB")
        if (w, h) != self.window.get_size():
            surf = pg.transform.scale(surf, self.window.get_size())
        self.window.blit(surf, (0, 0))
        pg.display.flip()
        pg.event.pump()          # keep the window responsive; input is not used

    def close(self) -> None:
        if self.window is not None:
            pg = load_pygame()
            pg.display.quit()
            self.window = None
