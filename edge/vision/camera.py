"""Frame sources for the kiosk: Pi camera, USB camera or a video file, all alike.

Every source yields RGB uint8 HxWx3 frames (OpenCV's BGR is converted here, once), so the
detector never needs to know where a frame came from. `read()` returns None when there is
no frame right now; the kiosk loop treats that as "keep the door locked".
`ReconnectingCamera` wraps any source so that an unplugged or crashed camera is reopened
with back-off instead of ending the service.
"""

from __future__ import annotations

import abc
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from edge.errors import DoorlockError

log = logging.getLogger(__name__)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray / BGRA) frame as contiguous RGB uint8 HxWx3."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class Camera(abc.ABC):
    """A source of RGB frames. `fps` is the source's frame rate, or None if unknown;
    `finished` turns true when no frame will ever come again (end of a video file)."""

    fps: float | None = None
    finished: bool = False

    @abc.abstractmethod
    def read(self) -> np.ndarray | None:
        """The next RGB uint8 HxWx3 frame, or None (no frame now, end of file, or fault)."""

    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    def hold_exposure(self, held: bool) -> bool:
        """Freeze auto-exposure and auto white balance where they are (True), or let them
        run again (False): the light challenge measures the screen's colour on the face, and
        a camera that re-balances in the middle would take it out. Returns whether the
        source did it; a video file, like the default, has nothing to hold."""
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames until the first None: the natural loop over a video file."""
        while (frame := self.read()) is not None:
            yield frame


class VideoFileCamera(Camera):
    """A video file as a camera: for the demo, the field benchmark and tests.

    `loop` rewinds at the end instead of returning None. `realtime` paces frames to the
    file's fps and skips frames when the caller is slow, as a live camera would.
    """

    def __init__(self, path: str | os.PathLike, loop: bool = False, realtime: bool = False,
                 *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.path = Path(path)
        self.loop = loop
        self.realtime = realtime
        self._clock, self._sleep = clock, sleep
        if not self.path.is_file():
            raise DoorlockError(f"video file not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        ok, first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok or first is None:
            self._cap.release()
            raise DoorlockError(f"cannot read video file {self.path}: not a video OpenCV can decode")
        self._pending: np.ndarray | None = first  # decoded while checking the file
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        self._t0: float | None = None
        self._served = 0  # frames handed out or skipped since the (re)start of pacing
        self._closed = False

    def _next_raw(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        ok, frame = self._cap.read()
        if ok:
            return frame
        if not self.loop:
            self.finished = True
            return None
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, frame = self._cap.read()
        if not ok:  # some containers cannot seek: reopen
            self._cap.release()
            self._cap = cv2.VideoCapture(str(self.path))
            ok, frame = self._cap.read()
        if not ok:
            self.finished = True
        return frame if ok else None

    def read(self) -> np.ndarray | None:
        if self._closed:
            return None
        if self.realtime and self.fps:
            now = self._clock()
            if self._t0 is None:
                self._t0 = now
            due = self._t0 + self._served / self.fps
            if now < due:
                self._sleep(due - now)
            else:  # the caller is late: drop the frames a live camera would have dropped
                behind = int((now - self._t0) * self.fps) - self._served
                for _ in range(max(0, behind)):
                    if self._next_raw() is None:
                        return None
                    self._served += 1
            self._served += 1
        frame = self._next_raw()
        return None if frame is None else _to_rgb(frame)

    def close(self) -> None:
        self._closed = self.finished = True
        self._cap.release()


class USBCamera(Camera):
    """A UVC webcam through OpenCV's VideoCapture: an index (0) or a device path."""

    def __init__(self, index_or_device: int | str = 0, width: int = 640, height: int = 480,
                 fps: float | None = None):
        self.device = index_or_device
        self._cap = cv2.VideoCapture(index_or_device)
        if not self._cap.isOpened():
            self._cap.release()
            raise DoorlockError(
                f"cannot open USB camera {index_or_device!r} (plugged in? see `ls /dev/video*`)")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a stale queue
        got = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got) if got and got > 0 else (float(fps) if fps else None)

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        return _to_rgb(frame) if ok and frame is not None else None

    def hold_exposure(self, held: bool) -> bool:
        """V4L2 through OpenCV: manual exposure (1) at the value auto chose, or aperture
        priority (3) again (0.25 / 0.75 where the backend maps them the old way); auto white
        balance off at its temperature, or on. Cameras that lack a control refuse it (False)."""
        cap = self._cap

        def auto_exposure(manual: bool) -> bool:
            return bool(cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1 if manual else 3)
                        or cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 0.25 if manual else 0.75))

        if held:
            exposure, kelvin = cap.get(cv2.CAP_PROP_EXPOSURE), cap.get(cv2.CAP_PROP_WB_TEMPERATURE)
            ok = auto_exposure(True) and cap.set(cv2.CAP_PROP_EXPOSURE, exposure)
            return bool(cap.set(cv2.CAP_PROP_AUTO_WB, 0) and cap.set(cv2.CAP_PROP_WB_TEMPERATURE, kelvin)
                        and ok)
        return bool(auto_exposure(False) & cap.set(cv2.CAP_PROP_AUTO_WB, 1))

    def close(self) -> None:
        self.finished = True
        self._cap.release()


