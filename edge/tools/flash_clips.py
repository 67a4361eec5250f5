"""The kiosk screen's light challenge rendered into clips: on live footage, on prints and on
screens, with physically plausible reflectance.

The kiosk's 7-inch screen sits just below the camera and lights what is in front of it with
an illuminance falling off with the square of the distance; `gain` is that light (white)
over the room's at REFERENCE_M. A live face (its shape from the face mesh's 3D points)
reflects it by its albedo, taken from the footage with the room's shading removed (a
first-order lighting fit to the mesh normals), times the cosine towards the screen; body,
hair and wall by their distance. A print reflects it evenly (one plane); a screen's front
diffusely (about 1 %) and, where the geometry puts the screen's mirror image, specularly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from edge.tools.attacks import FOCAL, H, W

REFERENCE_M = 0.4
SCREEN_CENTRE = np.array([0.0, 0.09, 0.0])   # metres from the camera (x right, y down, z forward)
SCREEN_SIZE = (0.154, 0.086)                  # a 7-inch 800x480 panel
# the screen's luminance over a white diffuser's under the screen's own light at REFERENCE_M
SCREEN_LUMINANCE = np.pi * REFERENCE_M ** 2 / (SCREEN_SIZE[0] * SCREEN_SIZE[1])
FACE_WIDTH_M = 0.15                           # a face box's width, metres (distance from size)
LINEAR = ((np.arange(256) / 255.0) ** 2.2).astype(np.float32)


@dataclass
class Flash:
    """What the renderer paints: `colours` (n_frames, 3) in 0..1, the screen's colour while
    each camera frame is exposed, and `gain`, its white light over the room's at REFERENCE_M."""

    colours: np.ndarray
    gain: float

    def at(self, i: int) -> np.ndarray:
        return self.colours[i] if 0 <= i < len(self.colours) else np.zeros(3)

    def on_plane(self, frame: np.ndarray, i: int, cover: np.ndarray, rotation: np.ndarray, t: np.ndarray,
                 albedo: np.ndarray | None = None, diffuse: float = 1.0, specular: float = 0.0,
                 blur: float = 1.0) -> np.ndarray:
        """Frame i of a rendered plane (display values) with this flash on it (plane_light;
        `albedo`: the plane's texture in display values, None: a screen's front)."""
        return plane_light(frame, cover, None if albedo is None else to_linear(albedo), rotation, t,
                           self.at(i), self.gain, diffuse, specular, blur)


def flash_for(ch, start: int, n_frames: int, gain: float, lag: int = 0) -> Flash:
    """The flash of challenge `ch` starting at camera frame `start` (seen `lag` frames late)."""
    return Flash(np.array([ch.colour(i - start - lag) for i in range(n_frames)]), float(gain))


def to_linear(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 255) / 255.0) ** 2.2 if rgb.dtype != np.uint8 else LINEAR[rgb]


def to_display(lin: np.ndarray) -> np.ndarray:
    return 255.0 * np.power(np.clip(lin, 0, None), np.float32(1 / 2.2))


def screen_direction(points: np.ndarray) -> np.ndarray:
    """Unit vectors from 3D points (..., 3) towards the kiosk screen's centre."""
    d = SCREEN_CENTRE - points
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def mirror_mask(rotation: np.ndarray, t: np.ndarray, blur: float = 1.0) -> np.ndarray:
    """(H, W) where the camera sees the kiosk screen mirrored in a plane through t with
    normal rotation[:, 2] (a phone's glass, a glossy print), softened by `blur` pixels."""
    n = rotation[:, 2]
    sx, sy = SCREEN_SIZE[0] / 2, SCREEN_SIZE[1] / 2
    corners = SCREEN_CENTRE + np.array([[-sx, -sy, 0], [sx, -sy, 0], [sx, sy, 0], [-sx, sy, 0]])
    mirrored = corners - 2 * ((corners - t) @ n)[:, None] * n
    mask = np.zeros((H, W), np.float32)
    if (mirrored[:, 2] <= 1e-3).any():
        return mask
    px = np.stack([FOCAL * mirrored[:, 0] / mirrored[:, 2] + W / 2,
                   FOCAL * mirrored[:, 1] / mirrored[:, 2] + H / 2], 1)
    if np.abs(px).max() > 1e5:
        return mask
    cv2.fillConvexPoly(mask, np.round(px * 4).astype(np.int32), 1.0, cv2.LINE_AA, 2)
    return cv2.GaussianBlur(mask, (0, 0), blur) if blur > 0 else mask


