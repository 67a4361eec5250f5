"""Frame sources: RGB order, end of file, looping, pacing, reconnects, missing hardware."""

import logging
import sys
import types

import cv2
import numpy as np
import pytest

from edge.vision import camera
from edge.vision.camera import (Camera, PiCamera, ReconnectingCamera, USBCamera, VideoFileCamera,
                         open_camera)
from edge.errors import DoorlockError
from edge.testing import FakeClock, FramesCamera

W, H = 64, 48


def write_video(path, frames_bgr, fps=10.0):
    """A small MJPG .avi (codec built into every OpenCV) from BGR frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for f in frames_bgr:
        writer.write(f)
    writer.release()
    return path


def gray(level):
    return np.full((H, W, 3), level, np.uint8)


@pytest.fixture
def ramp(tmp_path):
    """10 frames, frame i is gray level 20*i (so a frame's index can be read back)."""
    return write_video(tmp_path / "ramp.avi", [gray(20 * i) for i in range(10)])


def index_of(frame):
    return int(round(frame.mean() / 20))


def test_rgb_order(tmp_path):
    bgr_red = np.zeros((H, W, 3), np.uint8)
    bgr_red[:] = (0, 0, 255)  # pure red in OpenCV's BGR
    path = write_video(tmp_path / "red.avi", [bgr_red] * 3)
    with VideoFileCamera(path) as cam:
        frame = cam.read()
    assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
    r, g, b = frame.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40


def test_end_of_file_and_count(ramp):
    cam = VideoFileCamera(ramp)
    assert cam.fps == pytest.approx(10.0) and not cam.finished
    frames = list(cam)
    assert cam.finished  # the kiosk loop stops on this, not on a single None
    assert [index_of(f) for f in frames] == list(range(10))
    assert cam.read() is None  # stays at the end
    cam.close()
    assert cam.read() is None


def test_loop(ramp):
    with VideoFileCamera(ramp, loop=True) as cam:
        got = [index_of(cam.read()) for _ in range(25)]
        assert not cam.finished
    assert got == [i % 10 for i in range(25)]


def test_realtime_paces_and_drops_late_frames(ramp):
    t = FakeClock(100.0)
    cam = VideoFileCamera(ramp, realtime=True, clock=t, sleep=t.skip)
    assert index_of(cam.read()) == 0 and t.skipped == []
    assert index_of(cam.read()) == 1 and t.skipped == [pytest.approx(0.1)]  # early: waits
    t.advance(0.25)  # the caller was slow: now at 0.35 s, frame 3 is on screen
    assert index_of(cam.read()) == 3 and len(t.skipped) == 1
    cam.close()


def test_real_video(shared):
    path = shared("data", "video", "short_hamilton_clip.mp4")
    with VideoFileCamera(path) as cam:
        assert cam.fps == pytest.approx(29.97, abs=0.01)
        n = 0
        for frame in cam:
            assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
            n += 1
    assert n == 275
    # RGB is OpenCV's BGR reversed
    cap = cv2.VideoCapture(str(path))
    _, bgr = cap.read()
    cap.release()
    with VideoFileCamera(path) as cam:
        np.testing.assert_array_equal(cam.read(), bgr[..., ::-1])


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DoorlockError, match="video file not found"):
        VideoFileCamera(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(DoorlockError, match="cannot read video file") as err:
        VideoFileCamera(junk)
    assert "\n" not in str(err.value)


def test_open_camera_specs(ramp, monkeypatch):
    cam = open_camera(str(ramp), loop=True)
    assert isinstance(cam, VideoFileCamera) and cam.loop
    cam.close()
    opened = []
    monkeypatch.setattr(camera, "USBCamera", lambda dev, w, h, fps: opened.append((dev, w, h, fps)))
    open_camera("usb:2", width=320, height=240, fps=15)
    open_camera("/dev/video1")
    assert opened == [(2, 320, 240, 15), ("/dev/video1", 640, 480, None)]
    for bad in ("", "usb:x"):
        with pytest.raises(DoorlockError):
            open_camera(bad)


class FakeCapture:
    """cv2.VideoCapture as USBCamera uses it: device 9 is absent; `preset` are the driver's values."""

    preset: dict = {}

    def __init__(self, dev):
        self.dev, self.props, self.released = dev, dict(self.preset), False

    def isOpened(self):
        return self.dev != 9

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0)

    def read(self):
        return True, np.dstack([np.zeros((4, 4)), np.ones((4, 4)), np.full((4, 4), 2)]).astype(np.uint8)

    def release(self):
        self.released = True


def test_usb_camera_settings_and_missing_device(monkeypatch):
    monkeypatch.setattr(camera.cv2, "VideoCapture", FakeCapture)
    cam = USBCamera(0, 320, 240, 15)
    assert cam._cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 320
    assert cam._cap.props[cv2.CAP_PROP_FRAME_HEIGHT] == 240
    assert cam.fps == 15
    assert cam.read()[0, 0].tolist() == [2, 1, 0]  # BGR -> RGB
    cam.close()
    assert cam._cap.released
    with pytest.raises(DoorlockError, match="cannot open USB camera 9"):
        USBCamera(9)


def test_usb_camera_absent_for_real():
    with pytest.raises(DoorlockError, match="cannot open USB camera"):
        USBCamera("/dev/video-doorlock-test-absent")


def test_picamera_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails, as on a laptop
    with pytest.raises(DoorlockError, match="only on a Raspberry Pi") as err:
        open_camera("picamera")
    assert "\n" not in str(err.value)


