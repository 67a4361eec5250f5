"""Presentation attacks made from still photos, to evaluate the liveness check.

A print (matte or glossy) or a phone showing the photo, held by a hand in front of a room:
a plane posed in 3D (drift, turn, tilt, tremor), ray-traced through a pinhole camera, lit
by a changing lamp, with defocus, motion blur, noise, auto-exposure and compression.
Species (ISO/IEC 30107-3 PAI species): print, glossy, screen (a phone), still (propped up),
and curved (flexed while held: not a plane, a stress test). Seeded: the same photo, species
and seed give the same frames. More in docs/liveness.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

W, H, FPS = 640, 480, 15
FOCAL = 560.0                     # pinhole focal length in pixels (about 60 degrees across)
SPECIES = ("print", "glossy", "screen", "still", "curved")
PLANAR = ("print", "glossy", "screen", "still")
SUPERSAMPLE = 2


@dataclass(frozen=True)
class Pose:
    """Card pose in camera coordinates: metres and degrees, and the card's bend (1/m)."""

    tx: float
    ty: float
    tz: float
    roll: float
    yaw: float
    pitch: float
    bend: float = 0.0

    def rotation(self) -> np.ndarray:
        r, y, p = np.radians([self.roll, self.yaw, self.pitch])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        return rz @ ry @ rx


