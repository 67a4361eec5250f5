"""`python -m edge liveness-eval`: APCER and BPCER of the liveness check (ISO/IEC 30107-3).

Replays presentations through the kiosk's own detector and `LivenessGate` (one gate per
strictness evaluated) and counts, per ISO/IEC 30107-3's terms:
- APCER (attack presentation classification error rate): the share of attack
  presentations the gate let through at least once, per PAI species (kind of attack
  instrument); the worst planar species is the headline figure;
- BPCER (bona fide presentation classification error rate): the share of live
  presentations the gate never let through within the presentation.

Attack presentations are made here (edge/tools/attacks.py) from every still photo in the shared
data (../shared/data/faces or $DOORLOCK_SHARED): each photo as a matte print, a glossy
print, a phone screen and a propped-up print (the planar species), and as a print bent
while held (`curved`, a stress test: not a plane). The bona fide presentations are real
video: by default the Hamilton clip's close-up of Lin-Manuel Miranda (frames 83-211),
cut into presentations of `--live-seconds`, replayed at the clip's 30 frames/s and again
at 15 frames/s (every other frame, as a 15 frames/s camera would deliver it).

Like the kiosk, the gate sees the largest face of every frame; a frame without a face
resets it. Reported too: the mean time to accept a live presentation and the gate's
added latency per judged frame (the mesh and the planarity test).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError
from edge.tools.shared import shared_dir

DEFAULT_LIVE = (("data", "video", "short_hamilton_clip.mp4"), 83, 211)   # Miranda close up
PHOTO_GLOBS = ("data/faces/deepface_unit/*.jpg", "data/faces/fr_examples/*.png",
               "data/faces/fr_examples/train/*/*", "data/faces/fr_examples/test/*.jpg")




@dataclass
class Presentation:
    name: str
    kind: str          # "live" or an attack species
    fps: float
    frames: object     # an iterable of RGB frames (consumed once)


@dataclass
class Outcome:
    name: str
    kind: str
    accepted: dict = field(default_factory=dict)     # strictness -> first accepted frame (1-based) or None
    frames: int = 0
    faces: int = 0


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


def live_presentations(video: Path, first: int, last: int, seconds: float,
                       steps=(1, 2)) -> list[Presentation]:
    """The frames first..last (from 1) of a real video, cut into presentations of
    `seconds`, at the video's own rate and subsampled by each step in `steps`."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DoorlockError(f"cannot read video {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        i += 1
        if first <= i <= last:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise DoorlockError(f"{video}: no frames in {first}-{last}")
    out = []
    for step in steps:
        rate = fps / step
        sub = frames[::step]
        n = max(1, int(round(seconds * rate)))
        for k in range(0, len(sub) - n + 1, n):
            a = first + k * step
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


def replay(p: Presentation, detector, gates: dict) -> Outcome:
    """Feed one presentation to every gate as the kiosk would; stop once all accepted."""
    out = Outcome(p.name, p.kind, {s: None for s in gates})
    for g in gates.values():
        g.reset()
    no = 0
    for frame in p.frames:
        no += 1
        out.frames = no
        faces = detector.detect(frame)
        if not faces:
            for g in gates.values():
                g.reset()
            continue
        out.faces += 1
        for s, g in gates.items():
            g.observe(frame, faces[0], no)
            if out.accepted[s] is None and g.refuse("someone", no) is None:
                out.accepted[s] = no
        if all(v is not None for v in out.accepted.values()):
            break
    return out


def summarise(outcomes: list[Outcome], strictness: list[str], species: tuple[str, ...],
              planar: tuple[str, ...], fps: dict) -> dict:
    res = {}
    for s in strictness:
        r = {"apcer": {}, "bpcer": None}
        for sp in species:
            att = [o for o in outcomes if o.kind == sp]
            if att:
                acc = sum(o.accepted[s] is not None for o in att)
                r["apcer"][sp] = {"accepted": acc, "presentations": len(att), "rate": acc / len(att)}
        pl = [v["rate"] for k, v in r["apcer"].items() if k in planar]
        r["apcer_planar_max"] = max(pl) if pl else None
        live = [o for o in outcomes if o.kind == "live"]
        if live:
            refused = [o.name for o in live if o.accepted[s] is None]
            times = [(o.accepted[s] - 1) / fps[o.name] for o in live if o.accepted[s] is not None]
            r["bpcer"] = {"refused": len(refused), "presentations": len(live),
                          "rate": len(refused) / len(live), "refused_names": refused,
                          "mean_s_to_accept": float(np.mean(times)) if times else None}
        res[s] = r
    return res


