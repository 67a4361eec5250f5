"""The kiosk screen: what the person at the door sees.

One small display interface (`Display`: `show(rgb)`, `close()`) with three outputs:
- `pygame`: a fullscreen pygame-ce window; on a Pi without a desktop SDL draws straight
  to the screen through KMS/DRM (driver "auto" picks "kmsdrm" when no X11/Wayland
  display is set), elsewhere it is a normal window;
- `file`: the annotated frames written to a video (MJPG .avi, or .mp4): the demo's
  "what the lock saw", and the tests';
- `none`: nothing drawn.

It shows the mirrored live preview, the face box and one prompt at a time (PROMPTS):
"Look at the camera", "Hold still", "Welcome, <name>", "Not recognised", "Outside your
access hours", "Camera fault, door locked", "Door fault, door locked", "Locked out, try
later". It never shows a score, and the only name it ever shows is the one just granted:
a not-recognised face's best guess is an enrolled person's name, and that stays unsaid.

Drawing never slows recognition: `Screen` is a kiosk frame listener that only updates
the prompt state and hands the frame to a renderer thread, which draws at its own rate
(`fps`), always the newest frame (older ones are dropped). The `file` output instead
writes every frame the kiosk judged (a bounded queue, so it stays a faithful record).
`render_cost_ms()` times the renderer for `edge bench`.

    python -m edge.screen.screen docs/      # write a PNG of every screen state (the README's)
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.errors import DoorlockError

log = logging.getLogger(__name__)

MODES = ("none", "pygame", "file")

LOOK, HOLD, WELCOME, NOT_RECOGNISED = "look", "hold", "welcome", "not_recognised"
OUTSIDE_HOURS, CAMERA_FAULT, DOOR_FAULT, LOCKED_OUT = ("outside_hours", "camera_fault",
                                                       "door_fault", "locked_out")


@dataclass(frozen=True)
class Prompt:
    text: str               # "{name}" is the granted identity (WELCOME only)
    colour: tuple           # the prompt bar's RGB colour
    priority: int           # a held prompt gives way only to a higher one
    hold: bool              # stays for hold_s after its last frame


PROMPTS: dict[str, Prompt] = {
    LOOK: Prompt("Look at the camera", (38, 50, 72), 0, False),
    HOLD: Prompt("Hold still", (196, 132, 0), 1, False),
    NOT_RECOGNISED: Prompt("Not recognised", (178, 34, 34), 2, True),
    OUTSIDE_HOURS: Prompt("Outside your access hours", (120, 58, 160), 3, True),
    WELCOME: Prompt("Welcome, {name}", (22, 140, 64), 4, True),
    CAMERA_FAULT: Prompt("Camera fault, door locked", (96, 96, 96), 5, True),
    DOOR_FAULT: Prompt("Door fault, door locked", (120, 72, 40), 6, False),
    LOCKED_OUT: Prompt("Locked out, try later", (140, 0, 70), 7, True),
}
TEXT_COLOUR = (255, 255, 255)


@dataclass(frozen=True)
class Shown:
    """One prompt on screen: its state, the text drawn and how long it holds."""

    state: str
    text: str
    until: float = 0.0

    @property
    def prompt(self) -> Prompt:
        return PROMPTS[self.state]

    @property
    def colour(self) -> tuple:
        return PROMPTS[self.state].colour


def shown(state: str, name: str | None = None, until: float = 0.0) -> Shown:
    """The prompt for a state; the name is used by WELCOME only."""
    text = PROMPTS[state].text
    if state == WELCOME:
        text = text.format(name=name or "")
    return Shown(state, text, until)


class Prompter:
    """Which prompt to show, from the kiosk's decisions and the door's status.

    status: a callable returning the door's DoorStatus (lockout, input faults), or None.
    attempt_frames: "Not recognised" only after this many refused frames in a row
    (before that: "Hold still"), so one blurred frame of an enrolled person is not shown
    as a refusal. camera_fault_s: no frame for this long is a camera fault."""

    def __init__(self, hold_s: float = 3.0, attempt_frames: int = 3, status: Callable | None = None,
                 camera_fault_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.hold_s, self.attempt_frames = hold_s, max(1, attempt_frames)
        self.status, self.camera_fault_s, self.clock = status, camera_fault_s, clock
        self._mutex = threading.Lock()
        self.live = shown(LOOK)
        self.held: Shown | None = None
        self._denied = 0
        self._last_frame: float | None = None

    def _state_of(self, decision) -> Shown:
        if decision is None:
            self._denied = 0
            return shown(LOOK)
        event = decision.event
        if event in ("granted", "open"):
            self._denied = 0
            return shown(WELCOME, decision.identity)
        if event == "pending":
            self._denied = 0
            return shown(HOLD)
        if event == "fault":
            return shown(CAMERA_FAULT)
        reason = (decision.reason or "") if event == "refused" else ""
        if reason.startswith("hours:"):
            return shown(OUTSIDE_HOURS)
        if reason.startswith("door: locked out"):
            return shown(LOCKED_OUT)
        if reason.startswith("door: input fault"):
            return shown(DOOR_FAULT)
        self._denied += 1       # denied, or refused by another gate (e.g. liveness)
        return shown(NOT_RECOGNISED if self._denied >= self.attempt_frames else HOLD)

    def update(self, frame_present: bool, decision, now: float | None = None) -> Shown:
        """Take one kiosk frame; returns the prompt to show now."""
        now = self.clock() if now is None else now
        with self._mutex:
            if frame_present:
                self._last_frame = now
            if frame_present or decision is not None:
                s = self._state_of(decision)
                self.live = s
                if s.prompt.hold:
                    held = self.held
                    if held is None or held.until <= now or s.prompt.priority >= held.prompt.priority:
                        self.held = Shown(s.state, s.text, now + self.hold_s)
        return self.current(now)

    def current(self, now: float | None = None) -> Shown:
        now = self.clock() if now is None else now
        status = None
        if self.status is not None:
            try:
                status = self.status()
            except Exception as exc:  # the screen must not stop on a status error
                log.error("door status: %s", exc)
        with self._mutex:
            if status is not None and status.locked_out:
                return shown(LOCKED_OUT)
            if status is not None and status.faults:
                return shown(DOOR_FAULT)
            if self._last_frame is not None and now - self._last_frame > self.camera_fault_s:
                return shown(CAMERA_FAULT)
            held, live = self.held, self.live
            if held is not None and held.until > now and held.prompt.priority >= live.prompt.priority:
                return held
            return live


def _pygame():
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
        pg = _pygame()
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

    def render(self, frame: np.ndarray | None, face, show: Shown) -> np.ndarray:
        pg, surf, pr = self.pg, self.surface, self.preview_rect
        surf.fill((0, 0, 0))
        self.face_rect = None
        if frame is not None:
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


# -- displays -----------------------------------------------------------------------------

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
        pg = _pygame()
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
        pg = _pygame()
        h, w = image.shape[:2]
        surf = pg.image.frombuffer(np.ascontiguousarray(image).data, (w, h), "RGB")
        if (w, h) != self.window.get_size():
            surf = pg.transform.scale(surf, self.window.get_size())
        self.window.blit(surf, (0, 0))
        pg.display.flip()
        pg.event.pump()          # keep the window responsive; input is not used

    def close(self) -> None:
        if self.window is not None:
            pg = _pygame()
            pg.display.quit()
            self.window = None


# -- the frame listener -------------------------------------------------------------------

class _Box:
    """A copy of the face box only: the renderer thread needs nothing else of the face."""

    __slots__ = ("box",)

    def __init__(self, box):
        self.box = tuple(float(v) for v in box)


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
        box = _Box(face.box) if face is not None and frame is not None else None
        if self.every_frame:
            if frame is not None and self.failed is None:
                self._queue.put((np.array(frame, copy=True), box, current))
            return
        with self._cond:
            if self._latest is not None and self._latest[0] is not None:
                self.dropped += 1
            self._latest = (frame, box, None)
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
            if item is not None:
                last_frame, last_box = item[0], item[1]
                if last_frame is None:
                    last_box = None
            now = self.clock()
            current = self.prompter.current(now)
            key = (current.state, current.text)
            if item is None and key == last_key and now - last_draw < 1.0:
                continue        # nothing new: redraw about once a second only
            self._draw(last_frame, last_box, current)
            last_key, last_draw = key, self.clock()
            wait = period - (self.clock() - now)
            if wait > 0 and self._wait(self._halt, wait):  # own rate: at most fps a second
                break

    def _draw(self, frame, box, current: Shown) -> None:
        t = time.perf_counter()
        try:
            image = self.renderer.render(frame, box, current)
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


# -- the cost of drawing, for `edge bench` ---------------------------------------------------

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
        box = _Box((fw * 0.35, fh * 0.25, fw * 0.6, fh * 0.7))
        r.render(frame, box, shown(states[i % len(states)], "Ada Lovelace"))
    return 1000 * (time.perf_counter() - t) / len(frames)
