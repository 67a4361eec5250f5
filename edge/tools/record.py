"""`python -m edge record`: clips from the door's own camera, for `edge liveness-eval`.

The liveness figures in docs/liveness.md come from rendered attacks and web video; what
counts is the door's camera, light and people. This records what the kiosk would see
(the configured camera, size and spectrum) into numbered, lossless clips: people walking
up as they do every day (`--live` for the evaluation) and the attacks tried on it (a phone
replaying a clip, a print: `--attack SPECIES=FOLDER`). Each clip is written to a temporary
file, fsync'd and renamed, so a clip in the folder is always whole. How to use the clips:
docs/liveness.md, "Measuring at your own door".
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.errors import DoorlockError
from edge.tools.outputs import check_folder

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# a clip is a presentation or a few: liveness-eval holds about 75 s of 640x480 at 30 frames/s
MAX_SECONDS, MAX_CLIPS, MAX_PAUSE = 60.0, 1000, 600.0
NO_FRAME_S = 3.0        # a live camera silent this long before its first frame has failed
GAP_S = 1.0             # ... or this long between two frames
RETIME_TOLERANCE = 0.05  # a clip whose measured rate is further off is rewritten at it
# lossless first (the texture PAD must see the camera's own noise, not a codec's), then
# MJPG, which every OpenCV build writes
CODECS = (("FFV1", ".mkv"), ("MJPG", ".avi"))


class VideoEnded(DoorlockError):
    """A video file (as the camera) had no frame left for the next clip."""


@dataclass
class Clip:
    path: Path
    frames: int
    fps: float
    size: tuple[int, int]   # width, height

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


class Bar:
    """A one-line progress bar on a terminal; elsewhere (a log, a pipe) a line per quarter."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width, self._quarter = width, -1

    def show(self, done: float, text: str) -> None:
        done = min(max(done, 0.0), 1.0)
        if self.tty:
            n = int(round(done * self.width))
            self.stream.write(f"\r[{'#' * n}{'.' * (self.width - n)}] {text}\033[K")
            self.stream.flush()
        elif int(done * 4) > self._quarter:
            self._quarter = int(done * 4)
            print(f"{done * 100:3.0f}% {text}", file=self.stream, flush=True)

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._quarter = -1


def check_name(name: str, given: bool = True) -> str:
    if not NAME_RE.match(name or ""):
        what = f"--name {name!r}" if given else f"the folder's name {name!r} (give --name)"
        raise DoorlockError(f"{what}: use letters, digits, '.', '_' and '-' (up to 64, no "
                            "leading dot), e.g. live or real-phone")
    return name


def next_path(folder: Path, name: str, suffix: str) -> Path:
    """NAME-001.SUFFIX, or the first number after every NAME-NNN clip already there: a new
    recording never replaces an old one."""
    taken = [int(m.group(1)) for p in folder.iterdir()
             if (m := re.fullmatch(re.escape(name) + r"-(\d{3,6})\.[A-Za-z0-9]+", p.name))]
    return folder / f"{name}-{max(taken, default=0) + 1:03d}{suffix}"


def _writer(path: Path, fps: float, size: tuple[int, int], fourcc: str):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    if not w.isOpened():
        w.release()
        return None
    if fourcc == "MJPG":
        w.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    return w


def _frames(path: Path):
    """The frames of a video file as OpenCV decodes them (BGR)."""
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def pick_codec(folder: Path) -> tuple[str, str]:
    """The first of CODECS this OpenCV build writes (tried on a 1-frame clip)."""
    for fourcc, suffix in CODECS:
        fd, tmp = tempfile.mkstemp(prefix=".codec-", suffix=suffix, dir=folder)
        os.close(fd)
        try:
            w = _writer(Path(tmp), 15.0, (32, 32), fourcc)
            if w is not None:
                w.write(np.zeros((32, 32, 3), np.uint8))
                w.release()
                if next(_frames(Path(tmp)), None) is not None:
                    return fourcc, suffix
        finally:
            os.unlink(tmp)
    raise DoorlockError("this OpenCV build writes no video (neither FFV1 nor MJPG): "
                        "pip install opencv-python-headless")


def _retime(src: Path, dst: Path, fps: float, fourcc: str, size: tuple[int, int]) -> None:
    """Copy the clip's frames into a new file marked with the rate they were taken at."""
    w = _writer(dst, fps, size, fourcc)
    try:
        for frame in _frames(src):
            w.write(frame)
    finally:
        w.release()