def plane_light(frame: np.ndarray, cover: np.ndarray, albedo_lin: np.ndarray | None, rotation: np.ndarray,
                t: np.ndarray, colour: np.ndarray, gain: float, diffuse: float = 1.0,
                specular: float = 0.0, blur: float = 1.0, room_m: float = 2.5) -> np.ndarray:
    """Add the flash to a rendered frame (display values) holding a plane (a print or a screen)
    over `cover`: diffuse reflection by `albedo_lin` (linear, per pixel; None: `diffuse` alone),
    the screen's mirror image by `specular`, the room `room_m` behind by its own colour."""
    if not colour.any():
        return frame
    lin = to_linear(frame)
    light = gain * colour * (REFERENCE_M / np.linalg.norm(t - SCREEN_CENTRE)) ** 2
    cosine = max(0.0, float(rotation[:, 2] @ -screen_direction(t)))
    c = cover[..., None]
    refl = diffuse * (albedo_lin if albedo_lin is not None else 1.0) * cosine
    add = c * refl * light
    if specular:
        add = add + (c * mirror_mask(rotation, t, blur)[..., None]) * specular * SCREEN_LUMINANCE * gain * colour
    add = add + (1 - c) * lin * 0.7 * gain * colour * (REFERENCE_M / room_m) ** 2
    return to_display(lin + add)


def _normals(mesh, frame_shape, tris) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The face's surface normals (h, w, 3) over a box around it (camera axes: x right, y
    down, z away; from the mesh's 3D points), its coverage (h, w), and the box (x0, y0)."""
    p = mesh.points.astype(np.float64)
    m = mesh.matrix
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))   # crop pixels -> frame pixels
    xy = p[:, :2] @ m[:, :2].T + m[:, 2]
    pts = np.column_stack([xy, p[:, 2] * scale])
    nrm = np.cross(pts[tris[:, 1]] - pts[tris[:, 0]], pts[tris[:, 2]] - pts[tris[:, 0]])
    nrm *= np.where(nrm[:, 2:] > 0, -1.0, 1.0)              # facing the camera: z towards it
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    hh, ww = frame_shape[:2]
    bx0, by0 = (int(max(0, v - 8)) for v in xy.min(0))
    bx1, by1 = int(min(ww, xy[:, 0].max() + 8)), int(min(hh, xy[:, 1].max() + 8))
    nmap = np.zeros((max(1, by1 - by0), max(1, bx1 - bx0), 3), np.float32)
    cover = np.zeros(nmap.shape[:2], np.float32)
    for tri, nv in zip(tris, nrm):
        poly = np.round((xy[tri] - (bx0, by0)) * 4).astype(np.int32)
        cv2.fillConvexPoly(nmap, poly, [float(v) for v in nv], cv2.LINE_8, 2)
        cv2.fillConvexPoly(cover, poly, 1.0, cv2.LINE_8, 2)
    nmap = cv2.GaussianBlur(nmap, (0, 0), max(1.0, scale * 3))   # smooth shading across triangles
    nmap /= np.linalg.norm(nmap, axis=2, keepdims=True) + 1e-6
    return nmap, cv2.GaussianBlur(cover, (0, 0), 1.0), (bx0, by0)


def triangles(points2d: np.ndarray) -> np.ndarray:
    """A Delaunay triangulation of the mesh's points (indices), made once and reused."""
    x0, y0 = points2d.min(0) - 1
    x1, y1 = points2d.max(0) + 1
    sub = cv2.Subdiv2D((int(x0), int(y0), int(x1 - x0) + 2, int(y1 - y0) + 2))
    for q in points2d:
        sub.insert((float(q[0]), float(q[1])))
    index = {(round(float(q[0]), 3), round(float(q[1]), 3)): i for i, q in enumerate(points2d)}
    out = []
    for t in sub.getTriangleList():
        k = [index.get((round(float(t[j]), 3), round(float(t[j + 1]), 3))) for j in (0, 2, 4)]
        if None not in k:
            out.append(k)
    return np.array(out, np.int64)