def portrait(photo_rgb: np.ndarray, box, aspect: float = 0.75) -> np.ndarray:
    """A head-and-shoulders crop (width/height = aspect) around a face box, the way a
    portrait is printed; the image's edge is replicated where the crop runs outside."""
    x0, y0, x1, y1 = box
    fw = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.25 * fw
    h = 3.0 * fw
    w = aspect * h
    m = np.array([[1, 0, -(cx - w / 2)], [0, 1, -(cy - h / 2)]], np.float64)
    return cv2.warpAffine(photo_rgb, m, (int(round(w)), int(round(h))), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def _room(rng: np.random.Generator) -> np.ndarray:
    """A plain room behind the attacker: wall gradient, a door frame, a picture, noise."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = rng.uniform(70, 170, 3)
    tilt = rng.uniform(-40, 40, 3)
    img = base + tilt * (xx / W)[..., None] + rng.uniform(-20, 20, 3) * (yy / H)[..., None]
    for _ in range(rng.integers(1, 4)):
        x0, y0 = rng.integers(0, W - 60), rng.integers(0, H - 60)
        x1, y1 = x0 + rng.integers(40, 260), y0 + rng.integers(40, 300)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)),
                      [float(v) for v in rng.uniform(30, 220, 3)], -1)
    img = cv2.GaussianBlur(img, (0, 0), 2.5)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float, corr: float = 0.85) -> np.ndarray:
    """AR(1) noise: a trembling hand (stationary std `sigma`)."""
    out = np.zeros(n)
    v = rng.normal(0, sigma)
    for i in range(n):
        v = corr * v + np.sqrt(1 - corr ** 2) * rng.normal(0, sigma)
        out[i] = v
    return out


def _wave(rng: np.random.Generator, t: np.ndarray, amp: float, fmax: float = 0.6) -> np.ndarray:
    """A slow deliberate movement: two sinusoids of random frequency and phase."""
    a = rng.uniform(0.3, 1.0, 2) * amp
    f = rng.uniform(0.08, fmax, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    return a[0] * np.sin(2 * np.pi * f[0] * t + ph[0]) + a[1] * np.sin(2 * np.pi * f[1] * t + ph[1]) / 2


def trajectory(species: str, n: int, rng: np.random.Generator, z0: float, fps: float = FPS,
               scale: float = 1.0) -> list[Pose]:
    """Poses for n frames around a distance of z0 metres (`scale`: of the movements)."""
    t = np.arange(n) / fps
    base = dict(tx=rng.uniform(-0.12, 0.12) * z0, ty=rng.uniform(-0.08, 0.1) * z0, tz=z0,
                roll=rng.uniform(-8, 8), yaw=rng.uniform(-15, 15), pitch=rng.uniform(-15, 15))
    if species == "still":
        amp = dict(tx=0, ty=0, tz=0, roll=0, yaw=0, pitch=0)
        tremor = dict(tx=0, ty=0, tz=0, roll=0, yaw=0, pitch=0)
    else:
        amp = {k: scale * v for k, v in dict(tx=0.12 * z0, ty=0.1 * z0, tz=0.15 * z0, roll=12, yaw=25,
                                             pitch=20).items()}
        tremor = {k: scale * v for k, v in dict(tx=0.0012, ty=0.0012, tz=0.002, roll=0.4, yaw=0.6,
                                                pitch=0.6).items()}
    series = {k: base[k] + _wave(rng, t, amp[k]) + _smooth_noise(rng, n, tremor[k]) if amp[k] or tremor[k]
              else np.full(n, base[k]) for k in base}
    if species == "curved":
        bend = np.abs(rng.uniform(2.0, 5.0) * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t
                                                       + rng.uniform(0, np.pi)))
    else:
        bend = np.zeros(n)
    return [Pose(*(float(series[k][i]) for k in ("tx", "ty", "tz", "roll", "yaw", "pitch")),
                 bend=float(bend[i])) for i in range(n)]


def _card_texture(face_img: np.ndarray, species: str, rng: np.random.Generator,
                  face_px: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The card as seen face-on (float RGB), its opacity (1 on the card), and the face's
    width as a fraction of the card's height (`portrait` crops are 3 face widths high)."""
    if species == "screen":
        # a phone in portrait: 9:19.5 display, black bezel, the photo letterboxed on it
        disp_w = int(round(face_px * 3 * face_img.shape[1] / face_img.shape[0]))
        disp_h = int(round(disp_w * 19.5 / 9))
        photo = cv2.resize(face_img, (disp_w, int(round(disp_w / face_img.shape[1] * face_img.shape[0]))),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        disp = np.zeros((disp_h, disp_w, 3), np.float32) + 8
        y0 = max(0, (disp_h - photo.shape[0]) // 2)
        ph = min(photo.shape[0], disp_h)
        disp[y0:y0 + ph] = photo[:ph]
        disp = 255 * (disp / 255) ** rng.uniform(0.8, 0.95) * rng.uniform(1.0, 1.15)  # bright display
        yy, xx = np.mgrid[0:disp_h, 0:disp_w]
        grid = 1 - 0.18 * ((xx % 3 == 2) | (yy % 3 == 2))                              # pixel grid
        disp *= grid[..., None]
        bez = max(2, int(0.04 * disp_w))
        card = np.zeros((disp_h + 2 * bez, disp_w + 2 * bez, 3), np.float32) + rng.uniform(5, 25)
        card[bez:-bez, bez:-bez] = disp
        face_w = photo.shape[0] / 3
    else:
        h = 3 * face_px
        w = int(round(h * face_img.shape[1] / face_img.shape[0]))
        photo = cv2.resize(face_img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        grey = photo.mean(-1, keepdims=True)
        photo = grey + rng.uniform(0.8, 1.0) * (photo - grey)                       # ink gamut
        photo = rng.uniform(12, 30) + photo * rng.uniform(0.8, 0.9)
        photo += rng.normal(0, 2.0, photo.shape[:2])[..., None]                      # paper grain
        m = int(round(rng.uniform(0.0, 0.06) * h))                                   # white border
        card = np.zeros((h + 2 * m, w + 2 * m, 3), np.float32) + rng.uniform(215, 245)
        card[m:m + h, m:m + w] = photo
        face_w = h / 3
    return np.clip(card, 0, 255), np.ones(card.shape[:2], np.float32), face_w / card.shape[0]


def _render_card(card: np.ndarray, alpha: np.ndarray, card_w_m: float, pose: Pose):
    """Project the card into the camera: returns the card layer, its coverage, and each
    pixel's position on the card in metres (x, y), all in frame pixels.

    A flat card is one homography (texture -> image); a bent one (a parabolic cylinder
    about its vertical axis) is ray-traced pixel by pixel. Both render 2x2 samples per
    camera pixel and average them: a pixel integrates light over its area (point
    sampling would alias fine detail such as a screen's pixel grid into far stronger
    moire than a camera sees)."""
    ch, cw = card.shape[:2]
    r = pose.rotation()
    t = np.array([pose.tx, pose.ty, pose.tz])
    ss = SUPERSAMPLE
    scale = cw / card_w_m                      # texture pixels per metre
    size = (W * ss, H * ss)
    if abs(pose.bend) < 1e-9:
        k = np.array([[FOCAL * ss, 0, (W / 2 + 0.5) * ss - 0.5],
                      [0, FOCAL * ss, (H / 2 + 0.5) * ss - 0.5], [0, 0, 1]])
        tex_to_card = np.array([[1 / scale, 0, -cw / 2 / scale], [0, 1 / scale, -ch / 2 / scale],
                                [0, 0, 1]])
        hom = k @ np.column_stack([r[:, 0], r[:, 1], t]) @ tex_to_card
        vv, uu = np.mgrid[0:ch, 0:cw].astype(np.float32)
        maps = [card, alpha, (uu - cw / 2) / scale, (vv - ch / 2) / scale]
        layer, cover, qx, qy = (cv2.warpPerspective(m.astype(np.float32), hom, size, flags=cv2.INTER_LINEAR,
                                                    borderMode=cv2.BORDER_CONSTANT) for m in maps)
    else:
        yy, xx = np.mgrid[0:H * ss, 0:W * ss].astype(np.float32)
        xx, yy = (xx + 0.5) / ss - 0.5, (yy + 0.5) / ss - 0.5
        d = np.stack([(xx - W / 2) / FOCAL, (yy - H / 2) / FOCAL, np.ones_like(xx)], -1)
        a = d @ r.astype(np.float32)           # R^T d, per pixel
        b = r.T @ t                            # R^T t
        kb = pose.bend
        qa = kb * a[..., 0] ** 2
        qb = -(2 * kb * a[..., 0] * b[0] + a[..., 2])
        qc = kb * b[0] ** 2 + b[2]
        sq = np.sqrt(np.maximum(qb ** 2 - 4 * qa * qc, 0))
        lam = 2 * qc / np.maximum(-qb + sq, 1e-6)  # the nearer root, cancellation-free
        qx = lam * a[..., 0] - b[0]
        qy = lam * a[..., 1] - b[1]
        mx = (qx * scale + cw / 2).astype(np.float32)
        my = (qy * scale + ch / 2).astype(np.float32)
        layer = cv2.remap(card, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        cover = cv2.remap(alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    down = [cv2.resize(np.asarray(v, np.float32), (W, H), interpolation=cv2.INTER_AREA)
            for v in (layer, cover, qx, qy)]
    return down[0], down[1], (down[2], down[3])


class Camera:
    """The camera's own effects on a rendered frame: motion blur along the subject's motion,
    defocus, auto-exposure with a lag, sensor noise and JPEG compression (a webcam's MJPG)."""

    def __init__(self, rng: np.random.Generator, defocus: tuple = (0.0, 1.1)):
        self.rng = rng
        self.defocus = rng.uniform(*defocus)
        self.noise = rng.uniform(1.5, 4.5)
        self.quality = int(rng.integers(70, 95))
        self.exposure = 1.0
        self.prev_centre = None

    def expose(self, frame: np.ndarray, centre: np.ndarray, extra_blur: float = 0.0) -> np.ndarray:
        """float RGB scene -> uint8 RGB frame; `centre`: the subject's image position (pixels)."""
        rng = self.rng
        # motion blur: the exposure (half the frame interval) smears the card along its motion
        if self.prev_centre is not None:
            v = centre - self.prev_centre
            half = min(6.0, 0.25 * float(np.hypot(*v)))       # half the smear, in pixels
            if half >= 1.0:
                c = int(np.ceil(half))
                kern = np.zeros((2 * c + 1, 2 * c + 1), np.float32)
                ux, uy = v / np.hypot(*v) * half
                cv2.line(kern, (int(round(c - ux)), int(round(c - uy))),
                         (int(round(c + ux)), int(round(c + uy))), 1.0, 1)
                frame = cv2.filter2D(frame, -1, kern / kern.sum())
        self.prev_centre = centre
        blur = float(np.hypot(self.defocus, extra_blur))
        if blur > 0.2:
            frame = cv2.GaussianBlur(frame, (0, 0), blur)
        # auto-exposure: pulls the mean brightness back towards mid-grey, with a lag
        target = 115.0 / max(float(frame.mean()), 1.0)
        self.exposure += 0.3 * (float(np.clip(target, 0.6, 1.6)) - self.exposure)
        frame = frame * self.exposure + rng.standard_normal(frame.shape, np.float32) * float(self.noise)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        ok, jpg = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return np.ascontiguousarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1])


def attack_frames(photo_rgb: np.ndarray, face_box, species: str = "print", seed: int = 0,
                  n_frames: int = 60, flash=None) -> Iterator[np.ndarray]:
    """Yield RGB frames (H x W) of one presentation attack made from one face photo.
    `flash` (edge.tools.flash_clips.Flash): the kiosk's light challenge, reflected by the
    paper (by its print, evenly over the plane; a glossy one also mirrors the kiosk screen)
    or by a phone's front (diffusely, about 1 %, and its glass's mirror image)."""
    if species not in SPECIES:
        raise ValueError(f"unknown attack species {species!r} (use one of {', '.join(SPECIES)})")
    rng = np.random.default_rng(seed)
    face_img = portrait(photo_rgb, face_box)
    card_h = rng.uniform(0.13, 0.16) if species == "screen" else rng.uniform(0.15, 0.25)
    face_px = rng.uniform(80, 200)          # the face's width in the frame, as at a door
    # the texture about as sharp as the supersampled rendering sees it
    card, alpha, face_frac = _card_texture(face_img, species, rng, int(np.clip(SUPERSAMPLE * face_px, 60, 500)))
    poses = trajectory(species, n_frames, rng, FOCAL * face_frac * card_h / face_px)
    card_w = card_h * card.shape[1] / card.shape[0]
    room = _room(rng)
    t = np.arange(n_frames) / FPS

    # light: a lamp direction, slow dimming, one switch event, colour drift
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), -1.0])
    light /= np.linalg.norm(light)
    level = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6))
    switch = rng.integers(n_frames // 4, max(n_frames // 4 + 1, 3 * n_frames // 4))
    level = level * np.where(np.arange(n_frames) >= switch, rng.uniform(0.7, 1.3), 1.0)
    warm = 0.06 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6))
    gradient = rng.uniform(-0.35, 0.35, 2)          # lamp to one side: light falls across the card
    glare_amp = rng.uniform(60, 140) if species == "glossy" else (
        rng.uniform(10, 35) if species == "screen" else 0.0)
    camera = Camera(rng)
    hand_rgb = np.array([rng.uniform(170, 230), rng.uniform(120, 170), rng.uniform(95, 140)])
    hand_side = rng.choice([-1, 1])

    for i, pose in enumerate(poses):
        layer, cover, (qx, qy) = _render_card(card, alpha, card_w, pose)
        normal = pose.rotation()[:, 2]
        lambert = max(0.2, float(-normal @ light))
        shade = float(level[i]) * (0.35 + 0.65 * lambert)
        if species == "screen":                      # emissive: the room light matters less
            shade = 0.85 + 0.15 * shade
        shade_map = shade * (1 + float(gradient[0] / card_w) * qx + float(gradient[1] / card_h) * qy)
        lit = layer * shade_map[..., None]
        if glare_amp:
            # the specular spot sits where the lamp's mirror image falls, and moves with the tilt
            gx = -0.9 * pose.yaw / 30 * card_w / 2 + light[0] * card_w / 3
            gy = 0.9 * pose.pitch / 30 * card_h / 2 + light[1] * card_h / 3
            glare = float(glare_amp) * np.exp(-(((qx - float(gx)) / float(0.18 * card_w)) ** 2
                                                + ((qy - float(gy)) / float(0.12 * card_h)) ** 2))
            lit = lit + glare[..., None]
        # a hand holds the card at a lower corner (in card coordinates, so it moves with it)
        hx, hy = hand_side * 0.42 * card_w, 0.45 * card_h
        thumb = (((qx - float(hx)) / float(0.12 * card_w)) ** 2 + ((qy - float(hy)) / float(0.09 * card_h)) ** 2) < 1
        thumb &= cover > 0.5
        lit[thumb] = hand_rgb * shade
        frame = room * float(level[i]) * (1 - cover[..., None]) + lit * cover[..., None]
        frame *= np.array([1 + warm[i], 1.0, 1 - warm[i]], np.float32)
        if flash is not None:
            paper = species != "screen"
            frame = flash.on_plane(frame, i, cover, pose.rotation(), np.array([pose.tx, pose.ty, pose.tz]),
                                   layer if paper else None, 1.0 if paper else 0.008,
                                   {"glossy": 0.05, "screen": 0.04}.get(species, 0.0),
                                   6.0 if species == "glossy" else 1.5)
        yield camera.expose(frame, np.array([pose.tx, pose.ty]) / pose.tz * FOCAL)


def write_clip(frames, path: str | Path, fps: float = FPS) -> Path:
    """Write RGB frames as an MJPG AVI (decodable by every OpenCV build)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for frame in frames:
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                         (frame.shape[1], frame.shape[0]))
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    return path
