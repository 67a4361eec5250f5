"""`python -m edge` (or `edge`): the door lock on the device.

  edge run                       the built-in demo: sample video, simulated lock
  edge run --config FILE         the kiosk as configured (the systemd service uses this)
  edge enrol --name N --photo P  add a person to the gallery from photos
  edge enrol --from PATH         enrol from a signed USB stick mounted at PATH
  edge keygen / edge sign        the enrolment key and signed sticks (standard library only)
  edge bench / liveness-eval / record / attempts   field checks (docs/benchmark.md, liveness.md)

A user's fault: one line on stderr, exit 2, relay locked (docs/enrolment.md#exit-codes).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

# Before numpy loads: one probe against the gallery per frame gains nothing from a
# multithreaded BLAS, whose spinning threads only take the cores from LiteRT (edge bench:
# 1:N frame time 1.68x at 10,000 vectors with it, commit 9fb2187). doorlock.service sets the
# same; a setting of the user's own wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# OpenCV's and FFmpeg's own messages (a camera it cannot open, a truncated video) would
# precede our one-line error; FFmpeg keeps its fatal ones (AV_LOG_FATAL = 8)
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

from edge.errors import DoorlockError, run_command  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:9]))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the kiosk loop (no options: the built-in demo)",
                       description="Run the door lock: camera -> detect -> align -> FeatureNet -> "
                                   "ModelNet -> relay. Without --config it runs the built-in demo: "
                                   "a sample video made from scikit-image's astronaut photo, a "
                                   "gallery enrolled from that photo, the default bundle and a "
                                   "simulated relay, all in its own temporary folder (it refuses "
                                   "--gallery and any --set that would make it write elsewhere).")
    r.add_argument("--config", help="kiosk configuration TOML (e.g. /etc/doorlock/doorlock.toml)")
    r.add_argument("--camera", help="override camera.source: picamera, usb:N, /dev/videoN or a video file")
    r.add_argument("--bundle", help="override recognition.bundle")
    r.add_argument("--gallery", help="override recognition.gallery (with --config; the demo refuses it)")
    r.add_argument("--simulate", action="store_true", help="drive a simulated relay, not the GPIO pin")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config key")
    r.add_argument("--max-frames", type=int, help="stop after this many frames")
    r.add_argument("--realtime", action="store_true",
                   help="play a video file at its own frame rate, dropping frames when behind (as a camera would)")
    r.add_argument("--quiet", action="store_true", help="print only grants, faults and the summary")
    r.set_defaults(func=_command("run", "cmd_run"))

    e = sub.add_parser("enrol", help="enrol a person from photos",
                       description="Add (or replace) a person in the gallery from one or more photos, "
                                   "each holding exactly one clear face.")
    e.add_argument("--name")
    e.add_argument("--photo", action="append", help="photo file (repeatable)")
    e.add_argument("--config", help="kiosk configuration TOML (for the bundle and gallery paths)")
    e.add_argument("--bundle")
    e.add_argument("--gallery", help="gallery directory or .npz file")
    e.add_argument("--from", dest="stick", metavar="PATH",
                   help="enrol from the signed USB stick mounted at PATH (doorlock/enrol.toml)")
    e.add_argument("--key", default="/etc/doorlock/enrol.key",
                   help="the device enrolment key, for --from (default: %(default)s)")
    e.add_argument("--report", metavar="FILE",
                   help="with --from: write the report here instead of on the stick")
    e.add_argument("--copy-report", metavar="FILE",
                   help="with --from: only copy this report onto the stick (no enrolment)")
    e.set_defaults(func=_command("enrol", "cmd_enrol"))

    k = sub.add_parser("keygen", help="make a device enrolment key (for signing USB sticks)",
                       description="Write a new random enrolment key (mode 0600). The door and the "
                                   "administrator's computer hold the same key file.")
    k.add_argument("--out", required=True, help="key file to write")
    k.add_argument("--force", action="store_true", help="replace an existing key (old sticks stop working)")
    k.set_defaults(func=_command("admin", "cmd_keygen"))

    g = sub.add_parser("sign", help="sign a USB stick's enrolment manifest",
                       description="Check the photos named in STICK/doorlock/enrol.toml and append "
                                   "their sha256 and an HMAC made with the enrolment key.")
    g.add_argument("stick", metavar="STICK", help="where the stick is mounted")
    g.add_argument("--key", required=True, help="the enrolment key file")
    g.set_defaults(func=_command("admin", "cmd_sign"))

    for name, module, what in (("bench", "bench", "field benchmark"),
                               ("liveness-eval", "liveness_eval", "liveness check's APCER / BPCER"),
                               ("record", "record", "recording clips from the camera"),
                               ("attempts", "attempts", "the audit log's attempts")):
        try:   # tools with the device's packages; keygen and sign need the standard library only
            import importlib

            importlib.import_module(f"edge.tools.{module}").add_parser(sub)
        except ImportError as exc:
            _missing_tool(sub, name, what, exc)
    return p


def _command(module: str, name: str):
    """The subcommand's function, imported when it runs: `sign --help` needs no OpenCV."""
    def run(args) -> int:
        import importlib

        return getattr(importlib.import_module(f"edge.cli.{module}"), name)(args)
    return run


def _missing_tool(sub, name: str, what: str, exc: ImportError) -> None:
    """A subcommand whose packages are not installed: listed, and a one-line error when run."""
    t = sub.add_parser(name, help=f"{what} (needs the device's packages: {exc.name} is missing)")
    t.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args):
        raise DoorlockError(f"edge {name} needs {exc.name}, which is not installed here "
                            "(pip install -r requirements.txt)")
    t.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    from edge.cli.run import EARLY_HUP  # standard library only: installed before anything slow

    cmdline = sys.argv[1:] if argv is None else argv
    held = EARLY_HUP.hold() if not cmdline or cmdline[0] == "run" else None  # before anything slow
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["run", *(argv or [])])
        return run_command(args.func, args, interrupted="interrupted: relay locked")
    finally:
        if held is not None:
            signal.signal(signal.SIGHUP, held)


if __name__ == "__main__":
    sys.exit(main())
