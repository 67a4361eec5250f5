"""camera.spectrum = "nir" (issue 18, item 6): a near-infrared camera's frames reach the
kiosk grey, the light challenge stays off, and a texture PAD that knows only colour
pictures is refused with a one-line error."""

import numpy as np
import pytest

from edge.app import make_liveness_gates, open_source
from edge.config import config_from_dict
from edge.errors import DoorlockError
from edge.testing.camera import FramesCamera
from edge.vision.camera import Camera, GreyCamera


class _HoldingCamera(FramesCamera):
    def __init__(self, frames):
        super().__init__(frames)
        self.fps, self.held, self.closed = 30.0, [], False

    def hold_exposure(self, held: bool) -> bool:
        self.held.append(held)
        return True

    def close(self) -> None:
        self.closed = True
        super().close()


def test_an_infrared_cameras_frames_are_grey_in_every_channel():
    rng = np.random.default_rng(3)
    tinted = rng.integers(0, 256, (48, 64, 3), np.uint8)
    tinted[..., 0] = np.minimum(255, tinted[..., 0].astype(int) + 80)   # the NoIR pink cast
    inner = _HoldingCamera([tinted])
    cam = GreyCamera(inner)
    frame = cam.read()
    assert frame.shape == tinted.shape and frame.dtype == np.uint8
    assert (frame[..., 0] == frame[..., 1]).all() and (frame[..., 1] == frame[..., 2]).all()
    luma = tinted @ np.array([0.299, 0.587, 0.114])
    assert np.abs(frame[..., 0].astype(float) - luma).max() <= 1.0
    assert cam.read() is None                           # the camera's end passes through
    assert cam.fps == 30.0 and cam.hold_exposure(True) and inner.held == [True]
    cam.close()
    assert inner.closed


def test_a_video_file_plays_as_recorded_and_visible_is_the_default(tmp_path):
    nir = config_from_dict({"camera": {"spectrum": "nir"}})
    import cv2

    clip = tmp_path / "clip.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    for _ in range(3):
        out.write(np.full((48, 64, 3), (40, 90, 200), np.uint8))
    out.release()
    cam = open_source(str(clip), nir)
    frame = cam.read()
    assert not isinstance(cam, GreyCamera) and int(frame[..., 2].mean()) < int(frame[..., 0].mean()) - 50
    cam.close()
    assert config_from_dict({}).camera.spectrum == "visible"


def test_the_factory_of_an_infrared_camera_makes_grey_cameras(monkeypatch):
    import edge.app as app

    made = []

    class Fake(Camera):
        def read(self):
            return np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(app, "open_camera", lambda *a, **k: made.append(a) or Fake())
    cam = open_source("usb:0", config_from_dict({"camera": {"spectrum": "nir"}}))
    assert cam.read() is not None and isinstance(cam._cam, GreyCamera) and made == [("usb:0",)]
    cam = open_source("usb:0", config_from_dict({}))
    assert cam.read() is not None and not isinstance(cam._cam, GreyCamera)


def test_an_infrared_camera_turns_the_light_challenge_off():
    screen = object()   # the challenge is made, not run
    (visible,) = make_liveness_gates(config_from_dict({"liveness": {"challenge": "auto"}}), screen)
    assert visible.challenge is not None
    (nir,) = make_liveness_gates(config_from_dict({"liveness": {"challenge": "auto"},
                                                   "camera": {"spectrum": "nir"}}), screen)
    assert nir.challenge is None


def test_the_texture_pad_with_an_infrared_camera_is_one_clear_error():
    with pytest.raises(DoorlockError) as e:
        config_from_dict({"camera": {"spectrum": "nir"}, "liveness": {"pad": "minifasnet"}})
    assert "liveness.pad" in str(e.value) and "camera.spectrum" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DoorlockError, match="spectrum"):
        config_from_dict({"camera": {"spectrum": "ir"}})