def _count(path: Path) -> int:
    return sum(1 for _ in _frames(path))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_clip(camera, seconds: float, out: Path, fourcc: str, *, live: bool,
                fps_hint: float | None = None, clock: Callable[[], float] = time.monotonic,
                progress: Bar | None = None, label: str = "") -> Clip:
    """Frames from `camera` for `seconds` into `out` (temporary file, fsync, rename).

    A live camera is read for `seconds` of its clock, and the clip is marked with the
    rate its frames actually came at (a Pi camera may give fewer than asked); a video
    file gives round(seconds * its rate) frames, marked with its own rate."""
    from edge.service.fsutil import fsync_dir

    nominal = float(camera.fps or fps_hint or 15.0)
    want = None if live else max(1, int(round(seconds * nominal)))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp, tmp2 = Path(tmp_name), None
    writer, size, n, stamps = None, None, 0, []
    try:
        t0 = None                  # the clip's time starts at its first frame (a camera warming up)
        last_frame_t = clock()

        def time_up(now: float) -> bool:
            return want is None and t0 is not None and now - t0 >= seconds - 1e-6

        while True:
            if time_up(clock()):
                break
            if want is not None and n >= want:
                break
            frame = camera.read()
            now = clock()
            if frame is None:
                if not live or getattr(camera, "finished", False):
                    if n == 0:
                        raise VideoEnded("the video has no frame left") if not live else \
                            DoorlockError("the camera gave no frame")
                    break          # the end of a video file: a shorter clip
                limit = GAP_S if n else NO_FRAME_S
                if now - last_frame_t > limit:
                    busy = "" if n else "; if the kiosk service has it: sudo systemctl stop doorlock"
                    raise DoorlockError(f"the camera gave no frame for {limit:g} s "
                                        f"(after {n} frames of this clip{busy})")
                continue
            if time_up(now):
                break              # taken after the clip's time: the clip is [t0, t0 + seconds)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise DoorlockError(f"the camera gave a {frame.shape} {frame.dtype} frame, not RGB")
            h, w = frame.shape[:2]
            if size is None:
                size = (w, h)
                writer = _writer(tmp, nominal, size, fourcc)
                if writer is None:
                    raise DoorlockError(f"cannot write {fourcc} video to {out.parent}")
            elif (w, h) != size:
                raise DoorlockError(f"the camera changed its frame size from {size[0]}x{size[1]} "
                                    f"to {w}x{h} in the middle of a clip")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            n += 1
            stamps.append(now)
            last_frame_t = now
            t0 = now if t0 is None else t0
            if progress is not None:
                if want:
                    progress.show(n / want, f"{label}{n}/{want} frames")
                else:
                    progress.show((now - t0) / seconds, f"{label}{n} frames, {now - t0:.1f}/{seconds:g} s")
        if writer is None:
            raise DoorlockError(f"the camera gave no frame in {seconds:g} s")
        writer.release()
        writer = None
        fps = nominal
        if live and n >= 2 and stamps[-1] > stamps[0]:
            measured = (n - 1) / (stamps[-1] - stamps[0])
            if abs(measured / nominal - 1) > RETIME_TOLERANCE:
                fd, name2 = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
                os.close(fd)
                tmp2 = Path(name2)
                _retime(tmp, tmp2, measured, fourcc, size)      # read back below, as any clip
                tmp.unlink()
                tmp, tmp2, fps = tmp2, None, measured
        if _count(tmp) != n:       # a writer that failed (a full disk) says nothing
            raise DoorlockError(f"could not write the whole clip in {out.parent} (is the disk full?)")
        _fsync(tmp)
        try:
            os.link(tmp, out)      # never replaces a clip recorded meanwhile
        except FileExistsError:
            raise DoorlockError(f"{out} appeared while recording (another recording into "
                                "the same folder?)") from None
        except OSError:            # no hard links (a FAT stick): rename, having looked first
            if out.exists():
                raise DoorlockError(f"{out} appeared while recording") from None
            os.replace(tmp, out)
        else:
            tmp.unlink()
        fsync_dir(out.parent)
        return Clip(out, n, fps, size)
    finally:
        if writer is not None:
            writer.release()
        if progress is not None:
            progress.end()
        for p in (tmp, tmp2):
            if p is not None and p.exists():
                p.unlink()


