"""What the kiosk loop talks to, and what it concludes: the parts' Protocols, the Gate
base class and the Decision of one frame.

Kept apart from the loop so the door, the gates and the tests can name these without
importing OpenCV or the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


class Event(StrEnum):
    """A frame's decision, as the audit log, MQTT and the screen spell it."""

    GRANTED = "granted"   # the relay was pulsed for this identity
    PENDING = "pending"   # recognised, not yet for enough frames in a row
    OPEN = "open"         # recognised while the door is already open
    DENIED = "denied"     # nobody enrolled matched
    REFUSED = "refused"   # recognised, but a gate refused (reason says which and why)
    FAULT = "fault"       # a stage failed; the relay was locked


# Refusals by which the liveness gate waits for the person rather than refuses them, and
# what the person is asked: the screen shows that (not "Not recognised"), the door does not
# sound a refusal for them (the attempt still counts towards a lockout)
WAITING = (
    ("liveness: light challenge running", "hold"),       # the screen is flashing its colours
    ("liveness: looking for a screen's frame", "hold"),
    ("liveness: no sign of life yet", "move"),           # a head turn or a blink proves life
    ("liveness: no face mesh", "look"),                  # in profile or blurred: face the camera
)


def waiting_for(reason: str | None) -> str | None:
    """What a refusal asks of the person ("hold", "move" or "look"), or None for a refusal."""
    for prefix, ask in WAITING:
        if (reason or "").startswith(prefix):
            return ask
    return None


class Strike(Protocol):
    """The door's relay (edge.door.relay.DoorRelay, or any fail-secure stand-in)."""

    @property
    def is_open(self) -> bool: ...

    def pulse(self, seconds: float | None = None) -> float:
        """Open for `seconds` (the configured pulse when None); the time actually granted."""
        ...

    def lock(self) -> None: ...


class Detector(Protocol):
    """Faces in a frame, largest first; `refine` adds landmarks to one of them."""

    def detect(self, frame: np.ndarray) -> Sequence[Any]: ...

    def refine(self, frame: np.ndarray, face: Any) -> None: ...


class Embedder(Protocol):
    """FeatureNet: an aligned chip of `size` to a feature vector."""

    size: tuple[int, int]

    def embed(self, chip: np.ndarray) -> np.ndarray: ...

    def embed_with_mirror(self, chip: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class Matcher(Protocol):
    """1:N matching of a feature (and its mirror) against the gallery."""

    def match(self, feature: np.ndarray, flip: np.ndarray | None, keypoints: bool) -> Any: ...


@runtime_checkable
class TimedGate(Protocol):
    """A gate that adds up its own work (edge.kiosk.liveness.LivenessGate), for the bench's
    stage rows: seconds and calls of `observe`, and its texture PAD's and screen-edge
    cue's (each None when off)."""

    observe_s: float
    observed: int
    pad: Any
    screen_edge: Any


class Gate:
    """A check between recognition and the unlock. Subclass and override what you need."""

    name = "gate"

    def observe(self, frame: np.ndarray, face, frame_no: int) -> None:
        """Called for every frame with a judged face (before matching)."""

    def refuse(self, identity: str, frame_no: int) -> str | None:
        """A reason to refuse this recognised identity now, or None to allow."""
        return None

    def reset(self) -> None:
        """Called when the face leaves (a frame without a face) or after a fault."""


@dataclass
class Decision:
    """What the kiosk concluded from one frame with a face in it."""

    event: Event
    identity: str | None       # accepted identity, else None ("unknown")
    best: str | None           # best-scoring identity, accepted or not
    score: float | None        # z (ModelNet) or distance
    streak: int                # consecutive accepted frames of this identity
    latency_ms: float
    frame: int
    error: str | None = None
    reason: str | None = None  # why a recognised identity was refused (gate name: reason)

    def record(self) -> dict:
        return {"event": str(self.event), "identity": self.identity, "z": self.score,
                "latency_ms": round(self.latency_ms, 2), "frame": self.frame, "best": self.best,
                "streak": self.streak, **({"error": self.error} if self.error else {}),
                **({"reason": self.reason} if self.reason else {})}