class PiCamera(Camera):
    """The Raspberry Pi camera module through picamera2 (only importable on a Pi)."""

    def __init__(self, width: int = 640, height: int = 480, fps: float | None = None):
        try:
            from picamera2 import Picamera2  # lazy: exists only on Raspberry Pi OS
        except ImportError as exc:
            raise DoorlockError(
                "camera 'picamera' needs picamera2, which exists only on a Raspberry Pi "
                "(sudo apt install python3-picamera2); use camera.source = \"usb:0\" "
                "or a video file elsewhere") from exc
        try:
            self._cam = Picamera2()
        except (IndexError, RuntimeError, OSError) as exc:
            raise DoorlockError(f"no Pi camera detected ({exc}); check the ribbon cable") from exc
        controls = {"FrameRate": float(fps)} if fps else {}
        # "RGB888" is libcamera's name for memory order B,G,R; it works on every Pi model.
        config = self._cam.create_video_configuration(
            main={"size": (int(width), int(height)), "format": "RGB888"}, controls=controls)
        self._cam.configure(config)
        self._cam.start()
        self.fps = float(fps) if fps else None
        self._closed = False

    def read(self) -> np.ndarray | None:
        if self._closed:
            return None
        try:
            frame = self._cam.capture_array("main")
        except Exception as exc:  # picamera2 raises plain RuntimeErrors on timeouts
            log.warning("Pi camera capture failed: %s", exc)
            return None
        return np.ascontiguousarray(frame[..., 2::-1])  # BGR(X) -> RGB

    def hold_exposure(self, held: bool) -> bool:
        """libcamera keeps the last exposure, gain and colour gains while AE and AWB are off."""
        if self._closed:
            return False
        try:
            self._cam.set_controls({"AeEnable": not held, "AwbEnable": not held})
        except Exception as exc:  # a camera without the controls: the challenge runs as it is
            log.warning("Pi camera: cannot %s exposure and white balance: %s",
                        "hold" if held else "release", exc)
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = self.finished = True
            try:
                self._cam.stop()
            finally:
                self._cam.close()


def is_live_source(spec: str) -> bool:
    """A live camera ("picamera", "usb:N", "/dev/videoN"), not a video file."""
    return spec == "picamera" or spec.startswith(("usb:", "/dev/video"))


