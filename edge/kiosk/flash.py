"""Active light challenge: the kiosk screen flashes a short random colour sequence while a
recognised face is judged, and the face must answer it.

Skin near the screen reflects the flash with the sequence's timing and colour, and with
shading that follows the face's shape: the nose and chin, turned to the screen, brighten
more (relative to the room's light) than the cheeks turned away; the wall behind, metres
further, hardly at all. A phone or a monitor replaying a face emits its own picture and
reflects the flash only weakly, flatly, and over its whole glass, the face's surroundings
included; a print brightens evenly. Numpy only; the method, the limits and the measured
figures are in docs/liveness.md.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

import numpy as np

# no saturated red (WCAG 2.3.1's red flash: red over 80 % of R+G+B): red only with another channel
PALETTE = np.array([[0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]],
                   np.float64)
COLOURS = 6           # colours per challenge
HOLD_S = 1 / 3        # each colour at least this long: at most 3 changes a second, i.e. 1.5
                      # flashes (a flash is two opposing changes), half of WCAG 2.3.1's 3
# face regions: patches around face-mesh landmarks (edge.vision.landmarks), or without a mesh
# fractions of the detector's box (u across, v down); the centre faces the screen, the cheeks turn away
MESH_REGIONS = {"nose": (4, 5, 195, 197), "chin": (152, 175, 199, 200), "forehead": (151, 9, 108, 337),
                "cheek_l": (117, 118, 50, 123, 101), "cheek_r": (346, 347, 280, 352, 330)}
BOX_REGIONS = {"nose": (0.42, 0.58, 0.35, 0.68), "chin": (0.38, 0.62, 0.86, 1.0),
               "cheek_l": (0.08, 0.28, 0.45, 0.75), "cheek_r": (0.72, 0.92, 0.45, 0.75)}
CHEEKS = ("cheek_l", "cheek_r")
PATCH = 0.05          # a landmark's patch: this share of the face box's width each way
MIN_FRAMES = 8        # usable frames (face found, not at a colour change) for a verdict
MIN_BACKGROUND = 400  # background pixels needed beside the face
MAX_FACE_SHARE = 0.4  # a face wider than this share of the frame is too near (no background beside it)
# the verdict's rules (measured on the renderings: docs/liveness.md)
CORR_MIN = 0.3        # the face's response follows the colours: correlation with the sequence
T_MIN = 5.0           # ... and stands out of the noise (t statistic of the response)
RESPONSE_MIN = 0.004  # ... by at least this share of the face's own brightness at full colour
BG_RATIO = 3.0        # the face brightens (relatively) this many times more than the background
BG_SIGMAS = 3.0       # ... whose answer is taken at its lower bound, this many standard errors down
SPREAD_MIN = 0.08     # the face's regions answer unevenly (their spread beyond the noise, a share of the mean)
SHAPE_MIN = 1.1       # the centre answers more than the cheeks (relative to the room's light):
                      # refused when even the ratio's upper bound stays below this

_LINEAR = ((np.arange(256) / 255.0) ** 2.2).astype(np.float32)   # sRGB-like decoding
FAST_FPS = 30.0       # a camera's rate when it does not say (the fastest a kiosk camera runs)
KIOSK_LAGS = (0, 1)   # the kiosk screen draws on its own thread: a colour may show one frame late
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Challenge:
    """A colour sequence: `colours` (n, 3) in 0..1 (black: the screen dark), each held for
    `hold` camera frames. `colour(k)` is the colour of challenge frame k (black outside)."""

    colours: np.ndarray
    hold: int

    def __len__(self) -> int:
        return len(self.colours) * self.hold

    def colour(self, k: int) -> np.ndarray:
        return self.colours[k // self.hold] if 0 <= k < len(self) else np.zeros(3)

    def rgb(self, k: int) -> tuple[int, int, int]:
        """What the screen paints for challenge frame k (8-bit RGB)."""
        return tuple(int(round(255 * v)) for v in self.colour(k))

    def edge(self, k: int) -> bool:
        """Frame k is the first of a new colour (an exposure may straddle the change)."""
        return 0 <= k < len(self) + 1 and k % self.hold == 0 and \
            not np.array_equal(self.colour(k), self.colour(k - 1))


def challenge(seed, fps: float = 15.0, n: int = COLOURS) -> Challenge:
    """A random sequence for one attempt (the caller seeds it, e.g. from the system's random
    source: it must not be guessable). Every channel is on in at least two colours and off
    in at least two, so each channel's response can be told from a drift; no colour twice
    in a row."""
    rng = np.random.default_rng(seed)
    hold = max(2, int(np.ceil(HOLD_S * fps - 1e-9)))
    while True:
        idx = [int(rng.integers(len(PALETTE)))]
        while len(idx) < n:
            i = int(rng.integers(len(PALETTE)))
            if i != idx[-1]:
                idx.append(i)
        c = PALETTE[idx]
        on = c.sum(0)
        if (on >= 2).all() and (n - on >= 2).all():
            return Challenge(c, hold)


def _box_slice(box, region, shape):
    x0, y0, x1, y1 = box
    u0, u1, v0, v1 = region
    w, h = x1 - x0, y1 - y0
    xa, xb = int(round(x0 + u0 * w)), int(round(x0 + u1 * w))
    ya, yb = int(round(y0 + v0 * h)), int(round(y0 + v1 * h))
    xa, ya = max(xa, 0), max(ya, 0)
    xb, yb = min(xb, shape[1]), min(yb, shape[0])
    return (slice(ya, yb), slice(xa, xb)) if xb - xa >= 2 and yb - ya >= 2 else None


def background_slices(box, shape) -> list:
    """The background beside the face: bands 0.6 to 1.6 face widths out on either side, from
    above the head down to the chin (the wall behind a live person; the rest of the glass
    around a replayed face). A face too near the frame's edge: what is left above the chin
    outside 1.4 times the box."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    bands = [_box_slice(box, r, shape) for r in ((-1.6, -0.6, -0.6, 1.0), (1.6, 2.6, -0.6, 1.0))]
    bands = [b for b in bands if b is not None]
    if sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in bands) >= MIN_BACKGROUND:
        return bands
    top = max(0, int(y1))
    cx0, cx1 = int(max(0, x0 - 0.2 * w)), int(min(shape[1], x1 + 0.2 * w))
    rest = [(slice(0, top), slice(0, cx0)), (slice(0, top), slice(cx1, shape[1])),
            (slice(0, int(max(0, y0 - 0.2 * h))), slice(cx0, cx1))]
    return [s for s in rest if s[0].stop > s[0].start and s[1].stop > s[1].start]


