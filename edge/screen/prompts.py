"""The kiosk screen's prompts: the states, the one Prompt of each, and the Prompter that
picks what to show from the kiosk's decisions and the door's status.

It never picks a score, and the only name it ever shows is the one just granted: a
not-recognised face's best guess is an enrolled person's name, and that stays unsaid.
Kept apart from drawing so the rules can be tested (and changed) without pygame.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from edge.kiosk.gates import waiting_for

log = logging.getLogger(__name__)

LOOK, HOLD, WELCOME, NOT_RECOGNISED = "look", "hold", "welcome", "not_recognised"
MOVE = "move"
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
    MOVE: Prompt("Turn your head slightly", (0, 112, 150), 1, False),
    NOT_RECOGNISED: Prompt("Not recognised", (178, 34, 34), 2, True),
    OUTSIDE_HOURS: Prompt("Outside your access hours", (120, 58, 160), 3, True),
    WELCOME: Prompt("Welcome, {name}", (22, 140, 64), 4, True),
    CAMERA_FAULT: Prompt("Camera fault, door locked", (96, 96, 96), 5, True),
    DOOR_FAULT: Prompt("Door fault, door locked", (120, 72, 40), 6, False),
    LOCKED_OUT: Prompt("Locked out, try later", (140, 0, 70), 7, True),
}
TEXT_COLOUR = (255, 255, 255)
ASK_HOLD_S = 1.0        # what liveness asks of the person changes at most this often


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
        self._asked: Shown | None = None

    def _state_of(self, decision, now: float) -> Shown:
        asked, self._asked = self._asked, None
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
        ask = waiting_for(reason)
        if ask is not None:
            # recognised; liveness waits for the person: ask, do not refuse. A request stays
            # ASK_HOLD_S: a head turning from "no sign of life" to "no face mesh" and back
            # must not switch the text every frame
            if asked is None or asked.until <= now:
                asked = Shown(ask, PROMPTS[ask].text, now + ASK_HOLD_S)
            self._asked = asked
            return asked
        self._denied += 1       # denied, or refused by another gate (e.g. liveness)
        return shown(NOT_RECOGNISED if self._denied >= self.attempt_frames else HOLD)

    def update(self, frame_present: bool, decision, now: float | None = None) -> Shown:
        """Take one kiosk frame; returns the prompt to show now."""
        now = self.clock() if now is None else now
        with self._mutex:
            if frame_present:
                self._last_frame = now
            if frame_present or decision is not None:
                s = self._state_of(decision, now)
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
