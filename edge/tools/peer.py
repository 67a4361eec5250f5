"""The peer for `python -m edge bench --compare face_recognition`: the library most home-made
door locks use (dlib's HOG detector, 5-point alignment and the same ResNet descriptor as
our FeatureNet), run the way its own examples run it (facerec_from_video_file.py and
facerec_from_webcam_faster.py): every frame at full size, `face_locations` (HOG, upsample
1), `face_encodings` of every face found, `face_distance` to the enrolled encodings and the
best one accepted at its default tolerance of 0.6. An optional dependency, never needed on
the device.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from edge.errors import DoorlockError

TOLERANCE = 0.6  # face_recognition.compare_faces' default
INSTALL_HINT = ("--compare face_recognition needs the face_recognition package: "
                "pip install --no-deps face_recognition==1.3.0 click pillow face_recognition_models "
                "(its dlib comes from dlib-bin or a dlib build)")


def check_peer(name: str) -> None:
    """One line saying what to install when the peer cannot run. Nothing is imported here:
    face_recognition loads its dlib models on import (~100 MB), which must not count in
    doorlock's own peak memory, measured first."""
    if name != "face_recognition":
        raise DoorlockError(f"unknown peer {name!r} (known: face_recognition)")
    for mod in ("face_recognition", "face_recognition_models", "dlib", "PIL", "click"):
        if importlib.util.find_spec(mod) is None:
            raise DoorlockError(f"{INSTALL_HINT} ({mod} is missing)")


def _import():
    try:
        import face_recognition
    except (ImportError, SystemExit) as exc:  # it quit()s when its models are missing
        raise DoorlockError(f"{INSTALL_HINT} (import failed: {exc})") from None
    return face_recognition


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("face_recognition")
    except Exception:
        return "?"


def run_peer(name: str, source: str, enrolment, max_frames: int | None = None, start_frame: int = 1):
    """face_recognition's example flow over the video; returns a bench RunResult."""
    import cv2

    from edge.tools.measure import RunResult, peak_rss_mb

    check_peer(name)
    fr = _import()
    import dlib

    known, known_names = [], []
    for person, photos in enrolment.people:
        for photo in photos:
            image = fr.load_image_file(str(photo)) if not isinstance(photo, np.ndarray) else photo
            encodings = fr.face_encodings(image)
            if not encodings:
                raise DoorlockError(f"face_recognition finds no face in the enrolment photo of {person}")
            known.append(encodings[0])
            known_names.append(person)

    result = RunResult(f"face_recognition {_version()}")
    result.backends = {"detector": "dlib HOG, CPU (upsample 1)",
                       "featurenet": "dlib ResNet, CPU float (5-point landmarks, 1 jitter)",
                       "matcher": f"numpy L2 face_distance, tolerance {TOLERANCE:g}",
                       "dlib": f"{dlib.__version__}{' CUDA' if getattr(dlib, 'DLIB_USE_CUDA', False) else ''}"}
    for s in ("read", "detect", "embed", "match"):
        result.stage_ms[s] = []
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise DoorlockError(f"cannot read video file {source}")
    try:
        for _ in range(start_frame - 1):
            cap.read()
        clock = time.perf_counter
        n = 0
        c0, w0 = time.process_time(), clock()
        while max_frames is None or n < max_frames:
            t0 = clock()
            ok, frame = cap.read()
            if not ok:
                break
            # BGR -> RGB, as the example does (contiguous: newer dlib refuses a strided view)
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            t1 = clock()
            locations = fr.face_locations(rgb)
            t2 = clock()
            encodings = fr.face_encodings(rgb, locations)
            t3 = clock()
            names = []
            for enc in encodings:
                dist = fr.face_distance(known, enc)
                best = int(np.argmin(dist))
                names.append(known_names[best] if dist[best] <= TOLERANCE else None)
            t4 = clock()
            n += 1
            result.stage_ms["read"].append(1000 * (t1 - t0))
            result.stage_ms["detect"].append(1000 * (t2 - t1))
            result.frame_ms.append(1000 * (t4 - t0))
            if locations:
                result.faces_frames += 1
                result.stage_ms["embed"].append(1000 * (t3 - t2))
                result.stage_ms["match"].append(1000 * (t4 - t3))
                result.face_frame_ms.append(1000 * (t4 - t0))
                frame_no = n + start_frame - 1
                result.per_frame[frame_no] = names
                result.face_px[frame_no] = [int(right - left) for (_top, right, _bottom, left) in locations]
                accepted = [x for x in names if x]
                event = "accepted" if accepted else "denied"
                result.events[event] = result.events.get(event, 0) + 1
        result.wall_s = clock() - w0
        result.cpu_s = time.process_time() - c0
    finally:
        cap.release()
    result.frames = n
    result.rss_mb = peak_rss_mb()
    return result
