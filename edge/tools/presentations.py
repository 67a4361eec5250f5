"""The presentations `liveness-eval` replays: live video cut into bona fide presentations, the
photo attacks (edge/tools/attacks.py) and the video replays of that live video on a phone, a
tablet and a monitor (edge/tools/replays.py), all made lazily, frame by frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError

PHOTO_GLOBS = ("data/faces/deepface_unit/*.jpg", "data/faces/fr_examples/*.png",
               "data/faces/fr_examples/train/*/*", "data/faces/fr_examples/test/*.jpg")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".gif")
MAX_VIDEO_BYTES = 2 << 30      # decoded frames held per video: about 75 s of 640x480 at 30 frames/s


@dataclass
class Presentation:
    name: str
    kind: str          # "live" or an attack species
    fps: float
    frames: object     # an iterable of RGB frames (consumed once)


@dataclass
class Video:
    """Frames first..last (from 1) of a real video, RGB."""

    path: Path
    first: int
    frames: list
    fps: float

    @property
    def name(self) -> str:
        return self.path.name


def photo_files(shared: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in PHOTO_GLOBS:
        files += sorted(p for p in shared.glob(pattern) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files


def pick(items: list, n: int | None) -> list:
    """n items spread evenly over the list (all of them when n is None or too large)."""
    if n is None or n >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx))]


def video_files(path: Path) -> list[Path]:
    """A video file, or every video file in a folder (sorted)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return [path]


def read_video(video: Path, first: int = 1, last: int = 10 ** 9,
               max_bytes: int = MAX_VIDEO_BYTES) -> Video:
    """Frames first..last of a video, decoded and held (at most `max_bytes` of them)."""
    import cv2

    if not video.is_file():
        raise DoorlockError(f"{video}: not a regular file")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DoorlockError(f"cannot read video {video}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= 240 else 30.0
    frames, i, held = [], 0, 0
    try:
        while i < last:
            ok, frame = cap.read()
            if not ok:
                break
            i += 1
            if first <= i:
                held += frame.nbytes
                if held > max_bytes:
                    raise DoorlockError(f"{video}: frames {first}-{i} pass {max_bytes >> 20} MiB decoded; "
                                        f"take a part of it with {video}:{first}-{i - 1}")
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise DoorlockError(f"{video}: no frames in {first}-{last}")
    return Video(video, first, frames, float(fps))


def live_presentations(video: Video, seconds: float, steps=(1, 2)) -> list[Presentation]:
    """The video cut into presentations of `seconds`, at the video's own rate and subsampled
    by each step in `steps` (a step that would fall below 10 frames/s is left out)."""
    out = []
    for step in steps:
        rate = video.fps / step
        if step > 1 and rate < 10:
            continue
        sub = video.frames[::step]
        n = max(1, int(round(seconds * rate)))
        for k in range(0, len(sub) - n + 1, n):
            a = video.first + k * step
            out.append(Presentation(f"{video.name}:{a}-{a + (n - 1) * step}@{rate:.0f}fps", "live",
                                    rate, sub[k:k + n]))
    return out


def attack_presentations(photos: list[Path], species: tuple[str, ...], n_frames: int,
                         detector, first_index: int = 0, skipped: list | None = None) -> list[Presentation]:
    """One clip per photo and species, made lazily (frames are rendered as they are read);
    each clip's seed comes from the photo's index (from `first_index`) and the species.
    Photos in which the detector finds no face are left out (and listed in `skipped`)."""
    from edge.tools.attacks import FPS, attack_frames
    from edge.enrolment.enrol import read_photo

    out = []
    if not species:
        return out
    for i, path in enumerate(photos, first_index):
        img = read_photo(path)
        faces = detector.detect(img)
        if not faces:
            if skipped is not None:
                skipped.append(str(path))
            continue
        for j, sp in enumerate(species):
            out.append(Presentation(f"{path.parent.name}/{path.name}", sp, FPS,
                                    attack_frames(img, faces[0].box, sp, seed=1000 * i + 17 * j, n_frames=n_frames)))
    return out


def segments(video: Video, seconds: float) -> list[tuple[int, list]]:
    """The video cut into pieces of `seconds` (a shorter video of at least half that: whole),
    each as (its first frame number, its frames)."""
    n = max(2, int(round(seconds * video.fps)))
    cuts = [(video.first + k, video.frames[k:k + n]) for k in range(0, len(video.frames) - n + 1, n)]
    if not cuts and len(video.frames) >= n / 2:
        cuts = [(video.first, video.frames)]
    return cuts


def typical_box(frames: list, detector, every: int = 3):
    """The median face box over the frames (the largest face in every `every`-th frame), or
    None when fewer than half of those frames hold a face."""
    boxes, looked = [], 0
    for f in frames[::every]:
        looked += 1
        faces = detector.detect(f)
        if faces:
            boxes.append(np.asarray(faces[0].box, np.float64))
    return tuple(np.median(boxes, 0)) if len(boxes) * 2 >= looked and boxes else None


def recorded_presentations(recorded: list[tuple[str, Video]], seconds: float, detector,
                           skipped: list | None = None) -> list[Presentation]:
    """Real attacks filmed at the door: each (species, video) cut into pieces of `seconds`, as
    they were filmed; pieces with a face in fewer than half their frames are left out (and
    named in `skipped`), as the rendered replays' are."""
    out = []
    for sp, v in recorded:
        for a, frames in segments(v, seconds):
            name = f"{v.name}:{a}-{a + len(frames) - 1}"
            if typical_box(frames, detector) is None:
                if skipped is not None:
                    skipped.append(f"{sp} {name}")
                continue
            out.append(Presentation(f"{name}@{v.fps:g}fps", sp, v.fps, frames))
    return out


def replay_presentations(videos: list[Video], species: tuple[str, ...], seconds: float, rates: tuple,
                         detector, skipped: list | None = None) -> list[Presentation]:
    """Each video's `seconds`-long pieces replayed on each replay species' screen, filmed at each
    camera rate in `rates`, rendered lazily; pieces with too few faces are left out (and named
    in `skipped`). Seeds come from the piece's place, the species and the rate."""
    from edge.tools.replays import replay_frames

    out = []
    if not species:
        return out
    piece = 0
    for v in videos:
        for a, frames in segments(v, seconds):
            name = f"{v.name}:{a}-{a + len(frames) - 1}"
            box = typical_box(frames, detector)
            if box is None:
                if skipped is not None:
                    skipped.append(name)
                continue
            for j, sp in enumerate(species):
                for rate in rates:
                    seed = 100_000 + 1000 * piece + 17 * j + int(rate)
                    out.append(Presentation(f"{name}@{rate:g}fps", sp, float(rate),
                                            replay_frames(frames, v.fps, box, sp, seed=seed, fps=float(rate))))
            piece += 1
    return out
