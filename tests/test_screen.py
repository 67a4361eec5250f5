"""The kiosk screen: every state rendered (renderer state and prompt-area pixels), the
prompt logic, privacy, mirroring, the renderer thread's own rate (on fake time), the
pygame and file displays, and the demo's video of what the lock saw."""

import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import cv2
import numpy as np
import pytest

from edge.config import config_from_dict
from edge.door.door import DoorStatus
from edge.screen import displays
from edge.screen.displays import Display, PygameDisplay, VideoDisplay
from edge.screen.prompts import (CAMERA_FAULT, DOOR_FAULT, HOLD, LOCKED_OUT, LOOK, MOVE, NOT_RECOGNISED,
                                 OUTSIDE_HOURS, PROMPTS, WELCOME, Prompter, shown)
from edge.screen.render import Renderer, render_cost_ms
from edge.screen.screen import Screen, open_screen
from edge.testing import FakeClock

REPO = Path(__file__).resolve().parents[1]
TEXTS = {LOOK: "Look at the camera", HOLD: "Hold still", MOVE: "Turn your head slightly",
         WELCOME: "Welcome, Ada Lovelace",
         NOT_RECOGNISED: "Not recognised", OUTSIDE_HOURS: "Outside your access hours",
         CAMERA_FAULT: "Camera fault, door locked", DOOR_FAULT: "Door fault, door locked",
         LOCKED_OUT: "Locked out, try later"}


@dataclass
class D:
    event: str
    identity: str | None = None
    reason: str | None = None
    best: str | None = None
    score: float | None = None


class Face:
    def __init__(self, box):
        self.box = box


def camera_frame(w=640, h=480):
    """A grey frame with a red block on the left and a face-sized box's worth of skin."""
    f = np.full((h, w, 3), 90, np.uint8)
    f[100:200, 20:120] = (220, 30, 30)
    return f


def white_pixels(img, rect):
    x, y, w, h = rect
    area = img[y:y + h, x:x + w].astype(int)
    return (area.min(axis=2) > 200)


@pytest.fixture(scope="module")
def renderer():
    return Renderer(800, 480)