def format_table(res: dict, species: tuple[str, ...], planar: tuple[str, ...], latency_ms: float) -> str:
    lines = []
    head = f"{'strictness':10s} " + " ".join(f"{sp + ('' if sp in planar else '*'):>14s}" for sp in species) \
        + f" {'APCER max':>10s} {'BPCER':>12s} {'to accept':>10s}"
    lines.append(head)
    for s, r in res.items():
        cells = []
        for sp in species:
            a = r["apcer"].get(sp)
            cells.append(f"{a['rate'] * 100:5.1f}% ({a['accepted']}/{a['presentations']})" if a else "-")
        b = r["bpcer"]
        bp = f"{b['rate'] * 100:5.1f}% ({b['refused']}/{b['presentations']})" if b else "-"
        ta = f"{b['mean_s_to_accept']:.2f} s" if b and b["mean_s_to_accept"] is not None else "-"
        apm = f"{r['apcer_planar_max'] * 100:.1f}%" if r["apcer_planar_max"] is not None else "-"
        lines.append(f"{s:10s} " + " ".join(f"{c:>14s}" for c in cells) + f" {apm:>10s} {bp:>12s} {ta:>10s}")
    lines.append("APCER per attack species (PAI species), max over the planar ones; * = not planar "
                 "(stress test, not in the max).")
    lines.append(f"added latency per judged frame (face mesh + planarity test): {latency_ms:.1f} ms mean")
    return "\n".join(lines)


def evaluate(strictness: list[str], window: int, photos: list[Path], species: tuple[str, ...],
             n_frames: int, live: list[Presentation], num_threads: int = 2, progress=None) -> dict:
    from edge.tools.attacks import PLANAR
    from edge.vision.detect import FaceDetector
    from edge.kiosk.liveness import FaceMesh, LivenessGate

    detector = FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=num_threads)
    mesh = FaceMesh(num_threads)
    gates = {s: LivenessGate(s, window, mesh=mesh) for s in strictness}
    skipped: list[str] = []
    presentations = live + attack_presentations(photos, species, n_frames, detector, skipped=skipped)
    outcomes = []
    t0 = time.perf_counter()
    for i, p in enumerate(presentations):
        o = replay(p, detector, gates)
        outcomes.append(o)
        if progress:
            acc = ", ".join(f"{s}: {'accepted at frame ' + str(v) if v else 'refused'}"
                            for s, v in o.accepted.items())
            progress(f"[{i + 1}/{len(presentations)}] {o.kind:7s} {o.name}: {acc}")
    observed = sum(g.observed for g in gates.values())
    latency = 1000 * sum(g.observe_s for g in gates.values()) / observed if observed else 0.0
    fps = {p.name: p.fps for p in presentations}
    planar = tuple(sp for sp in species if sp in PLANAR)
    res = summarise(outcomes, strictness, species, planar, fps)
    return {"results": res, "latency_ms": latency, "window": window, "frames_per_attack": n_frames,
            "photos": len(photos), "photos_without_a_face": skipped, "live_presentations": len(live), "wall_s": time.perf_counter() - t0,
            "species": list(species), "planar": list(planar),
            "outcomes": [vars(o) for o in outcomes]}


