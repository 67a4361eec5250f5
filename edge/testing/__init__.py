"""Test doubles, shipped as gpiozero ships MockFactory: the kiosk, the relay, the door and
the screen run without models, hardware, systemd or sleeping on the wall clock.

    clock = FakeClock()
    relay = DoorRelay(17, pin_factory=MockFactory(), clock=clock, timer=clock.timer)
    kiosk = Kiosk(FramesCamera(frame, 3), ScriptedDetector([face_at(10, 10, 90, 90)] * 3),
                  ScriptedEmbedder(), ScriptedMatcher(["ada"] * 3), relay)

FramesCamera is made on first use: it is an edge.vision.camera.Camera, which needs OpenCV.
"""

from __future__ import annotations

from edge.testing.clock import FakeClock, FakeTimer
from edge.testing.scripted import (ScriptExhausted, ScriptedDetector, ScriptedEmbedder,
                                   ScriptedMatcher, face_at)
from edge.testing.systemd import FakeSystemd

__all__ = ["FakeClock", "FakeSystemd", "FakeTimer", "FramesCamera", "ScriptExhausted",
           "ScriptedDetector", "ScriptedEmbedder", "ScriptedMatcher", "face_at"]


def __getattr__(name: str):
    if name == "FramesCamera":
        from edge.testing.camera import FramesCamera

        globals()["FramesCamera"] = FramesCamera
        return FramesCamera
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
