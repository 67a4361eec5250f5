"""`python -m edge liveness-eval`: APCER and BPCER of the liveness check (ISO/IEC 30107-3).

Replays photo attacks, video replays and live video (edge/tools/presentations.py) through the
kiosk's own detector and `LivenessGate`, one gate per strictness, with or without the texture
PAD, and reports per attack species and strictness; `--flash` measures the light challenge
instead (edge/tools/flash_eval.py). The method and the figures: docs/liveness.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from edge.errors import DoorlockError
from edge.tools.presentations import (Presentation, Video, attack_presentations, live_presentations,  # noqa: F401
                                      photo_files, pick, read_video, recorded_presentations,
                                      replay_presentations, video_files)
from edge.tools.liveness_report import (Outcome, edge_alone, format_edge, format_table, judged,  # noqa: F401
                                        summarise)
from edge.tools.shared import shared_dir

DEFAULT_LIVE = (("data", "video", "short_hamilton_clip.mp4"), 83, 211)   # Miranda close up

DESCRIPTION = """\
Replays presentations through the kiosk's own detector and `LivenessGate` (one gate per
strictness evaluated) and counts, per ISO/IEC 30107-3's terms:
- APCER (attack presentation classification error rate): the share of attack
  presentations the gate let through at least once, per PAI species (kind of attack
  instrument); the worst planar photo species and the worst replay species are the headlines;
