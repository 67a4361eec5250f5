"""The kiosk frame listener (`Screen`) that keeps drawing out of recognition's path, and
`open_screen`, the screen the [screen] settings ask for.

`Screen` only updates the prompt and hands the frame to a renderer thread that draws at
its own rate, always the newest frame; the file output draws every judged frame instead.
How the screen behaves and looks: docs/screen.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import numpy as np

from edge.screen.displays import Display, PygameDisplay, VideoDisplay
from edge.screen.prompts import Prompter, Shown
from edge.screen.render import FaceBox, Renderer

log = logging.getLogger(__name__)

MODES = ("none", "pygame", "file")


class Screen:
    """The kiosk frame listener: `screen(frame, face, decision)` after every camera frame.

    It updates the prompt (cheap) and hands the frame to the renderer thread. With
    `every_frame` (the file output) each frame with an image is drawn and shown, in
    order, with the prompt it had; otherwise the thread draws the newest frame at most
    `fps` times a second and redraws on its own when the prompt changes. `clock` and
    `wait` (threading.Event.wait's signature: the pause between images) are injectable
    so tests step the rate limit on fake time."""

    def __init__(self, display: Display, width: int = 800, height: int = 480, fps: float = 15.0,
                 mirror: bool = True, prompter: Prompter | None = None, every_frame: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Event, float], bool] = threading.Event.wait):
        self.display, self.fps, self.mirror = display, float(fps), mirror
        self.size = (int(width), int(height))
        self.prompter = prompter or Prompter(clock=clock)
        self.every_frame, self.clock, self._wait = every_frame, clock, wait
        self.renderer: Renderer | None = None
        self.shown = 0            # images handed to the display
        self.dropped = 0          # frames replaced by a newer one before they were drawn
        self.render_s = 0.0       # time spent drawing
        self.failed: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=64)
        self._latest = None
        self._flash: tuple | None = None      # the light challenge's colour (edge.kiosk.flash)
        self._flash_changed = False
        self._cond = threading.Condition()
        self._stop = False
        self._halt = threading.Event()   # cuts the pause between images short on close
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="screen", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def __call__(self, frame, face, decision) -> None:
        now = self.clock()
        current = self.prompter.update(frame is not None, decision, now)
        box = FaceBox(face.box) if face is not None and frame is not None else None
        if self.every_frame:
            if frame is not None and self.failed is None:
                self._queue.put((np.array(frame, copy=True), box, current, self._flash))
            return
        with self._cond:
            if self._latest is not None and self._latest[0] is not None:
                self.dropped += 1
            self._latest = (frame, box, None)
            self._cond.notify()

    def paint_flash(self, rgb) -> None:
        """The light challenge (edge.kiosk.flash): fill the preview with this RGB colour from the
        next image on, drawn at once; None: the camera picture again."""
        with self._cond:
            self._flash = None if rgb is None else tuple(int(v) for v in rgb)
            self._flash_changed = True
            self._cond.notify()

    # the renderer thread
    def _run(self) -> None:
        try:
            self.display.open()
            size = self.display.size or self.size
            self.renderer = Renderer(*size, mirror=self.mirror)
        except Exception as exc:  # a broken screen must not stop the lock
            self.failed = str(exc)
            log.error("screen off: %s", exc)
            self._ready.set()
            return
        self._ready.set()
        if self.every_frame:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                self._draw(*item)
            return
        period = 1.0 / self.fps
        last_frame, last_box, last_key, last_draw = None, None, None, 0.0
        while True:
            with self._cond:
                if self._latest is None and not self._stop:  # one that came in the pause: at once
                    self._cond.wait(timeout=period)
                if self._stop:
                    break
                item, self._latest = self._latest, None
                flash, changed, self._flash_changed = self._flash, self._flash_changed, False
            if item is not None:
                last_frame, last_box = item[0], item[1]
                if last_frame is None:
                    last_box = None
            now = self.clock()
            current = self.prompter.current(now)
            key = (current.state, current.text)
            if item is None and key == last_key and not changed and now - last_draw < 1.0:
                continue        # nothing new: redraw about once a second only
            self._draw(last_frame, last_box, current, flash)
            last_key, last_draw = key, self.clock()
            wait = period - (self.clock() - now)
            if wait > 0 and self._wait(self._halt, wait):  # own rate: at most fps a second
                break

    def _draw(self, frame, box, current: Shown, flash=None) -> None:
        t = time.perf_counter()
        try:
            image = self.renderer.render(frame, box, current, flash)
            self.display.show(image)
            self.shown += 1
        except Exception as exc:
            log.error("screen: %s", exc)
        finally:
            self.render_s += time.perf_counter() - t

    def close(self) -> None:
        """Draw what is queued (file output), stop the thread, close the display."""
        if self.every_frame:
            if self._thread.is_alive():
                self._queue.put(None)
        else:
            with self._cond:
                self._stop = True
                self._halt.set()
                self._cond.notify()
        self._thread.join(timeout=30)
        try:
            self.display.close()
        except Exception as exc:
            log.error("screen close: %s", exc)

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.render_s / self.shown if self.shown else 0.0


def open_screen(settings, attempt_frames: int = 3, status: Callable | None = None) -> Screen | None:
    """The screen [screen] asks for; None for mode "none"."""
    s = settings
    if s.mode == "none":
        return None
    prompter = Prompter(s.hold_s, attempt_frames, status)
    size = (s.width, s.height)
    if s.mode == "file":
        return Screen(VideoDisplay(s.path, s.fps, size), *size, fps=s.fps, mirror=s.mirror,
                      prompter=prompter, every_frame=True)
    display = PygameDisplay(size, s.fullscreen, s.driver)
    return Screen(display, *size, fps=s.fps, mirror=s.mirror, prompter=prompter)
