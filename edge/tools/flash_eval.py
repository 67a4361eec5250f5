"""`python -m edge liveness-eval --flash`: APCER and BPCER of the active light challenge
(edge/kiosk/flash.py) on clips rendered with the kiosk screen's flash (edge/tools/flash_clips.py):
live video relit through its face mesh, photo attacks and video replays reflecting it as
their surfaces would. Each presentation draws its own challenge and its own flash strength
(the room's light against the screen's), reports its verdict, the time the challenge takes
and the analysis's cost per frame. The figures: docs/liveness.md."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from edge.tools.presentations import Video, pick, photo_files, segments, typical_box

START = 3      # the challenge starts this many frames into a presentation (the face recognised)


def _gain(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def presentations(videos: list[Video], photos: list[Path], species: tuple[str, ...], rates: tuple,
                  gains: tuple[float, float], detector, mesh, distances: tuple[float, float] | None = None):
    """(name, kind, fps, challenge, gain, frames) for every live piece at every rate, every
    photo attack (15 frames/s) and every replay piece per species and rate, rendered lazily."""
    from edge.kiosk.flash import challenge
    from edge.tools.attacks import FPS, attack_frames
    from edge.tools.flash_clips import flash_for, live_flash_frames
    from edge.tools.replays import REPLAY_SPECIES, replay_frames
    from edge.enrolment.enrol import read_photo

    rng = np.random.default_rng(18)
    out = []
    for vi, v in enumerate(videos):
        for step in (1, 2):
            rate = v.fps / step
            if step > 1 and rate < 10:
                continue
            n = START + len(challenge(0, rate))
            sub = v.frames[::step]
            for a in range(0, len(sub) - n + 1, n):
                ch = challenge(int(rng.integers(2 ** 32)), rate)
                g = _gain(rng, *gains)
                fl = flash_for(ch, START, n, g)
                name = f"{v.name}:{v.first + a * step}@{rate:.0f}fps"
                d = float(rng.uniform(*distances)) if distances else None
                out.append((name, "live", rate, ch, g,
                            live_flash_frames(sub[a:a + n], fl, int(rng.integers(2 ** 32)), detector, mesh, d)))
    for i, path in enumerate(photos):
        img = read_photo(path)
        faces = detector.detect(img)
        if not faces:
            continue
        for j, sp in enumerate(s for s in species if s not in REPLAY_SPECIES):
            ch = challenge(int(rng.integers(2 ** 32)), FPS)
            n, g = START + len(ch), _gain(rng, *gains)
            out.append((f"{path.parent.name}/{path.name}", sp, FPS, ch, g,
                        attack_frames(img, faces[0].box, sp, seed=1000 * i + 17 * j, n_frames=n,
                                      flash=flash_for(ch, START, n, g))))
    reps = [s for s in species if s in REPLAY_SPECIES]
    # each replayed piece lasts the whole challenge at every rate (a replay that ran out
    # before the verdict would count as refused, and flatter the challenge)
    piece_s = max([2.0] + [(START + len(challenge(0, r))) / r + 0.1 for r in rates])
    for vi, v in enumerate(videos):
        for a, frames in segments(v, piece_s) if reps else ():
            box = typical_box(frames, detector)
            if box is None:
                continue
            for j, sp in enumerate(reps):
                for rate in rates:
                    ch = challenge(int(rng.integers(2 ** 32)), rate)
                    n, g = START + len(ch), _gain(rng, *gains)
                    if len(frames) / v.fps < n / rate:     # a short video: it ends before the verdict
                        continue
                    out.append((f"{v.name}:{a}@{rate:g}fps", sp, float(rate), ch, g,
                                replay_frames(frames, v.fps, box, sp, seed=200_000 + 1000 * vi + 17 * j + int(rate),
                                              fps=float(rate), n_frames=n, flash=flash_for(ch, START, n, g))))
    return out


def judge_clip(frames, ch, detector, mesh) -> tuple[object, float, int, object]:
    """Feed one clip to a FlashTest as the kiosk would (the largest face, its mesh's landmarks
    when the mesh is confident); the verdict, the analysis's seconds, frames analysed, and
    the test (its measurements)."""
    from edge.kiosk.flash import FlashTest

    test = FlashTest(ch)
    spent, seen, i = 0.0, 0, -1
    for i, frame in enumerate(frames):
        faces = detector.detect(frame)
        m = mesh.run(frame, faces[0]) if faces else None
        if m is None or not m.usable:
            test.skip(i - START)
            continue
        t0 = time.perf_counter()
        test.observe(frame, faces[0].box, i - START, m.frame_points())
        spent += time.perf_counter() - t0
        seen += 1
    t0 = time.perf_counter()
    v = test.verdict() if test.done else None
    spent += time.perf_counter() - t0
    test.frames = i + 1
    return v, spent, seen, test


def summarise(rows: list[dict], kinds: list[str]) -> dict:
    res = {}
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        left_out = []
        if kind == "live":
            # a presentation with a face (and a confident mesh) in fewer than half its frames is
            # the detector's failure, not the challenge's: left out, and listed
            left_out = [r["name"] for r in mine if 2 * r["seen"] < r["frames"]]
            mine = [r for r in mine if 2 * r["seen"] >= r["frames"]]
        if not mine:
            continue
        passed = [r for r in mine if r["live"]]
        by_fps = {f"{f:g}": float(np.mean([r["live"] for r in mine if round(r["fps"]) == f]))
                  for f in sorted({round(r["fps"]) for r in mine})}
        reasons = _reasons([r for r in mine if not r["live"]])
        if kind == "live":
            res[kind] = {"presentations": len(mine), "refused": len(mine) - len(passed), "no_face": left_out,
                         "rate": 1 - len(passed) / len(mine), "by_fps": {k: 1 - v for k, v in by_fps.items()},
                         "s_to_accept": float(np.mean([r["s"] for r in passed])) if passed else None,
                         "reasons": reasons}
        else:
            res[kind] = {"presentations": len(mine), "passed": len(passed), "rate": len(passed) / len(mine),
                         "by_fps": by_fps, "reasons": reasons}
    return res


def _reasons(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        key = re.sub(r"\d+", "N", r["reason"].split(" (")[0].split(":")[-1].strip())
        out[key] = out.get(key, 0) + 1
    return out


def cmd_flash_eval(args, shared: Path, species: tuple[str, ...], videos: list[Video], rates: tuple) -> int:
    from edge.errors import DoorlockError
    from edge.vision.detect import FaceDetector
    from edge.vision.landmarks import FaceMesh

    try:
        gains = tuple(float(v) for v in args.flash_gain.split(","))
    except ValueError:
        gains = ()
    if len(gains) != 2 or not 0 < gains[0] <= gains[1] <= 10:
        raise DoorlockError(f"--flash-gain: LO,HI with 0 < LO <= HI, got {args.flash_gain!r}")
    distances = None
    if args.flash_distance != "face":
        try:
            distances = tuple(float(v) for v in args.flash_distance.split(","))
        except ValueError:
            distances = ()
        if len(distances) != 2 or not 0.1 <= distances[0] <= distances[1] <= 5:
            raise DoorlockError(f"--flash-distance: 'face' or LO,HI metres, got {args.flash_distance!r}")
    detector = FaceDetector("short", min_score=0.6, min_face_px=60, num_threads=args.threads)
    mesh = FaceMesh(args.threads)
    photos = pick(photo_files(shared), args.photos) if any(not s.startswith("replay-") for s in species) else []
    items = presentations(videos, photos, species, rates, gains, detector, mesh, distances)
    rows, spent, seen = [], 0.0, 0
    t0 = time.perf_counter()
    for k, (name, kind, fps, ch, g, frames) in enumerate(items):
        v, s, n, test = judge_clip(frames, ch, detector, mesh)
        spent, seen = spent + s, seen + n
        live = bool(v is not None and v.live)
        reason = v.reason if v is not None else "the face was not followed to the challenge's end"
        rows.append({"name": name, "kind": kind, "fps": fps, "gain": g, "live": live, "reason": reason,
                     "seen": n, "frames": test.frames,
                     "s": (START + len(ch)) / fps,
                     "features": {a: b for a, b in (v.features if v else {}).items() if a != "regions"},
                     "measured": [[k_, {a: b.tolist() for a, b in m_.items()}] for k_, m_ in test.rows],
                     "challenge": {"colours": ch.colours.tolist(), "hold": ch.hold}})
        if not args.quiet:
            print(f"[{k + 1}/{len(items)}] {kind:14s} {name} gain {g:.2f}: {'passed' if live else reason}",
                  file=sys.stderr, flush=True)
    kinds = ["live"] + list(species)
    res = summarise(rows, kinds)
    ms = 1000 * spent / seen if seen else 0.0
    where = ("as far as their faces' size says (the kiosk's camera)" if distances is None
             else f"{distances[0]:g}-{distances[1]:g} m from the screen")
    print(f"light challenge: {len(items)} presentations, flash strength {gains[0]:g}-{gains[1]:g} of the room's "
          f"light at 0.4 m; live people {where}; {time.perf_counter() - t0:.0f} s")
    for kind, e in res.items():
        what = "BPCER" if kind == "live" else "APCER"
        n_bad = e["refused"] if kind == "live" else e["passed"]
        by = ", ".join(f"{f} fps {100 * r:.1f}%" for f, r in e["by_fps"].items())
        extra = f"; {e['s_to_accept']:.2f} s to accept" if kind == "live" and e["s_to_accept"] else ""
        print(f"{what} {kind:16s} {100 * e['rate']:5.1f}% ({n_bad}/{e['presentations']}; {by}){extra}")
        if e["reasons"]:
            print("    refused: " + "; ".join(f"{k} x{v}" for k, v in sorted(e["reasons"].items())))
    if res.get("live", {}).get("no_face"):
        print(f"live presentations left out (a face in fewer than half their frames): {', '.join(res['live']['no_face'])}")
    print(f"analysis cost: {ms:.2f} ms per judged frame (regions and background; the mesh is the kiosk's)")
    if args.json:
        from edge.tools.outputs import write_output

        write_output(args.json, json.dumps({"results": res, "ms_per_frame": ms, "gains": gains,
                                            "rows": rows}, indent=1, default=float))
        print(f"report written to {args.json}")
    return 0