- BPCER (bona fide presentation classification error rate): the share of live
  presentations the gate never let through within the presentation (presentations with a
  face in fewer than half their frames are left out and counted apart: the detector's
  business, not the liveness check's).

Photo attacks are made (edge/tools/attacks.py) from every still photo in the shared data
(../shared/data/faces or $DOORLOCK_SHARED): a matte print, a glossy print, a phone screen and
a propped-up print (the planar species), and a print bent while held (`curved`, a stress
test: not a plane). Video replays (edge/tools/replays.py) re-show the live video, cut into
pieces of --replay-seconds, on a phone in the hand, a tablet, a monitor, and a tablet with
the face zoomed to fill it held close enough to fill the view (`replay-cropped`), filmed at
each --replay-fps. The bona fide presentations are the live video (by default the Hamilton
clip's close-up of Lin-Manuel Miranda, frames 83-211; --live adds files or folders of
video), cut into presentations of --live-seconds at the video's rate and at half of it.

Real attacks filmed at the door's own camera (`python -m edge record`) come in with
--attack SPECIES=FOLDER (e.g. real-phone=door/real-phone), each species counted on its own and
in the "recorded attacks" headline; with your own --live clips and --species none, every
figure is of your door (docs/liveness.md, "Measuring at your own door").

The screen-edge cue (edge/kiosk/screen_edge.py) is measured on its own on every
presentation: the share it would refuse by itself, per species and for live video; with
--screen-edge on it is in the gates too.

Like the kiosk, the gate sees the largest face of every frame; a frame without a face
resets it. Reported too: the mean time to accept a live presentation and the added latency
per judged frame (the mesh and the planarity test; the PAD apart).
"""


class PerFace:
    """`f(frame, box)` worked out once per judged face however many gates ask (the texture
    PAD's score, the screen-edge look). The frame itself is held, so a later frame cannot
    take its id and be mistaken for it."""

    def __init__(self, f):
        self.f = f
        self._frame, self._box, self._value = None, None, None

    def __call__(self, frame, box):
        box = tuple(float(v) for v in box)
        if frame is not self._frame or box != self._box:
            self._frame, self._box, self._value = frame, box, self.f(frame, box)
        return self._value


class SharedPad:
    """One texture PAD for several gates: each judged face is scored once."""

    def __init__(self, pad):
        self.pad, self.threshold = pad, pad.threshold
        self.score = PerFace(pad.score)


def replay(p: Presentation, detector, gates: dict, edge=None, window: int = 15) -> Outcome:
    """Feed one presentation to every gate as the kiosk would; stop once all accepted.
    `edge` (a ScreenEdgeCue) is measured on its own alongside, on the same faces."""
    out = Outcome(p.name, p.kind, p.fps, {s: None for s in gates})
    for g in gates.values():
        g.reset()
    if edge is not None:
        edge.reset()
    no = 0
    for frame in p.frames:
        no += 1
        out.frames = no
        faces = detector.detect(frame)
        if not faces:
            for g in gates.values():
                g.reset()
            if edge is not None:
                edge.reset()
            continue
        out.faces += 1
        if edge is not None:
            out.edge_hits += edge.observe(frame, faces[0].box, no, window).hit
            out.edge_flagged |= edge.refused
        for s, g in gates.items():
            if out.accepted[s] is None:
                g.observe(frame, faces[0], no)
                if g.refuse("someone", no) is None:
                    out.accepted[s] = no
        if all(v is not None for v in out.accepted.values()) and (edge is None or out.edge_flagged):
            break      # the cue alone watches the whole presentation
    return out


def evaluate(strictness: list[str], window: int, photos: list[Path], species: tuple[str, ...],
             n_frames: int, live: list[Presentation], num_threads: int = 2, progress=None,
             videos: list[Video] = (), replay_seconds: float = 2.0, replay_fps=(15, 30), pad=None,
             screen_edge: bool = False, recorded: list[tuple[str, Video]] = ()) -> dict:
    """`recorded`: (species, video) pairs of real attacks filmed at the door (edge record),
    cut into presentations of `replay_seconds` and counted per species like the rendered ones."""
    from edge.tools.attacks import PLANAR
    from edge.tools.replays import REPLAY_SPECIES
    from edge.vision.detect import FaceDetector
    from edge.kiosk.liveness import FaceMesh, LivenessGate
    from edge.kiosk.screen_edge import ScreenEdgeCue, framing

    detector = FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=num_threads)
    mesh = FaceMesh(num_threads)
    shared_pad = SharedPad(pad) if pad is not None else None
    look = PerFace(framing)
    gates = {s: LivenessGate(s, window, mesh=mesh, pad=shared_pad,
                             screen_edge=ScreenEdgeCue(look=look) if screen_edge else None) for s in strictness}
    alone = ScreenEdgeCue(look=look)
    skipped: list[str] = []
    pieces_left_out: list[str] = []
    photo_species = tuple(sp for sp in species if sp not in REPLAY_SPECIES)
    replay_species = tuple(sp for sp in species if sp in REPLAY_SPECIES)
    recorded_species = tuple(dict.fromkeys(sp for sp, _ in recorded))
    presentations = live + attack_presentations(photos, photo_species, n_frames, detector, skipped=skipped) \
        + replay_presentations(list(videos), replay_species, replay_seconds, tuple(replay_fps), detector,
                               skipped=pieces_left_out) \
        + recorded_presentations(list(recorded), replay_seconds, detector, skipped=pieces_left_out)
    outcomes = []
    t0 = time.perf_counter()
    for i, p in enumerate(presentations):
        o = replay(p, detector, gates, alone, window)
        outcomes.append(o)
        if progress:
            acc = ", ".join(f"{s}: {'accepted at frame ' + str(v) if v else 'refused'}"
                            for s, v in o.accepted.items())
            progress(f"[{i + 1}/{len(presentations)}] {o.kind:7s} {o.name}: {acc}")
    observed = sum(g.observed for g in gates.values())
    gate_s = sum(g.observe_s for g in gates.values()) - (pad.score_s if pad is not None else 0.0) \
        - sum(g.screen_edge.score_s for g in gates.values() if g.screen_edge is not None)
    latency = 1000 * gate_s / observed if observed else 0.0
    planar = tuple(sp for sp in species if sp in PLANAR)
    species = (*species, *recorded_species)
    res = summarise(outcomes, strictness, species, planar, replays=replay_species, recorded=recorded_species)
    return {"results": res, "latency_ms": latency, "pad": None if pad is None else
            {"threshold": pad.threshold, "ms_per_face": pad.mean_ms, "faces": pad.scored},
            "screen_edge": screen_edge, "screen_edge_alone": edge_alone(outcomes, species),
            "screen_edge_ms": alone.mean_ms,
            "window": window, "frames_per_attack": n_frames,
            "photos": len(photos), "photos_without_a_face": skipped, "live_presentations": len(live),
            "replay_pieces_without_a_face": pieces_left_out, "replay_seconds": replay_seconds,
            "replay_fps": list(replay_fps), "wall_s": time.perf_counter() - t0,
            "species": list(species), "planar": list(planar), "replays": list(replay_species),
            "recorded": list(recorded_species),
            "outcomes": [vars(o) for o in outcomes]}


def _videos(specs: list[str], shared: Path, what: str = "live video") -> list[Video]:
    out = []
    for spec in specs:
        path, sep, rng = spec.rpartition(":")
        if not sep or not re.fullmatch(r"\d+-\d+", rng):
            path, rng = spec, ""
        first, last = (int(v) for v in rng.split("-")) if rng else (1, 10 ** 9)
        if not Path(path).exists():
            raise DoorlockError(f"{what} not found: {path} (the shared data is looked for in {shared}; "
                                "set DOORLOCK_SHARED or --shared)")
        files = video_files(Path(path))
        if not files:
            raise DoorlockError(f"no video files in {path}")
        out += [read_video(f, first, last) for f in files]
    return out


def _species(text: str) -> tuple[str, ...]:
    from edge.tools.attacks import SPECIES
    from edge.tools.replays import REPLAY_SPECIES

    if text.strip().lower() == "none":
        return ()
    species = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in species:
        if s not in SPECIES + REPLAY_SPECIES:
            raise DoorlockError(f"--species: unknown species {s!r} (known: {', '.join(SPECIES + REPLAY_SPECIES)})")
    return species


RECORDED_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}\Z")


def _recorded(specs: list[str], shared: Path) -> list[tuple[str, Video]]:
    """--attack SPECIES=VIDEO[:FIRST-LAST]: real attacks filmed at the door, by species."""
    from edge.tools.attacks import SPECIES
    from edge.tools.replays import REPLAY_SPECIES

    out = []
    for spec in specs:
        sp, sep, path = spec.partition("=")
        sp = sp.strip()
        if not sep or not path:
            raise DoorlockError(f"--attack {spec!r}: use SPECIES=VIDEO or SPECIES=FOLDER, e.g. real-phone=door/real-phone")
        if not RECORDED_RE.match(sp) or sp == "live":
            raise DoorlockError(f"--attack {sp!r}: a species is lowercase letters, digits, '-' and '_' "
                                "(up to 40), not 'live', e.g. real-phone")
        if sp in SPECIES + REPLAY_SPECIES:
            raise DoorlockError(f"--attack {sp!r} is a rendered species: name recorded attacks apart "
                                f"(e.g. real-{sp.removeprefix('replay-')}), so the two are not mixed")
        out += [(sp, v) for v in _videos([path], shared, what="attack video")]
    return out


def cmd_liveness_eval(args) -> int:
    from edge.tools.outputs import check_folder, check_output

    check_output(args.json, "--json")      # before the work, not after it
    check_output(args.plot, "--plot")
    check_folder(args.save_clips, "--save-clips")
    shared = Path(args.shared) if args.shared else shared_dir()
    strictness = [s.strip() for s in args.strictness.split(",") if s.strip()]
    for s in strictness:
        if s not in ("normal", "strict"):
            raise DoorlockError(f"--strictness: {s!r} is not 'normal' or 'strict'")
    species = _species(args.species)
    try:
        rates = tuple(float(v) for v in args.replay_fps.split(",") if v.strip())
    except ValueError:
        raise DoorlockError(f"--replay-fps: not a list of frame rates: {args.replay_fps!r}") from None
    if not rates or min(rates) <= 0 or max(rates) > 120:
        raise DoorlockError(f"--replay-fps: frame rates between 0 and 120, got {args.replay_fps!r}")
    videos = _videos(args.live or [f"{shared.joinpath(*DEFAULT_LIVE[0])}:{DEFAULT_LIVE[1]}-{DEFAULT_LIVE[2]}"],
                     shared)
    recorded = _recorded(args.attack or [], shared)
    if args.flash:
        from edge.tools.flash_eval import cmd_flash_eval

        if recorded:
            raise DoorlockError("--flash renders the screen's light on the clips; recorded attacks "
                                "(--attack) cannot answer it afterwards: leave one of them out")
        return cmd_flash_eval(args, shared, species, videos, rates)
    live = [p for v in videos for p in live_presentations(v, args.live_seconds)]
    photos = pick(photo_files(shared), args.photos)
    if not photos and any(sp for sp in species if not sp.startswith("replay-")):
        raise DoorlockError(f"no face photos under {shared / 'data' / 'faces'} (set DOORLOCK_SHARED or --shared)")
    pad = None
    if args.pad == "minifasnet":
        from edge.kiosk.pad import TexturePad

        pad = TexturePad(num_threads=1, threshold=args.pad_threshold)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    report = evaluate(strictness, args.window, photos, species, args.frames, live, args.threads, progress,
                      videos, args.replay_seconds, rates, pad, args.screen_edge == "on", recorded)
    table = format_table(report["results"], tuple(report["species"]), tuple(report["planar"]),
                         report["latency_ms"], tuple(report["replays"]), None if pad is None else pad.mean_ms,
                         tuple(report["recorded"]))
    n_photo = len(species) - len(report["replays"])
    photo_part = (f"{len(photos)} photos x {n_photo} attack species, {args.frames} frames each at 15 frames/s; "
                  if n_photo else "")
    print(f"liveness evaluation: {photo_part}{len(live)} live presentations of {args.live_seconds:g} s; "
          f"window {args.window} frames; {report['wall_s']:.0f} s")
    if report["replays"]:
        print(f"video replays: {len(videos)} live videos in pieces of {args.replay_seconds:g} s x "
              f"{len(report['replays'])} replay species at {', '.join(f'{r:g}' for r in rates)} frames/s")
    if recorded:
        print(f"recorded attacks: {len(recorded)} videos in pieces of {args.replay_seconds:g} s, species "
              f"{', '.join(report['recorded'])}")
    print(f"texture PAD: {args.pad}" + (f" (threshold {args.pad_threshold:g})" if pad is not None else ""))
    print(f"screen-edge cue in the gate: {args.screen_edge}")
    print(table)
    print(format_edge(report["screen_edge_alone"], report["screen_edge_ms"]))
    if report["photos_without_a_face"]:
        print(f"photos left out (no face found by the detector): {', '.join(report['photos_without_a_face'])}")
    if report["replay_pieces_without_a_face"]:
        print(f"video pieces left out (a face in fewer than half of their frames): "
              f"{', '.join(report['replay_pieces_without_a_face'])}")
    for s, r in report["results"].items():
        if r["bpcer"] and r["bpcer"]["no_face"] and s == strictness[0]:
            print(f"live presentations left out of BPCER (a face in fewer than half of their frames): "
                  f"{', '.join(r['bpcer']['no_face'])}")
        if r["bpcer"] and r["bpcer"]["refused_names"]:
            print(f"{s}: live presentations refused: {', '.join(r['bpcer']['refused_names'])}")
        for sp, a in r["apcer"].items():
            if a["accepted"]:
                names = [o["name"] for o in report["outcomes"] if o["kind"] == sp and o["accepted"][s]]
                print(f"{s}: {sp} attacks accepted: {', '.join(names)}")
    if args.json:
        from edge.tools.outputs import write_output

        write_output(args.json, json.dumps(report, indent=1))
        print(f"report written to {args.json}")
    if args.plot:
        from edge.tools.liveness_report import plot

        print(plot(report["results"], tuple(report["species"]), args.plot))
    if args.save_clips:
        save_clips(Path(args.save_clips), photos[:3], species, args.frames, videos[:1], rates)
    return 0


def save_clips(folder: Path, photos: list[Path], species: tuple[str, ...], n_frames: int,
               videos: list[Video] = (), rates=(15,)) -> None:
    """A few of the generated attack clips as AVI files, to look at."""
    from edge.tools.attacks import attack_frames, write_clip
    from edge.tools.replays import REPLAY_SPECIES
    from edge.vision.detect import FaceDetector
    from edge.enrolment.enrol import read_photo

    det = FaceDetector("short", num_threads=2)
    photo_species = [sp for sp in species if sp not in REPLAY_SPECIES]
    for i, path in enumerate(photos):
        img = read_photo(path)
        faces = det.detect(img)
        if faces:
            for j, sp in enumerate(photo_species):
                out = write_clip(attack_frames(img, faces[0].box, sp, seed=1000 * i + 17 * j, n_frames=n_frames),
                                 folder / f"{path.stem}-{sp}.avi")
                print(f"wrote {out}")
    reps = replay_presentations(list(videos), tuple(sp for sp in species if sp in REPLAY_SPECIES), 2.0,
                                tuple(rates), det)
    seen = set()
    for p in reps:
        if (p.kind, p.fps) not in seen:
            seen.add((p.kind, p.fps))
            out = write_clip(p.frames, folder / f"{p.kind}-{p.fps:g}fps.avi", fps=p.fps)
            print(f"wrote {out}")


def add_parser(sub) -> argparse.ArgumentParser:
    from edge.tools.attacks import SPECIES
    from edge.tools.replays import REPLAY_SPECIES

    e = sub.add_parser("liveness-eval", help="APCER / BPCER of the liveness check on generated photo "
                                             "attacks, video replays and real video (ISO/IEC 30107-3)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--strictness", default="normal,strict", help="comma-separated (default %(default)s)")
    e.add_argument("--window", type=int, default=15, help="liveness window in frames (default %(default)s)")
    e.add_argument("--species", default=",".join(SPECIES + REPLAY_SPECIES),
                   help="rendered attack species, or none (default %(default)s)")
    e.add_argument("--photos", type=int, help="use this many photos, spread over the set (default: all)")
    e.add_argument("--frames", type=int, default=30,
                   help="frames per photo attack clip, at 15 frames/s (default %(default)s)")
    e.add_argument("--live", action="append", metavar="VIDEO[:FIRST-LAST]",
                   help="real video of a live person facing the camera, or a folder of them (repeatable; "
                        "frames from 1; default: the Hamilton clip's close-up, 83-211)")
    e.add_argument("--attack", action="append", metavar="SPECIES=VIDEO[:FIRST-LAST]",
                   help="real attacks filmed at the door (edge record), a file or a folder of them, counted as "
                        "their own species, e.g. real-phone=door/real-phone (repeatable; cut into pieces of "
                        "--replay-seconds; add --species none to leave the rendered attacks out)")
    e.add_argument("--live-seconds", type=float, default=1.0,
                   help="length of one live presentation (default %(default)s s)")
    e.add_argument("--replay-seconds", type=float, default=2.0,
                   help="length of one video replay, rendered or recorded (default %(default)s s)")
    e.add_argument("--replay-fps", default="15,30", help="camera frame rates the replays are filmed at "
                                                         "(default %(default)s)")
    e.add_argument("--pad", choices=("off", "minifasnet"), default="off",
                   help="the texture PAD cue in the gate (default %(default)s)")
    e.add_argument("--screen-edge", choices=("off", "on"), default="on",
                   help="the screen-edge cue in the gate, as the kiosk's liveness.screen_edge (measured on "
                        "its own either way; off: the figures from before it; default %(default)s)")
    e.add_argument("--pad-threshold", type=float, default=0.9, help="its threshold (default %(default)s)")
    e.add_argument("--flash", action="store_true",
                   help="measure the active light challenge instead (edge/kiosk/flash.py) on clips rendered "
                        "with the kiosk screen's flash")
    e.add_argument("--flash-gain", default="0.05,0.3", metavar="LO,HI",
                   help="the flash's white light over the room's at 0.4 m, drawn log-uniformly per "
                        "presentation (default %(default)s)")
    e.add_argument("--flash-distance", default="0.4,0.7", metavar="LO,HI|face",
                   help="the live people's distance from the screen for the flash's light, drawn uniformly "
                        "per presentation, or 'face': from their faces' size (default %(default)s)")
    e.add_argument("--shared", help="the project's shared data folder (default ../shared or $DOORLOCK_SHARED)")
    e.add_argument("--threads", type=int, default=2, help="inference threads (default %(default)s)")
    e.add_argument("--json", help="also write the full report (every presentation) to this file")
    e.add_argument("--plot", metavar="PNG", help="also plot APCER per species and BPCER (needs matplotlib)")
    e.add_argument("--save-clips", metavar="DIR", help="also write a few attack clips as AVI files here")
    e.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    e.set_defaults(func=cmd_liveness_eval)
    return e