def measure(frame_rgb: np.ndarray, box, points: np.ndarray | None = None) -> dict | None:
    """Mean linear RGB of each face region (around the mesh's landmarks `points`, frame
    pixels, when given) and of the background; None when a region falls outside the frame or
    the background is too small or the face too near (wider than MAX_FACE_SHARE of the frame:
    a person does not stand 30 cm from a door's camera; a screen held up to fill the view does)."""
    out = {}
    if box[2] - box[0] > MAX_FACE_SHARE * frame_rgb.shape[1]:
        return None
    if points is not None:
        s = max(2.0, PATCH * (box[2] - box[0]))
        for name, idx in MESH_REGIONS.items():
            px = []
            for i in idx:
                x, y = points[i, :2]
                sl = _box_slice((x - s, y - s, x + s, y + s), (0, 1, 0, 1), frame_rgb.shape)
                if sl is not None:
                    px.append(_LINEAR[frame_rgb[sl]].reshape(-1, 3))
            if not px:
                return None
            out[name] = np.concatenate(px).mean(0)
    else:
        for name, region in BOX_REGIONS.items():
            sl = _box_slice(box, region, frame_rgb.shape)
            if sl is None:
                return None
            out[name] = _LINEAR[frame_rgb[sl]].reshape(-1, 3).mean(0)
    bands = background_slices(box, frame_rgb.shape)
    sizes = [(b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in bands]
    if sum(sizes) < MIN_BACKGROUND:
        return None
    # every other pixel each way: the background is smooth, and this is most of the cost
    means = [_LINEAR[frame_rgb[b][::2, ::2]].reshape(-1, 3).mean(0) for b in bands]
    out["background"] = np.average(means, axis=0, weights=sizes)
    # each side on its own as well (NaN when too small): a screen's glass may fill only one
    for i in range(2):
        big = i < len(means) and sizes[i] >= MIN_BACKGROUND // 4
        out[f"background_{i}"] = means[i] if big else np.full(3, np.nan)
    return out


def _series(y: np.ndarray, f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One area's series y (n, 3) of linear RGB and the colours f (n, 3), as the regression
    sees them: each frame's overall brightness taken out (log RGB less its mean over the
    channels; the colours likewise), so that what the face's movement, the room's flicker
    or the camera's exposure do to all channels at once does not count, and a slow drift per
    channel (quadratic in time t) removed; both stacked channel after channel."""
    n = len(y)
    z = np.log(np.maximum(y, 1e-5))
    z = z - z.mean(1, keepdims=True)
    fc = f - f.mean(1, keepdims=True)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), t, t * t]))
    return (z - q @ (q.T @ z)).T.ravel(), (fc - q @ (q.T @ fc)).T.ravel()


def fit_response(y: np.ndarray, f: np.ndarray, t: np.ndarray) -> tuple[float, float, float, float]:
    """One area's response to the flash (see _series): (the relative response, how much a
    channel brightens per unit of its colour as a share of its own brightness; its standard
    error; its t statistic; the correlation of the series with the colours)."""
    return _fit([_series(y, f, t)], len(y))


def _fit(pairs: list, n: int) -> tuple[float, float, float, float]:
    """Each area its own slope; their inverse-variance mean, its error, t and the multiple
    correlation over all the areas."""
    slopes, weights, explained, total = [], [], 0.0, 0.0
    for r, g in pairs:
        gg = float(g @ g)
        if gg < 1e-9:
            return 0.0, np.inf, 0.0, 0.0
        a = float(r @ g) / gg
        resid = r - a * g
        var = float(resid @ resid) / max(1, len(r) - 10 - n) / gg
        slopes.append(a)
        weights.append(1.0 / max(var, 1e-18))
        explained += a * a * gg
        total += float(r @ r)
    w = np.array(weights)
    a = float(np.dot(w, slopes) / w.sum())
    se = float(1.0 / np.sqrt(w.sum()))
    corr = float(np.sign(a) * np.sqrt(explained / total)) if total > 0 else 0.0
    return a, se, a / se, corr


def _mean_se(fits: list) -> tuple[float, float]:
    """The plain mean of some areas' responses and its standard error."""
    return (float(np.mean([f[0] for f in fits])),
            float(np.sqrt(np.sum([min(f[1], 1e3) ** 2 for f in fits])) / len(fits)))