def _open(spec: str, cfg):
    """The camera as the kiosk opens it (size, rate, spectrum), without reconnecting: a
    recording that loses its camera stops and says so."""
    from edge.app import live_camera, open_source
    from edge.vision.camera import is_live_source

    if not is_live_source(spec):
        return open_source(spec, cfg), False
    try:
        return live_camera(spec, cfg), True
    except DoorlockError as exc:
        if "needs picamera2" in str(exc):
            raise
        raise DoorlockError(f"{exc} (if the kiosk service has the camera: "
                            "sudo systemctl stop doorlock first)") from None


def cmd_record(args, *, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep, opener=_open) -> int:
    from edge.config import load_config

    if not (0.5 <= args.seconds <= MAX_SECONDS):
        raise DoorlockError(f"--seconds {args.seconds:g}: between 0.5 and {MAX_SECONDS:g}")
    if not (1 <= args.clips <= MAX_CLIPS):
        raise DoorlockError(f"--clips {args.clips}: between 1 and {MAX_CLIPS}")
    if not (0 <= args.pause <= MAX_PAUSE):
        raise DoorlockError(f"--pause {args.pause:g}: between 0 and {MAX_PAUSE:g} s")
    folder = Path(args.out)
    name = check_name(args.name or folder.resolve().name, given=args.name is not None)
    check_folder(folder, "--out")
    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.override(*args.set)
    cfg = cfg.with_options(camera=args.camera)
    fourcc, suffix = pick_codec(folder)
    camera, live = opener(cfg.camera.source, cfg)
    bar = Bar()
    clips = []
    try:
        for k in range(args.clips):
            left = args.pause if live else 0.0
            while left > 0:
                print(f"clip {k + 1}/{args.clips} in {int(np.ceil(left))} s ...", file=sys.stderr, flush=True)
                step = min(1.0, left)
                sleep(step)
                left -= step
            out = next_path(folder, name, suffix)
            try:
                clip = record_clip(camera, args.seconds, out, fourcc, live=live, fps_hint=cfg.camera.fps,
                                   clock=clock, progress=bar, label=f"{out.name}: ")
            except VideoEnded:
                if not clips:
                    raise
                print(f"the video ended after {k} of {args.clips} clips", file=sys.stderr)
                break
            clips.append(clip)
            print(f"wrote {clip.path}: {clip.frames} frames, {clip.seconds:.1f} s at {clip.fps:.1f} "
                  f"frames/s, {clip.size[0]}x{clip.size[1]}, {fourcc}", flush=True)
            if not live and getattr(camera, "finished", False):
                if k + 1 < args.clips:
                    print(f"the video ended after {k + 1} of {args.clips} clips", file=sys.stderr)
                break
    finally:
        camera.close()
    use = f"--live {folder}" if name == "live" else f"--attack {name}={folder}"
    print(f"evaluate with: python -m edge liveness-eval {use} (docs/liveness.md, "
          "\"Measuring at your own door\")")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("record", help="record clips from the door's camera (live people, attacks) for "
                                      "liveness-eval",
                       description=__doc__.split("\n\n")[1].replace("\n", " "),
                       epilog="e.g.  sudo systemctl stop doorlock;  python -m edge record --config "
                              "/etc/doorlock/doorlock.toml --out door/live --clips 10 --seconds 4;  "
                              "python -m edge record ... --out door/real-phone --clips 10")
    r.add_argument("--out", required=True, metavar="FOLDER",
                   help="folder for the clips, one folder per kind (e.g. door/live, door/real-phone)")
    r.add_argument("--name", help="the clips' name: NAME-001.mkv, ... (default: the folder's name)")
    r.add_argument("--config", help="kiosk configuration TOML (its [camera]; default: the built-in defaults)")
    r.add_argument("--camera", help="override camera.source: picamera, usb:N, /dev/videoN or a video file")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config key")
    r.add_argument("--seconds", type=float, default=5.0, help="length of each clip (default %(default)s s)")
    r.add_argument("--clips", type=int, default=1, help="how many clips (default %(default)s)")
    r.add_argument("--pause", type=float, default=3.0,
                   help="countdown before each clip from a live camera, to get in place (default %(default)s s)")
    r.set_defaults(func=cmd_record)
    return r