def test_picamera_with_fake_module(monkeypatch):
    calls = []

    class FakePicamera2:
        def create_video_configuration(self, main, controls):
            calls.append(("config", main, controls))
            return "cfg"

        def configure(self, cfg):
            calls.append(("configure", cfg))

        def start(self):
            calls.append("start")

        def capture_array(self, name):
            bgr = np.zeros((2, 2, 3), np.uint8)
            bgr[..., 0] = 7  # libcamera "RGB888" is B,G,R in memory
            return bgr

        def stop(self):
            calls.append("stop")

        def close(self):
            calls.append("close")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with PiCamera(320, 240, fps=20) as cam:
        frame = cam.read()
    assert frame[0, 0].tolist() == [0, 0, 7] and frame.flags.c_contiguous
    assert calls[0] == ("config", {"size": (320, 240), "format": "RGB888"}, {"FrameRate": 20.0})
    assert calls[-2:] == ["stop", "close"]


def test_reconnecting_camera_backoff_and_recovery(caplog):
    ft = FakeClock()
    opens = []  # (time, outcome) of each attempt
    plan = ["fail", "fail", "fail", 2, 5]  # three failed opens, then cameras with 2 and 5 frames
    made = []

    def factory():
        what = plan.pop(0)
        opens.append((ft.now(), what))
        if what == "fail":
            raise DoorlockError("cannot open USB camera 0")
        made.append(FramesCamera(np.zeros((2, 2, 3), np.uint8), what))   # then reads fail
        return made[-1]

    cam = ReconnectingCamera(factory, backoff_initial=0.5, backoff_max=1.5,
                             clock=ft, sleep=ft.skip, poll_s=0.1)
    frames = []
    with caplog.at_level(logging.WARNING, logger="edge.vision.camera"):
        for _ in range(200):
            frames.append(cam.read())
            if len(opens) == 5 and frames[-1] is None and made[-1].remaining == 0:
                break
    # open times: 0, +0.5, +1.0, +1.5 (capped), then after the read failure +0.5 (reset)
    times = [t for t, _ in opens]
    gaps = np.diff(times)
    np.testing.assert_allclose(gaps, [0.5, 1.0, 1.5, 0.5], atol=1e-9)
    assert cam.attempts == 5
    assert sum(f is not None for f in frames) == 7
    assert made[0].closed  # the failed camera was closed before reopening
    assert max(ft.skipped) <= 0.1 + 1e-12  # never blocks the caller for long
    assert cam.faults == 5 and "no frame" in cam.last_error
    assert sum("camera fault" in r.message for r in caplog.records) == 5
    cam.close()
    assert made[1].closed and cam.read() is None and not cam.connected


def test_reconnecting_camera_read_exception():
    ft = FakeClock()

    class Boom(Camera):
        def read(self):
            raise RuntimeError("usb disconnect")

    cam = ReconnectingCamera(Boom, clock=ft, sleep=ft.skip)
    assert cam.read() is None
    assert "usb disconnect" in cam.last_error and not cam.connected
    assert cam.read() is None and ft.skipped == [0.1]


def test_each_camera_holds_exposure_and_white_balance_for_the_light_challenge(monkeypatch, tmp_path):
    """picamera2: AE and AWB off (libcamera keeps their last values) and on again; V4L2: manual
    exposure at the value auto chose, and back to auto; a video file has nothing to hold."""
    sets = []

    class FakePicamera2:
        def create_video_configuration(self, main, controls):
            return "cfg"

        def configure(self, cfg):
            pass

        def start(self):
            pass

        def set_controls(self, controls):
            sets.append(controls)

        def stop(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with PiCamera(320, 240) as cam:
        assert cam.hold_exposure(True) and cam.hold_exposure(False)
    assert sets == [{"AeEnable": False, "AwbEnable": False}, {"AeEnable": True, "AwbEnable": True}]
    assert not cam.hold_exposure(True)                      # closed: nothing to hold

    monkeypatch.setattr(FakeCapture, "preset", {cv2.CAP_PROP_EXPOSURE: 156.0, cv2.CAP_PROP_WB_TEMPERATURE: 4600.0})
    monkeypatch.setattr(camera.cv2, "VideoCapture", FakeCapture)
    usb = USBCamera(0)
    assert usb.hold_exposure(True)
    p = usb._cap.props
    assert (p[cv2.CAP_PROP_AUTO_EXPOSURE], p[cv2.CAP_PROP_EXPOSURE], p[cv2.CAP_PROP_AUTO_WB],
            p[cv2.CAP_PROP_WB_TEMPERATURE]) == (1, 156.0, 0, 4600.0)
    assert usb.hold_exposure(False) and (p[cv2.CAP_PROP_AUTO_EXPOSURE], p[cv2.CAP_PROP_AUTO_WB]) == (3, 1)

    class OldMapping(FakeCapture):                          # backends that want 0.25 / 0.75
        def set(self, prop, value):
            return False if prop == cv2.CAP_PROP_AUTO_EXPOSURE and value in (1, 3) else super().set(prop, value)

    monkeypatch.setattr(camera.cv2, "VideoCapture", OldMapping)
    old = USBCamera(0)
    assert old.hold_exposure(True) and old._cap.props[cv2.CAP_PROP_AUTO_EXPOSURE] == 0.25
    assert old.hold_exposure(False) and old._cap.props[cv2.CAP_PROP_AUTO_EXPOSURE] == 0.75
    monkeypatch.setattr(camera.cv2, "VideoCapture", FakeCapture)
    wrapped = ReconnectingCamera(lambda: USBCamera(0))
    assert not wrapped.hold_exposure(True)                  # not open yet
    assert wrapped.read() is not None and wrapped.hold_exposure(True)
    assert VideoFileCamera.hold_exposure(object.__new__(VideoFileCamera), True) is False