@dataclass
class Verdict:
    live: bool | None          # None: not enough frames yet
    reason: str
    features: dict = field(default_factory=dict)


class FlashTest:
    """Collects one attempt's frames and judges them against its challenge.

    `observe(frame, box, k)` with k the frame's place in the challenge (0: the first frame
    painted; frames before it, k < 0, are a dark-screen reference). `lags`: the frames the
    camera may see a colour late by (the screen's drawing against the camera's exposure; the
    one that fits best is taken, so keep it short: a replay that mimics the flashes gains
    that much time). `verdict()` once the challenge has been shown."""

    def __init__(self, ch: Challenge, lags=(0,), skip_edges: bool = True):
        self.challenge, self.lags, self.skip_edges = ch, tuple(int(v) for v in lags), skip_edges
        self.rows: list[tuple[int, dict]] = []
        self.last_k: int | None = None
        self.too_near = 0

    def observe(self, frame_rgb: np.ndarray, box, k: int, points: np.ndarray | None = None) -> None:
        """One judged frame: its face box and, when the kiosk has it, its mesh's landmarks in
        frame pixels (the regions then follow the face exactly)."""
        self.last_k = k
        if self.skip_edges and all(self.challenge.edge(k - lag) for lag in self.lags):
            return
        m = measure(frame_rgb, box, points)
        self.too_near += box[2] - box[0] > MAX_FACE_SHARE * frame_rgb.shape[1]
        if m is not None and (not self.rows or set(m) == set(self.rows[0][1])):
            self.rows.append((k, m))

    def skip(self, k: int) -> None:
        """Frame k went by without a face to judge."""
        self.last_k = k

    @property
    def done(self) -> bool:
        return self.last_k is not None and self.last_k >= len(self.challenge) + max(self.lags) - 1

    def verdict(self) -> Verdict:
        if not self.done:
            return Verdict(None, "light challenge still running")
        best = None
        for lag in self.lags:
            rows = [(k, m) for k, m in self.rows if not (self.skip_edges and self.challenge.edge(k - lag))]
            if len(rows) < MIN_FRAMES:
                continue
            feats = self._features(rows, lag)
            if best is None or feats["t"] > best["t"]:
                best = feats
        if best is None and self.too_near > len(self.rows):
            return Verdict(False, "light challenge: the face is too near the camera to see the light fall "
                                  "beside it (step back)")
        if best is None:
            return Verdict(False, f"light challenge: the face was seen in {len(self.rows)} usable frames "
                                  f"({MIN_FRAMES} needed)")
        return Verdict(*judge(best), best)

    def _features(self, rows: list, lag: int) -> dict:
        ks = np.array([k for k, _ in rows])
        f = np.array([self.challenge.colour(k - lag) for k in ks])
        t = (ks - ks.mean()) / max(1.0, float(np.ptp(ks)))
        names = [r for r in rows[0][1] if not r.startswith("background")]
        pairs = {name: _series(np.array([m[name] for _, m in rows]), f, t) for name in names}
        n = len(ks)
        rho, _, tstat, corr = _fit([pairs[r] for r in names], n)
        # the background: all of it, and each side where it was seen often enough; the one that
        # answered most counts, at its lower bound (a dark wall's noise is not an answer; three
        # standard errors, as three areas are tried)
        bg, bg_low = -np.inf, -np.inf
        for key in ("background", "background_0", "background_1"):
            y = np.array([m[key] for _, m in rows])
            ok = np.isfinite(y).all(1)
            if ok.sum() >= MIN_FRAMES:
                b, b_se = _fit([_series(y[ok], f[ok], t[ok])], int(ok.sum()))[:2]
                if b - BG_SIGMAS * b_se > bg_low:
                    bg, bg_low = b, b - BG_SIGMAS * b_se
        fits = {r: _fit([pairs[r]], n) for r in names}
        per = {r: v[0] for r, v in fits.items()}
        centre, centre_se = _mean_se([fits[r] for r in names if r not in CHEEKS])
        cheeks, cheeks_se = _mean_se([fits[r] for r in CHEEKS])
        rhos = np.array(list(per.values()))
        noise = float(np.mean([min(v[1], 1e3) ** 2 for v in fits.values()]))
        spread = float(np.sqrt(max(0.0, float(rhos.var(ddof=1)) - noise)) / abs(rho)) if rho else 0.0
        return {"response": rho, "t": tstat, "corr": corr, "background": bg, "background_low": bg_low,
                "spread": spread, "against_background": rho / max(bg_low, 1e-4),
                "level": float(np.mean([np.mean([m[r] for r in names]) for _, m in rows])),
                "shape": centre / cheeks if cheeks > 0 else (np.inf if centre > 0 else 0.0),
                # the most the centre can have answered over the cheeks, within the noise
                "shape_high": (centre + 2 * centre_se) / (cheeks - 2 * cheeks_se) if cheeks > 2 * cheeks_se
                else np.inf,
                "regions": per, "frames": len(rows), "lag": lag}