def open_camera(spec: str, *, width: int = 640, height: int = 480, fps: float | None = None,
                loop: bool = False, realtime: bool = False) -> Camera:
    """A camera from its config string: "picamera", "usb:N", "/dev/videoN" or a video file.

    width/height/fps apply to live cameras; loop/realtime to video files.
    """
    spec = str(spec).strip()
    if not spec:
        raise DoorlockError("empty camera source (use \"picamera\", \"usb:0\", /dev/video0 or a file)")
    if spec == "picamera":
        return PiCamera(width, height, fps)
    if spec.startswith("usb:"):
        index = spec[4:]
        if not index.isdigit():
            raise DoorlockError(f"bad camera source {spec!r}: expected usb:N with N a number")
        return USBCamera(int(index), width, height, fps)
    if spec.startswith("/dev/video"):
        return USBCamera(spec, width, height, fps)
    return VideoFileCamera(spec, loop=loop, realtime=realtime)


class GreyCamera(Camera):
    """A near-infrared camera's frames as grey in all three channels. A NoIR sensor's colour
    filters all pass 850 nm light unevenly, so its "colour" is a cast that changes with the
    room's light and the illuminator's share: no information, only noise for the models."""

    def __init__(self, camera: Camera):
        self._cam = camera

    @property
    def fps(self) -> float | None:  # type: ignore[override]
        return self._cam.fps

    def read(self) -> np.ndarray | None:
        frame = self._cam.read()
        if frame is None:
            return None
        return cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)

    def hold_exposure(self, held: bool) -> bool:
        return self._cam.hold_exposure(held)

    def close(self) -> None:
        self._cam.close()


class ReconnectingCamera(Camera):
    """Keeps a camera alive: on a failed read or open it closes, logs, and reopens later.

    Never blocks the caller for long: while waiting for the next attempt `read()` returns
    None after at most `poll_s`, so the kiosk loop keeps running with the door locked.
    The wait doubles after each failure from `backoff_initial` up to `backoff_max` and resets
    after a good frame.
    """

    def __init__(self, factory: Callable[[], Camera], backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, *, poll_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 logger: logging.Logger | None = None):
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self._factory = factory
        self.backoff_initial, self.backoff_max, self.poll_s = backoff_initial, backoff_max, poll_s
        self._clock, self._sleep = clock, sleep
        self._log = logger or log
        self._cam: Camera | None = None
        self._delay = backoff_initial
        self._next_try = clock()  # open on the first read
        self._closed = False
        self.attempts = 0       # how often the factory was called
        self.faults = 0         # failed opens and failed reads
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._cam is not None

    @property
    def fps(self) -> float | None:  # type: ignore[override]
        return self._cam.fps if self._cam is not None else None

    def _fault(self, what: str) -> None:
        self.faults += 1
        self.last_error = what
        self._next_try = self._clock() + self._delay
        self._log.warning("camera fault: %s; retrying in %.1f s", what, self._delay)
        self._delay = min(self._delay * 2, self.backoff_max)

    def _drop(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.close()
            except Exception as exc:
                self._log.debug("closing the failed camera raised: %s", exc)

    def read(self) -> np.ndarray | None:
        if self._closed:
            return None
        if self._cam is None:
            wait = self._next_try - self._clock()
            if wait > 0:
                self._sleep(min(wait, self.poll_s))
                return None
            self.attempts += 1
            try:
                self._cam = self._factory()
            except Exception as exc:
                self._fault(f"open failed: {exc}")
                return None
            if self.faults:
                self._log.info("camera reopened after %d fault(s)", self.faults)
        try:
            frame = self._cam.read()
        except Exception as exc:
            frame, why = None, f"read raised: {exc}"
        else:
            why = "read returned no frame"
        if frame is None:
            self._drop()
            self._fault(why)
            return None
        self._delay = self.backoff_initial
        return frame

    def hold_exposure(self, held: bool) -> bool:
        return self._cam.hold_exposure(held) if self._cam is not None else False

    def close(self) -> None:
        self._closed = self.finished = True
        self._drop()