@pytest.mark.parametrize("state", list(PROMPTS))
def test_each_state_is_rendered(renderer, state):
    face = Face((300, 150, 420, 290))
    frame = None if state == CAMERA_FAULT else camera_frame()
    img = renderer.render(frame, face, shown(state, "Ada Lovelace"))
    assert img.shape == (480, 800, 3) and img.dtype == np.uint8
    assert renderer.state == state and renderer.texts == [TEXTS[state]]
    x, y, w, h = renderer.prompt_rect
    assert (x, y + h, w) == (0, 480, 800) and h >= 40
    colour = PROMPTS[state].colour
    bar = img[y:y + h, x:x + w]
    for px in (bar[2, 2], bar[-3, -3], bar[2, -3], bar[h // 2, 5]):   # the bar's colour ...
        assert tuple(px) == colour
    text = white_pixels(img, renderer.prompt_rect)                      # ... and white text on it
    assert text.sum() > 150
    ys, xs = np.nonzero(text)
    assert abs((xs.min() + xs.max()) / 2 - w / 2) < 6                   # centred
    assert abs((ys.min() + ys.max()) / 2 - h / 2) < 6
    # nothing else in the bar: every pixel is the bar colour blended with white text
    c = np.array(colour, float)
    alpha = (bar.astype(float) - c) / (255.0 - c)
    assert alpha.min() > -0.02 and alpha.max() < 1.02
    assert (alpha.max(axis=2) - alpha.min(axis=2)).max() < 0.05
    # ... and that text is exactly this prompt: the bar is the text's coverage (alpha)
    # blended from the bar colour to white, pixel for pixel
    pg = renderer.pg
    alone = renderer._text(TEXTS[state])
    where = alone.get_rect(center=renderer.prompt_rect.center).move(0, -y)
    expected = np.zeros((h, w))
    expected[where.top:where.bottom, where.left:where.right] = pg.surfarray.array_alpha(alone).T / 255
    assert np.abs(alpha.mean(axis=2) - expected).max() < 0.03
    if frame is None:
        assert img[:y].max() == 0                                       # no picture: black
    else:
        assert img[:y].max() > 0


def test_states_differ_in_the_prompt_area(renderer):
    seen = set()
    for state in PROMPTS:
        img = renderer.render(camera_frame(), None, shown(state, "Ada Lovelace"))
        x, y, w, h = renderer.prompt_rect
        seen.add(img[y:y + h].tobytes())
    assert len(seen) == len(PROMPTS)


def test_preview_is_mirrored_with_the_face_box(renderer):
    frame = camera_frame()
    face = Face((20, 100, 120, 200))                # around the red block, on the frame's left
    img = renderer.render(frame, face, shown(HOLD))
    pr = renderer.preview_rect
    scale = min(pr.width / 640, pr.height / 480)
    x0 = (pr.width - round(640 * scale)) // 2
    red = (img[:, :, 0] > 180) & (img[:, :, 1] < 80) & (img[:, :, 2] < 80)
    ys, xs = np.nonzero(red[:pr.height])
    assert xs.min() > x0 + round(640 * scale) / 2   # drawn on the right: mirrored
    box = renderer.face_rect
    assert box.left == pytest.approx(x0 + (640 - 120) * scale, abs=2)
    assert box.width == pytest.approx(100 * scale, abs=2)
    assert tuple(img[box.top, box.centerx]) == PROMPTS[HOLD].colour     # the box in the state colour
    r2 = Renderer(800, 480, mirror=False)
    img2 = r2.render(frame, face, shown(HOLD))
    red2 = (img2[:, :, 0] > 180) & (img2[:, :, 1] < 80) & (img2[:, :, 2] < 80)
    assert np.nonzero(red2[:pr.height])[1].max() < x0 + round(640 * scale) / 2


def test_never_shows_a_score_or_another_name(renderer):
    """A stranger's best guess is an enrolled name: the screen must not depend on it."""
    p1, p2 = Prompter(attempt_frames=1), Prompter(attempt_frames=1)
    a = p1.update(True, D("denied", None, best="Ada Lovelace", score=0.4213), now=0.0)
    b = p2.update(True, D("denied", None, best="Charles Babbage", score=7.5), now=0.0)
    assert a == b and a.state == NOT_RECOGNISED
    img_a = renderer.render(camera_frame(), Face((300, 150, 420, 290)), a)
    texts = list(renderer.texts)
    img_b = renderer.render(camera_frame(), Face((300, 150, 420, 290)), b)
    assert np.array_equal(img_a, img_b)
    assert not any("Ada" in t or "Babbage" in t or re.search(r"\d", t) for t in texts)
    # refused by the hours gate: the person is recognised, but not greeted by name
    r = Prompter().update(True, D("refused", None, reason="hours: outside access hours (Mon 08:00-09:00)",
                                  best="Ada Lovelace", score=0.1), now=0.0)
    assert r.text == "Outside your access hours"
    # only the granted identity is named
    g = Prompter().update(True, D("granted", "Ada Lovelace", best="Ada Lovelace", score=0.1), now=0.0)
    assert g.text == "Welcome, Ada Lovelace"


def test_prompt_logic():
    status = {"s": None}
    p = Prompter(hold_s=3.0, attempt_frames=3, status=lambda: status["s"], camera_fault_s=1.0)
    assert p.update(True, None, 0.0).state == LOOK
    assert p.update(True, D("pending"), 0.1).state == HOLD
    assert p.update(True, D("granted", "Ada"), 0.2).text == "Welcome, Ada"
    assert p.update(True, D("open", "Ada"), 0.3).state == WELCOME
    assert p.update(True, None, 0.4).state == WELCOME            # held after the face left ...
    assert p.update(True, None, 3.2).state == WELCOME
    assert p.update(True, None, 3.4).state == LOOK               # ... for hold_s
    # not recognised only after attempt_frames refused frames in a row
    assert [p.update(True, D("denied"), 4 + i / 10).state for i in range(4)] == [HOLD, HOLD, NOT_RECOGNISED, NOT_RECOGNISED]
    assert p.update(True, D("granted", "Bob"), 4.5).text == "Welcome, Bob"   # a grant wins at once
    assert p.update(True, D("refused", reason="hours: outside access hours (x)"), 8.0).state == OUTSIDE_HOURS
    assert p.update(True, D("refused", reason="door: locked out after 5 refused attempts (9 s left)"), 12.0).state == LOCKED_OUT
    assert p.update(True, D("refused", reason="door: input fault: door contact: x"), 16.0).state == DOOR_FAULT
    assert p.update(True, D("refused", reason="liveness: no motion"), 20.0).state == HOLD
    assert p.update(True, D("fault"), 24.0).state == CAMERA_FAULT
    assert p.update(True, None, 25.0).state == CAMERA_FAULT      # held
    assert p.update(True, None, 27.1).state == LOOK
    assert p.update(False, None, 27.5).state == LOOK             # one missing frame: fine
    assert p.current(28.2).state == CAMERA_FAULT                 # no frame for > 1 s
    assert p.update(True, None, 28.3).state == LOOK
    status["s"] = DoorStatus(True, 100.0, {}, None, "lockout")
    assert p.update(True, None, 29.0).state == LOCKED_OUT       # the door's lockout, face or not
    status["s"] = DoorStatus(False, 0.0, {"door contact": "cannot read"}, None, None)
    assert p.current(29.1).state == DOOR_FAULT
    status["s"] = None
    assert p.current(29.2).state == LOOK


def test_a_recognised_person_liveness_waits_for_is_asked_not_refused():
    """Liveness waiting for a still face asks for a head turn, for a face in profile asks to
    look at the camera, holds during the light challenge: never "Not recognised", however
    long (each request held a second: ASK_HOLD_S). A refusal of what liveness saw (a photo's
    texture) is "Not recognised" as before."""
    p = Prompter(hold_s=3.0, attempt_frames=3)
    waits = ["liveness: no sign of life yet: 1 of the last 15 frames moved unlike a flat picture",
             "liveness: no face mesh (face not frontal or clear enough to check for life)",
             "liveness: light challenge running: hold still (3 of 12)",
             "liveness: looking for a screen's frame around the face (1 of 3 frames)"]
    states = [p.update(True, D("refused", "Ada", reason=w), i * 1.1) for i, w in enumerate(waits * 5)]
    assert [s.state for s in states[:4]] == [MOVE, LOOK, HOLD, HOLD]
    assert states[0].text == "Turn your head slightly" and NOT_RECOGNISED not in {s.state for s in states}
    refused = [p.update(True, D("refused", "Ada", reason="liveness: texture looks like a photo or a screen: x"),
                        30 + i / 10).state for i in range(3)]
    assert refused == [HOLD, HOLD, NOT_RECOGNISED]


def test_what_liveness_asks_does_not_switch_every_frame():
    """A head turning makes the gate's reason switch between "no sign of life" and "no face
    mesh" from frame to frame; the screen's request changes at most once a second, and a
    grant still shows at once."""
    p = Prompter(hold_s=3.0, attempt_frames=3)
    move = D("refused", "Ada", reason="liveness: no sign of life yet: 0 of the last 15 frames")
    look = D("refused", "Ada", reason="liveness: no face mesh (face not frontal or clear enough)")
    texts = [p.update(True, (move, look)[i % 2], i / 15).text for i in range(30)]   # 2 s at 15 frames/s
    changes = sum(a != b for a, b in zip(texts, texts[1:]))
    assert texts[0] == "Turn your head slightly" and 1 <= changes <= 2
    assert all(t == texts[0] for t in texts[:15])                 # the first second: one request
    assert p.update(True, D("granted", "Ada"), 2.05).text == "Welcome, Ada"


def test_the_waiting_prefixes_are_the_gates_own_reasons():
    """The screen and the door know the liveness gate's waiting reasons by their start; the
    gate must still say them so."""
    from edge.kiosk.gates import waiting_for
    from edge.kiosk.liveness import LivenessGate

    g = LivenessGate("normal", mesh=object())
    assert waiting_for("liveness: " + g.refuse("Ada", 1)) == "look"        # no mesh seen yet
    g._seen.append(type("S", (), {"points": np.zeros((468, 2)), "no": 1})())
    assert waiting_for("liveness: " + g.refuse("Ada", 1)) == "move"
    g.proven, g.pad = True, type("P", (), {"threshold": 0.9})()
    assert waiting_for("liveness: " + g.refuse("Ada", 1)) is None          # the texture refused
    assert waiting_for(None) is None and waiting_for("hours: outside") is None


def test_file_display_writes_every_frame(tmp_path):
    path = tmp_path / "screen.avi"
    s = Screen(VideoDisplay(path, 15, (320, 240)), 320, 240, every_frame=True)
    for i in range(25):
        s(camera_frame(), Face((300, 150, 420, 290)) if i % 2 else None,
          D("pending") if i % 2 else None)
        if i == 10:
            s(None, None, None)                  # no frame: nothing written for it
    s.close()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 25 == s.shown
    assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 320


class StuckDisplay(Display):
    """A screen stuck in show() until released."""

    def __init__(self):
        self.images, self.released = [], threading.Event()

    def show(self, image):
        self.released.wait(30)
        self.images.append(image)


def test_drawing_does_not_slow_recognition():
    """The listener only hands the frame over: 200 kiosk frames go by while the display
    is stuck; then the thread draws the newest frame at its own rate, fps images per
    (fake) second however fast frames come, and drops the rest."""
    clock = FakeClock()
    disp = StuckDisplay()
    s = Screen(disp, 320, 240, fps=10, clock=clock, wait=clock.wait)
    frame = camera_frame()
    feed = threading.Thread(target=lambda: [s(frame, None, D("pending")) for _ in range(200)])
    feed.start()
    feed.join(timeout=20)                        # a bound on failure only: it never waits
    assert not feed.is_alive() and disp.images == []   # all handed over, none shown yet
    disp.released.set()
    drawn = []
    for _ in range(10):                          # one second at 200 frames/s, in 0.1 s steps
        for _ in range(20):
            s(frame, None, D("pending"))
        assert clock.wait_for_sleepers(1)        # it drew and waits out its period
        drawn.append(len(disp.images))
        clock.advance(0.1)
    s.close()
    assert drawn == list(range(1, 11))           # one image per 1/fps, never more
    assert s.dropped >= 400 - 12 and s.ms_per_frame > 0


def test_pygame_display_with_sdl_dummy_driver(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    welcomed = threading.Event()     # the window showed the welcome (renderer thread)
    show = PygameDisplay.show

    def show_and_look(self, image):
        show(self, image)
        w, h = self.window.get_size()
        if tuple(self.window.get_at((3, h - 3)))[:3] == PROMPTS[WELCOME].colour:  # prompt bar
            welcomed.set()

    monkeypatch.setattr(PygameDisplay, "show", show_and_look)
    cfg = config_from_dict({"screen": {"mode": "pygame", "fullscreen": False, "width": 320,
                                       "height": 240, "driver": "dummy"}}).screen
    s = open_screen(cfg)
    assert s is not None and s.failed is None
    s(camera_frame(), None, D("granted", "Ada"))
    assert welcomed.wait(20)         # the thread signals it; 20 s only bounds a failure
    assert s.display.window.get_size() == (320, 240)
    s.close()
    assert s.shown >= 1 and s.display.window is None


def test_sdl_driver_choice(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(displays.platform, "system", lambda: "Linux")
    assert displays.sdl_driver("auto") == "kmsdrm"         # a Pi without a desktop
    monkeypatch.setenv("DISPLAY", ":0")
    assert displays.sdl_driver("auto") is None             # a desktop: SDL's own choice
    assert displays.sdl_driver("x11") == "x11"


def test_a_broken_screen_does_not_stop_anything(tmp_path):
    class Broken(Display):
        def open(self):
            raise RuntimeError("no display")

    s = Screen(Broken(), 320, 240)
    s(camera_frame(), None, None)                     # still fine to call
    s.close()
    assert s.failed == "no display"


def test_screen_config():
    cfg = config_from_dict({})
    assert cfg.screen.mode == "none" and open_screen(cfg.screen) is None
    from edge.errors import DoorlockError

    with pytest.raises(DoorlockError, match=r"screen\.mode must be one of 'none', 'pygame', 'file'"):
        config_from_dict({"screen": {"mode": "hdmi"}})


def test_render_cost_ms():
    ms = render_cost_ms(20)
    assert 0 < ms < 200


def test_readme_screenshots_exist():
    for state in PROMPTS:
        png = REPO / "docs" / f"screen-{state.replace('_', '-')}.png"
        assert png.is_file(), png
        img = cv2.imread(str(png))
        assert img is not None and img.shape[:2] == (480, 800)
        assert png.name in (REPO / "README.md").read_text()


def test_demo_writes_what_the_lock_saw():
    """The README's demo writes the kiosk screen to a video: one image per judged frame."""
    r = subprocess.run([sys.executable, "-m", "edge", "run", "--quiet"], capture_output=True,
                       text=True, cwd=REPO, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    frames = int(re.search(r"^summary: (\d+) frames", r.stdout, re.M).group(1))
    m = re.search(r"^demo: what the lock saw \(the kiosk screen, (\d+) frames\): (.+)$", r.stdout, re.M)
    assert m, r.stdout[-2000:]
    path = Path(m.group(2).strip())
    assert path.is_file() and int(m.group(1)) == frames
    cap = cv2.VideoCapture(str(path))
    colours = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        colours.append(bgr[-10, 10][::-1].astype(int))   # the prompt bar, bottom left (RGB)
    assert len(colours) == frames and frames > 60

    def near(c, state):
        return np.abs(c - PROMPTS[state].colour).max() < 30

    assert near(colours[0], LOOK)                        # the empty scene
    assert any(near(c, WELCOME) for c in colours)        # the astronaut let in
    assert near(colours[-1], LOOK) or near(colours[-1], WELCOME)