def judge(f: dict) -> tuple[bool, str]:
    """The rules, in order; the first that fails is the reason."""
    if f["corr"] < CORR_MIN or f["t"] < T_MIN or f["response"] < RESPONSE_MIN:
        return False, (f"light challenge: the face did not answer the screen's colours (response "
                       f"{100 * f['response']:.2f}% at t {f['t']:.1f}, {T_MIN:g} needed; correlation "
                       f"{f['corr']:.2f}, {CORR_MIN:g} needed)")
    if f["against_background"] < BG_RATIO:
        return False, (f"light challenge: the background answered as much as the face (the face "
                       f"{f['against_background']:.1f} times as much light, {BG_RATIO:g} needed): a flat picture")
    if f["spread"] < SPREAD_MIN:
        return False, (f"light challenge: the face answered evenly, as a flat picture does (spread "
                       f"{f['spread']:.2f} over the noise, {SPREAD_MIN:g} needed)")
    if f["shape_high"] < SHAPE_MIN:
        return False, (f"light challenge: the light fell flat across the face (centre/cheeks "
                       f"{f['shape']:.2f}, at most {f['shape_high']:.2f}; {SHAPE_MIN:g} needed)")
    return True, "light challenge answered"


class LightChallenge:
    """The challenge as the kiosk runs it: `light` is the screen (anything with
    `paint_flash(rgb | None)`). `start(frame_no)` draws a new sequence (seeded from the
    system's random source, or from `seed()`) and paints its first colour for the next
    frame; `frame(...)` takes each judged frame, paints the next colour, and sets `verdict`
    when the sequence is over (the screen back to normal); `stop()` abandons it. With a
    `camera` (edge.vision.camera.Camera), its exposure and white balance are held while the
    sequence runs."""

    def __init__(self, light, seed=None, fps: float | None = None, lags=KIOSK_LAGS, camera=None):
        self.light, self.fps, self.lags, self.camera = light, fps, tuple(lags), camera
        self._seed = seed or (lambda: secrets.randbits(63))
        self.test: FlashTest | None = None
        self.start_no = 0
        self.verdict: Verdict | None = None

    @property
    def running(self) -> bool:
        return self.test is not None and self.verdict is None

    def start(self, frame_no: int) -> None:
        ch = challenge(self._seed(), self.frame_rate())
        self.test, self.start_no, self.verdict = FlashTest(ch, self.lags), frame_no + 1, None
        self._hold(True)
        self._paint(ch.rgb(0))

    def frame(self, frame_rgb: np.ndarray, box, frame_no: int, points: np.ndarray | None = None) -> None:
        """One judged frame of the face being challenged (`box` None: no usable face in it)."""
        if not self.running:
            return
        k = frame_no - self.start_no
        if box is None:
            self.test.skip(k)
        else:
            self.test.observe(frame_rgb, box, k, points)
        if self.test.done:
            self.verdict = self.test.verdict()
            self._paint(None)
            self._hold(False)
        else:
            self._paint(self.test.challenge.rgb(k + 1))

    def stop(self) -> None:
        if self.running:
            self._paint(None)
            self._hold(False)
        self.test, self.verdict = None, None

    def frame_rate(self) -> float:
        """Judged frames a second, to hold each colour long enough: the given rate, else the
        camera's, else FAST_FPS. The kiosk judges at most as many frames as the camera gives,
        so a colour never changes faster than 1 / HOLD_S a second; a slower kiosk only holds
        it longer."""
        rate = self.fps or getattr(self.camera, "fps", None)
        return float(rate) if rate and rate > 0 else FAST_FPS

    def _hold(self, held: bool) -> None:
        if self.camera is None:
            return
        try:
            self.camera.hold_exposure(held)
        except Exception as exc:  # the challenge runs on; a drifting exposure only weakens it
            log.error("light challenge: the camera did not %s its exposure: %s",
                      "hold" if held else "release", exc)

    def _paint(self, rgb) -> None:
        try:
            self.light.paint_flash(rgb)
        except Exception as exc:  # a broken screen fails the challenge, it does not stop the lock
            log.error("light challenge: the screen did not paint: %s", exc)
