"""Video replay attacks: live footage re-shown to the camera on a phone, a tablet or a monitor.

The screen is a plane posed as in edge/tools/attacks.py (hand-held, or standing still), with
a bezel and a thumb, its emitted picture (brightness, gamma, white point, viewing-angle
fall-off, LCD black level), its RGB pixel grid seen through the camera (sub-pixel moire:
lens, Bayer sampling and binning, evaluated where the grid's frequency aliases), the lamp's
glare and the room mirrored in its glass, the camera's distance defocus, noise and JPEG.
The video plays at its own rate while the camera samples it at 15 or 30 frames/s (frames
blend where the exposure straddles a change). Design notes: docs/liveness.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from edge.tools.attacks import FOCAL, SUPERSAMPLE, H, W, Camera, _room, trajectory

REPLAY_SPECIES = ("replay-phone", "replay-tablet", "replay-monitor", "replay-cropped")


@dataclass(frozen=True)
class Device:
    """A screen that replays the video: picture size (landscape, metres), bezel, pixel pitch,
    the face's height as a share of the picture's (the attacker's zoom; None: the whole video
    fitted), hand movement (0: standing), glossy glass or a matte front."""

    display: tuple[float, float]
    bezel: float
    pitch: float
    face_share: tuple[float, float] | None
    motion: float
    glossy: bool
    oled: bool = False


DEVICES = {
    "replay-phone": Device((0.142, 0.066), 0.004, 0.058e-3, (0.3, 0.6), 1.0, True, oled=True),
    "replay-tablet": Device((0.197, 0.148), 0.010, 0.096e-3, (0.25, 0.5), 0.5, True),
    "replay-monitor": Device((0.527, 0.296), 0.008, 0.274e-3, None, 0.0, False),
    # the video zoomed until the face fills the tablet, held so close that it fills the view
    "replay-cropped": Device((0.197, 0.148), 0.010, 0.096e-3, (0.45, 0.7), 0.3, True),
}


def _aperture(f: np.ndarray, m: float) -> np.ndarray:
    """The mean of m samples 1/m pixel apart, as a response to frequency f (cycles/pixel):
    sin(pi f) / (m sin(pi f / m)), +-1 where the denominator vanishes."""
    den = m * np.sin(np.pi * f / m)
    num = np.sin(np.pi * f)
    small = np.abs(den) < 1e-6
    return np.where(small, np.cos(np.pi * f) / np.cos(np.pi * f / m), num / np.where(small, 1.0, den))


def moire(qx: np.ndarray, qy: np.ndarray, pitch: float, k: int, sigma: float,
          where: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) gain of the display's pixel grid as the camera samples it.

    `qx`, `qy`: each output pixel's position on the screen (metres). The grid's fundamentals:
    the R, G, B sub-pixel stripes (duty 1/3, a third of a pixel apart: amplitude 1.65) across,
    the black matrix (duty 0.8: 0.47) down. Each is attenuated by the lens and defocus
    (Gaussian, `sigma` output pixels) at its true frequency and by a sensor pixel's aperture,
    then sampled on a Bayer mosaic with `k` x `k` sensor pixels per output pixel (each colour
    every second sensor pixel, binned): evaluating the cosine at the pixel's colour sample
    gives the aliased beat, the moire bands. Only computed inside `where` (non-zero)."""
    out = np.ones(qx.shape + (3,), np.float32)
    if where is not None:
        ys, xs = np.nonzero(where)
        if not len(ys):
            return out
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        out[sl] = moire(qx[sl], qy[sl], pitch, k, sigma)
        return out
    if min(qx.shape) < 2:
        return out
    offsets = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5))     # R, G, B sample sites, sensor pixels
    for grid, amp, sub in ((qx / pitch, 1.65, (0.0, 1 / 3, 2 / 3)), (qy / pitch, 0.47, (0.0, 0.0, 0.0))):
        fy, fx = np.gradient(grid)
        gain = amp * np.exp(-2 * np.pi ** 2 * sigma ** 2 * (fx ** 2 + fy ** 2))
        if gain.max() < 2e-3:
            continue
        gain = gain * np.sinc(fx / k) * np.sinc(fy / k) * _aperture(fx, k / 2) * _aperture(fy, k / 2)
        for c in range(3):
            ox, oy = offsets[c]
            phase = grid + (fx * ox + fy * oy) / k - sub[c]
            out[..., c] += (gain * np.cos(2 * np.pi * phase)).astype(np.float32)
    return np.clip(out, 0.0, None)


