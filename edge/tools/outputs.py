"""Files a user names for a tool's results (`--json`, `--plot`): checked before the work
starts, so a 45-minute evaluation does not end in a traceback over a bad path, and written
whole (temporary file, fsync, rename) or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from edge.errors import DoorlockError


def check_output(path, option: str) -> Path | None:
    """`path` (or None) if a file can be written there: not a folder, in a folder that
    exists and can be written; a one-line DoorlockError otherwise."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise DoorlockError(f"{option} {p}: a folder, not a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DoorlockError(f"{option} {p}: no folder {parent}")
    if not os.access(parent, os.W_OK):
        raise DoorlockError(f"{option} {p}: cannot write in {parent}")
    return p


def check_folder(path, option: str) -> Path | None:
    """`path` (or None) made as a folder to write in; a one-line DoorlockError otherwise."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DoorlockError(f"{option} {p}: a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DoorlockError(f"{option} {p}: cannot make it: {exc.strerror or exc}") from None
    if not os.access(p, os.W_OK):
        raise DoorlockError(f"{option} {p}: cannot write in it")
    return p


def write_output(path, text: str, option: str = "--json") -> None:
    from edge.service.fsutil import atomic_write_bytes

    try:
        atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise DoorlockError(f"{option} {path}: cannot write it: {exc.strerror or exc}") from None


NO_MATPLOTLIB = "plot skipped: matplotlib is not installed (pip install matplotlib, or apt install python3-matplotlib)"


def pyplot():
    """matplotlib.pyplot drawing off screen, or None: matplotlib is optional on the device."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path, option: str = "--plot") -> None:
    """matplotlib's savefig, its faults as one line (an unknown extension, a full disk);
    the figure is closed either way."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:
        raise DoorlockError(f"{option} {path}: cannot save the plot: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        plt.close(fig)