def _gain_lut(frame: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """The frame with each channel's linear light times (1 + gains[c]), through a table."""
    out = np.empty_like(frame)
    for c in range(3):
        lut = np.clip(to_display(LINEAR * (1 + float(gains[c]))) + 0.5, 0, 255).astype(np.uint8)
        out[..., c] = lut[frame[..., c]]
    return out


def relight_face(frame: np.ndarray, face, mesh, tris, colour: np.ndarray, gain: float, wall_m: float,
                 rng: np.random.Generator, distance: float | None = None) -> np.ndarray:
    """One live frame (uint8 RGB) lit by the screen's `colour` as well (uint8 RGB back): the
    wall by its distance everywhere, and in a box about the person the face through its mesh
    and the rest (hair, neck, shoulders: about as near, turned any way) at half the face's."""
    out = _gain_lut(frame, 0.7 * gain * colour * (REFERENCE_M / wall_m) ** 2)
    if not colour.any() or face is None or mesh is None:
        return out
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    d = distance or FOCAL * FACE_WIDTH_M / max(w, 1.0)       # the face's distance, from its size
    nmap, roi_cover, (bx, by) = _normals(mesh, frame.shape, tris)
    rh, rw = roi_cover.shape
    yy, xx = np.mgrid[by:by + rh, bx:bx + rw].astype(np.float32)
    pos = np.stack([(xx - W / 2) * d / FOCAL, (yy - H / 2) * d / FOCAL, np.full_like(xx, d)], -1)
    facing = np.clip(np.sum(nmap * screen_direction(pos), -1), 0, None)
    # the room's own shading (first-order fit of luminance to the normals) is not albedo
    lin_face = LINEAR[frame[by:by + rh, bx:bx + rw]]
    on = roi_cover > 0.9
    if on.sum() < 50:
        return out
    lum = lin_face[on].mean(1)
    coef = np.linalg.lstsq(np.column_stack([np.ones(on.sum()), nmap[on]]), lum, rcond=None)[0]
    shade = np.clip((coef[0] + nmap @ coef[1:]) / max(float(lum.mean()), 1e-4), 0.3, 3.0)
    face_gain = gain * (REFERENCE_M / d) ** 2
    wall = 0.7 * gain * (REFERENCE_M / wall_m) ** 2
    # the person's box: head and shoulders down to the frame's foot
    hh, ww = frame.shape[:2]
    px0, px1 = int(max(0, x0 - 1.4 * w)), int(min(ww, x1 + 1.4 * w))
    py0, py1 = int(max(0, y0 - 0.6 * h)), hh
    if px1 <= px0 or py1 <= py0:
        return out
    near = np.zeros((py1 - py0, px1 - px0), np.float32)
    cv2.ellipse(near, (int((x0 + x1) / 2) - px0, int(y0 + 0.45 * h) - py0), (int(0.75 * w), int(0.85 * h)),
                0, 0, 360, 1.0, -1)
    cv2.rectangle(near, (int(x0 - 1.2 * w) - px0, int(y1 + 0.15 * h) - py0), (int(x1 + 1.2 * w) - px0, hh), 1.0, -1)
    near = cv2.GaussianBlur(near, (0, 0), max(2.0, 0.1 * w))
    cover = np.zeros_like(near)
    lit = np.zeros_like(near)
    ya, xa = by - py0, bx - px0
    sl = (slice(max(0, ya), ya + rh), slice(max(0, xa), xa + rw))
    src = (slice(sl[0].start - ya, sl[0].stop - ya), slice(sl[1].start - xa, sl[1].stop - xa))
    cover[sl] = roi_cover[src][:cover[sl].shape[0], :cover[sl].shape[1]]
    lit[sl] = (roi_cover * facing / shade)[src][:cover[sl].shape[0], :cover[sl].shape[1]]
    near *= 1 - cover
    rel = lit * face_gain + near * 0.5 * face_gain + (1 - cover - near).clip(0, 1) * wall
    lin = LINEAR[frame[py0:py1, px0:px1]] * (1 + rel[..., None] * colour.astype(np.float32))
    patch = to_display(lin) + rng.standard_normal(lin.shape, np.float32)     # the added light's noise
    out[py0:py1, px0:px1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    return out


def live_flash_frames(frames: list, flash: Flash, seed: int, detector, face_mesh,
                      distance: float | None = None) -> Iterator[np.ndarray]:
    """Live footage (RGB frames) as the kiosk's camera would see it while its screen flashes:
    each frame's largest face relit through its mesh; the wall behind 0.5-2.5 m further.
    `distance`: the person's distance from the screen (metres); None: from the face's size
    as the kiosk's camera would see it (FOCAL)."""
    rng = np.random.default_rng(seed)
    tris = None
    extra = rng.uniform(0.5, 2.5)
    for i, frame in enumerate(frames):
        faces = detector.detect(frame)
        face = faces[0] if faces else None
        mesh = face_mesh.run(frame, face) if face is not None else None
        if mesh is not None and tris is None and mesh.usable:
            tris = triangles(mesh.points[:, :2])        # a confident mesh's topology, kept
        d = FOCAL * FACE_WIDTH_M / max(face.box[2] - face.box[0], 1.0) if face is not None else 1.0
        yield relight_face(frame, face, mesh if tris is not None else None, tris, flash.at(i), flash.gain,
                           (distance or d) + extra, rng, distance)