def cmd_liveness_eval(args) -> int:
    from edge.tools.attacks import SPECIES

    shared = Path(args.shared) if args.shared else shared_dir()
    strictness = [s.strip() for s in args.strictness.split(",") if s.strip()]
    for s in strictness:
        if s not in ("normal", "strict"):
            raise DoorlockError(f"--strictness: {s!r} is not 'normal' or 'strict'")
    species = tuple(s.strip() for s in args.species.split(",") if s.strip())
    for s in species:
        if s not in SPECIES:
            raise DoorlockError(f"--species: unknown species {s!r} (known: {', '.join(SPECIES)})")
    live_specs = args.live or [f"{shared.joinpath(*DEFAULT_LIVE[0])}:{DEFAULT_LIVE[1]}-{DEFAULT_LIVE[2]}"]
    live = []
    for spec in live_specs:
        path, sep, rng = spec.rpartition(":")
        if not sep or not re.fullmatch(r"\d+-\d+", rng):
            path, rng = spec, ""
        first, last = (int(v) for v in rng.split("-")) if rng else (1, 10 ** 9)
        if not Path(path).is_file():
            raise DoorlockError(f"live video not found: {path} (the shared data is looked for in {shared}; "
                                "set DOORLOCK_SHARED or --shared)")
        live += live_presentations(Path(path), first, last, args.live_seconds)
    photos = pick(photo_files(shared), args.photos)
    if not photos and species:
        raise DoorlockError(f"no face photos under {shared / 'data' / 'faces'} (set DOORLOCK_SHARED or --shared)")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    report = evaluate(strictness, args.window, photos, species, args.frames, live, args.threads, progress)
    table = format_table(report["results"], species, tuple(report["planar"]), report["latency_ms"])
    print(f"liveness evaluation: {len(photos)} photos x {len(species)} attack species, {args.frames} frames "
          f"each at 15 frames/s; {len(live)} live presentations of {args.live_seconds:g} s; "
          f"window {args.window} frames; {report['wall_s']:.0f} s")
    print(table)
    if report["photos_without_a_face"]:
        print(f"photos left out (no face found by the detector): {', '.join(report['photos_without_a_face'])}")
    for s, r in report["results"].items():
        if r["bpcer"] and r["bpcer"]["refused_names"]:
            print(f"{s}: live presentations refused: {', '.join(r['bpcer']['refused_names'])}")
        for sp, a in r["apcer"].items():
            if a["accepted"]:
                names = [o["name"] for o in report["outcomes"] if o["kind"] == sp and o["accepted"][s]]
                print(f"{s}: {sp} attacks accepted: {', '.join(names)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"report written to {args.json}")
    if args.save_clips:
        save_clips(Path(args.save_clips), photos[:3], species, args.frames)
    return 0


def save_clips(folder: Path, photos: list[Path], species: tuple[str, ...], n_frames: int) -> None:
    """A few of the generated attack clips as AVI files, to look at."""
    from edge.tools.attacks import attack_frames, write_clip
    from edge.vision.detect import FaceDetector
    from edge.enrolment.enrol import read_photo

    det = FaceDetector("short", num_threads=2)
    for i, path in enumerate(photos):
        img = read_photo(path)
        faces = det.detect(img)
        if faces:
            for j, sp in enumerate(species):
                out = write_clip(attack_frames(img, faces[0].box, sp, seed=1000 * i + 17 * j, n_frames=n_frames),
                                 folder / f"{path.stem}-{sp}.avi")
                print(f"wrote {out}")


DESCRIPTION = __doc__


def add_parser(sub) -> argparse.ArgumentParser:
    from edge.tools.attacks import SPECIES

    e = sub.add_parser("liveness-eval", help="APCER / BPCER of the liveness check on generated photo "
                                             "attacks and real video (ISO/IEC 30107-3)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--strictness", default="normal,strict", help="comma-separated (default %(default)s)")
    e.add_argument("--window", type=int, default=15, help="liveness window in frames (default %(default)s)")
    e.add_argument("--species", default=",".join(SPECIES), help="attack species (default %(default)s)")
    e.add_argument("--photos", type=int, help="use this many photos, spread over the set (default: all)")
    e.add_argument("--frames", type=int, default=30,
                   help="frames per attack clip, at 15 frames/s (default %(default)s)")
    e.add_argument("--live", action="append", metavar="VIDEO[:FIRST-LAST]",
                   help="real video of a live person facing the camera (repeatable; frames from 1; "
                        "default: the Hamilton clip's close-up, 83-211)")
    e.add_argument("--live-seconds", type=float, default=1.0,
                   help="length of one live presentation (default %(default)s s)")
    e.add_argument("--shared", help="the project's shared data folder (default ../shared or $DOORLOCK_SHARED)")
    e.add_argument("--threads", type=int, default=2, help="inference threads (default %(default)s)")
    e.add_argument("--json", help="also write the full report (every presentation) to this file")
    e.add_argument("--save-clips", metavar="DIR", help="also write a few attack clips as AVI files here")
    e.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    e.set_defaults(func=cmd_liveness_eval)
    return e