def _window(video_shape, face_box, dev: Device, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The part of the video the screen shows (the attacker's zoom on the face, or the whole
    video fitted): the 2x3 affine from video pixels to a unit-height picture, and the face's
    width on the picture in picture heights."""
    vh, vw = video_shape[:2]
    x0, y0, x1, y1 = (float(v) for v in face_box)
    aspect = dev.display[0] / dev.display[1]
    if dev.face_share is None:
        h = max(vh, vw / aspect)               # the whole video, letterboxed
        cx, cy = vw / 2, vh / 2
    else:
        h = (y1 - y0) / rng.uniform(*dev.face_share)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + rng.uniform(0.0, 0.15) * h * (dev.face_share[1] < 0.7)
        w = h * aspect
        # the attacker pans the zoomed video, so the window stays inside it where it can
        cx = float(np.clip(cx, w / 2, vw - w / 2)) if w <= vw else vw / 2
        cy = float(np.clip(cy, h / 2, vh - h / 2)) if h <= vh else vh / 2
    w = h * aspect
    m = np.array([[1 / h, 0, -(cx - w / 2) / h], [0, 1 / h, -(cy - h / 2) / h]])
    return m, (x1 - x0) / h


def replay_frames(video: list[np.ndarray], video_fps: float, face_box, species: str = "replay-phone",
                  seed: int = 0, fps: float = 15.0, n_frames: int | None = None,
                  flash=None) -> Iterator[np.ndarray]:
    """Yield RGB frames (H x W) of the RGB `video` frames replayed on a screen held up to the
    camera, the camera running at `fps`. `face_box`: the face in the video (x0, y0, x1, y1,
    video pixels; a typical box over the clip), which the attacker zooms to and aims at.
    `flash` (edge.tools.flash_clips.Flash): the kiosk's light challenge, reflected by the
    screen's front (diffusely, about 1 %) and by its glass where it mirrors the kiosk screen."""
    if species not in DEVICES:
        raise ValueError(f"unknown replay species {species!r} (use one of {', '.join(DEVICES)})")
    if not video:
        raise ValueError("no video frames to replay")
    dev = DEVICES[species]
    rng = np.random.default_rng(seed)
    to_pic, face_w = _window(video[0].shape, face_box, dev, rng)
    dw, dh = dev.display
    if species == "replay-cropped":
        z = FOCAL * dw / (rng.uniform(1.15, 1.4) * W)       # the picture spans more than the view
    else:
        z = float(np.clip(FOCAL * face_w * dh / rng.uniform(80, 200), 0.08, 1.2))
    # the face's place on the screen, so the attacker aims it at the camera
    fx, fy = (np.array([[(face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2, 1.0]]) @ to_pic.T)[0]
    aim = ((fx - dw / dh / 2) * dh, (fy - 0.5) * dh)
    duration = len(video) / video_fps
    t0 = rng.uniform(0, 1 / video_fps)                      # the camera's phase against the video
    expose = 0.5 / fps
    most = max(1, int(np.floor((duration - t0 - expose) * fps)))
    n = most if n_frames is None else min(int(n_frames), most)
    moving = "screen" if dev.motion else "still"
    poses = [dataclasses.replace(p, tx=p.tx - aim[0], ty=p.ty - aim[1])
             for p in trajectory(moving, n, rng, z, fps=fps, scale=dev.motion or 1.0)]
    if not dev.motion:
        poses = [dataclasses.replace(p, yaw=p.yaw * 1.5) for p in poses]   # set down at an angle
    room = _room(rng)
    t = np.arange(n) / fps

    # the screen: brightness, gamma, white point (a cool blue cast), black level; the room's lamp
    bright, gamma = rng.uniform(0.9, 1.2), rng.uniform(0.85, 1.1)
    cast = rng.uniform(-0.04, 0.1)
    white = np.array([1 - cast, 1.0, 1 + cast], np.float32)
    black = 0.0 if dev.oled else rng.uniform(0.005, 0.02)
    level = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6))
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), -1.0])
    light /= np.linalg.norm(light)
    glare_amp = rng.uniform(25, 90) if dev.glossy else rng.uniform(5, 15)
    spread = 0.15 if dev.glossy else 0.45
    mirror = rng.uniform(0.03, 0.06) if dev.glossy else 0.01
    mirrored = cv2.GaussianBlur(room[:, ::-1], (0, 0), 6.0)
    bezel_rgb = rng.uniform(5, 25)
    camera = Camera(rng, defocus=(0.0, 0.6))
    focus = 1.0 / rng.uniform(0.6, 1.5)                      # fixed focus: sharp beyond about 1 m
    near_blur = 0.2 * max(0.0, 1 / z - focus)              # pixels per dioptre nearer than focus
    defocus = float(np.hypot(camera.defocus, near_blur))
    k = int(rng.choice([2, 4]))
    lens = rng.uniform(0.25, 0.45) / k
    hand_rgb = np.array([rng.uniform(170, 230), rng.uniform(120, 170), rng.uniform(95, 140)])
    hand_side = rng.choice([-1, 1])
    if flash is not None:
        diffuse = rng.uniform(0.004, 0.012) if dev.glossy else rng.uniform(0.015, 0.04)
        specular, sharp = (0.04, 1.5) if dev.glossy else (0.01, 15.0)

    lut = (255 * ((np.arange(256) / 255) ** gamma * (1 - black) + black)).astype(np.float32)
    card_w, card_h = dw + 2 * dev.bezel, dh + 2 * dev.bezel
    for i, pose in enumerate(poses):
        ti = t0 + i / fps
        j = min(int(ti * video_fps), len(video) - 1)
        blend = float(np.clip((ti + expose - (j + 1) / video_fps) / expose, 0, 1)) if j + 1 < len(video) else 0.0
        shown = lut[video[j]]
        if blend > 0:
            shown = (1 - blend) * shown + blend * lut[video[j + 1]]
        layer, cover, on_glass, (qx, qy) = _render_screen(shown, to_pic, pose, (card_w, card_h), (dw, dh),
                                                          bezel_rgb)
        r, tr = pose.rotation(), np.array([pose.tx, pose.ty, pose.tz])
        facing = float(max(0.05, -r[:, 2] @ tr / np.linalg.norm(tr)))
        view = facing ** (0.2 if dev.oled else 0.3)           # viewing-angle fall-off
        grid = moire(qx, qy, dev.pitch, k, float(np.hypot(lens, defocus)), on_glass)
        emitted = layer * grid * (bright * view * white)
        emitted += 255 * (1 - facing) * 0.05 * (not dev.oled) * on_glass[..., None]   # washed-out blacks
        shade = float(level[i]) * (0.35 + 0.65 * max(0.2, float(-r[:, 2] @ light)))
        g = on_glass[..., None]
        lit = emitted * g + layer * shade * (1 - g)           # the picture glows; the bezel is lit
        # the lamp's glare and the room mirrored in the glass, moving with the tilt
        gx = -0.9 * pose.yaw / 30 * card_w / 2 + light[0] * card_w / 3
        gy = 0.9 * pose.pitch / 30 * card_h / 2 + light[1] * card_h / 3
        glare = float(glare_amp * level[i]) * np.exp(-(((qx - gx) / (spread * card_w)) ** 2
                                                       + ((qy - gy) / (spread * card_h)) ** 2))
        shift = np.float32([[1, 0, 8 * pose.yaw], [0, 1, -8 * pose.pitch]])
        refl = cv2.warpAffine(mirrored, shift, (W, H), borderMode=cv2.BORDER_REFLECT)
        lit += g * (glare[..., None] + mirror * float(level[i]) * refl)
        if dev.motion and species != "replay-cropped":
            hx, hy = hand_side * 0.45 * card_w, 0.4 * card_h
            thumb = (((qx - hx) / (0.1 * card_w)) ** 2 + ((qy - hy) / (0.14 * card_h)) ** 2) < 1
            lit[thumb & (cover > 0.5)] = hand_rgb * shade
        frame = room * float(level[i]) * (1 - cover[..., None]) + lit      # lit: premultiplied by cover
        if flash is not None:
            frame = flash.on_plane(frame, i, cover, r, tr, None, diffuse, specular, sharp)
        yield camera.expose(frame, np.array([pose.tx, pose.ty]) / pose.tz * FOCAL, extra_blur=near_blur)



