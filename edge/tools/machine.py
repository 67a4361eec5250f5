"""The machine a bench ran on, for its report: platform, CPU, board, library versions,
thread settings, load average and CPU temperature (a busy or hot machine slows every
figure)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np


def machine_info() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "MKL_NUM_THREADS") if k in os.environ}}
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    for path, key in (("/proc/device-tree/model", "board"),):
        try:
            info[key] = Path(path).read_text().strip("\x00\n ")
        except OSError:
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:
        pass
    return info


def load_average() -> list | None:
    """1, 5, 15 minute load averages: other work on the machine slows every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_temperature() -> float | None:
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0
    except (OSError, ValueError):
        return None