_GRID: dict = {}


def _render_screen(shown: np.ndarray, to_pic: np.ndarray, pose, card: tuple, pic: tuple, bezel_rgb: float):
    """The screen in the camera: the part of the video frame `shown` that `to_pic` maps onto the
    picture (unit height) inside the bezel; the picture is rendered at SUPERSAMPLE x SUPERSAMPLE
    samples per pixel and averaged. Returns the layer, its coverage, the share of each pixel on
    the glass, and each pixel's position on the screen (metres)."""
    ss = SUPERSAMPLE
    dw, dh = pic
    r = pose.rotation()
    plane = np.column_stack([r[:, 0], r[:, 1], [pose.tx, pose.ty, pose.tz]])
    k1 = np.array([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]])
    k2 = np.array([[FOCAL * ss, 0, (W / 2 + 0.5) * ss - 0.5], [0, FOCAL * ss, (H / 2 + 0.5) * ss - 0.5], [0, 0, 1]])
    # the picture as the screen shows it, at about the video's own resolution
    ph = int(min(1200, max(60, round(1 / to_pic[1, 1]))))
    pw = int(round(ph * dw / dh))
    tex = cv2.warpAffine(shown, np.diag([ph, ph, 1.0])[:2] @ np.vstack([to_pic, [0, 0, 1]]), (pw, ph),
                         flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)
    tex_to_card = np.array([[dh / ph, 0, -dw / 2], [0, dh / ph, -dh / 2], [0, 0, 1]])
    content = cv2.resize(cv2.warpPerspective(tex, k2 @ plane @ tex_to_card, (W * ss, H * ss), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_CONSTANT), (W, H), interpolation=cv2.INTER_AREA)
    masks = []
    for w, h in (pic, card):                 # the glass, and the whole device
        to_card = np.array([[w / 64, 0, -w / 2], [0, h / 64, -h / 2], [0, 0, 1]])
        masks.append(cv2.warpPerspective(np.ones((64, 64), np.float32), k1 @ plane @ to_card @ _HALF, (W, H),
                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
    glass, cover = masks
    layer = content + float(bezel_rgb) * np.clip(cover - glass, 0, 1)[..., None]
    return layer, cover, glass, _on_card(np.linalg.inv(k1 @ plane), 1)


_HALF = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])   # texture pixel centres to edges


def _on_card(inv: np.ndarray, ss: int):
    """Each pixel's (x, y) on the card plane (metres), through the inverse homography."""
    if ss not in _GRID:
        yy, xx = np.mgrid[0:H * ss, 0:W * ss].astype(np.float32)
        _GRID[ss] = (xx, yy)
    xx, yy = _GRID[ss]
    inv = inv.astype(np.float32)
    d = inv[2, 0] * xx + inv[2, 1] * yy + inv[2, 2]
    return (inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]) / d, (inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]) / d
