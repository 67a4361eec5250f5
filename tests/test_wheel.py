"""The wheel is a working device: built from the source, installed with --no-deps into a
fresh virtual environment, it runs the demo from a folder that is not the checkout, with
the checkout nowhere on sys.path (the models come from the installed package)."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ["edge/models/default/metadata.json", "edge/models/default/featurenet_int8.tflite",
            "edge/models/default/featurenet_float.tflite", "edge/models/mediapipe/LICENSE",
            "edge/models/mediapipe/NOTICE", "edge/models/mediapipe/face_detection_short_range.tflite",
            "edge/models/mediapipe/face_detection_full_range.tflite", "edge/models/mediapipe/face_landmark.tflite",
            "edge/models/pad/metadata.json", "edge/models/pad/LICENSE"]


def _run(cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180, **kw)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_the_wheel_installed_elsewhere_runs_the_demo(tmp_path):
    # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "report")
    for d in ("edge", "converter"):
        shutil.copytree(REPO / d, src / d, ignore=skip)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", tmp_path / "dist", src])
    (wheel,) = (tmp_path / "dist").glob("doorlock-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGED) <= names, sorted(set(PACKAGED) - names)

    # a fresh venv; third-party packages are this environment's (a .pth: no network), the
    # checkout is not on its path, and doorlock comes from the wheel alone
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--system-site-packages",
          "--without-pip", venv])
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "doorlock_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheel])

    run = tmp_path / "elsewhere"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TMPDIR"] = str(tmp_path)
    where = _run([py, "-c", "import json, sys, edge, edge.assets as a, edge.kiosk.pad as pad; pad.load_manifest(); "
                  "print(json.dumps(sys.path)); print(edge.__file__); print(a.bundle_path('default')); "
                  "print(a.mediapipe_dir()); print(pad.DEFAULT_DIR)"], cwd=run, env=env).splitlines()
    assert REPO not in {(run / p).resolve() for p in json.loads(where[0])}, where[0]
    for p in where[1:]:
        assert Path(p).is_relative_to(venv), where

    out = _run([py, "-m", "edge", "run", "--max-frames", "45", "--quiet"], cwd=run, env=env)
    opened = re.search(r"door opened (\d+) time", out)
    assert "granted" in out and opened and int(opened.group(1)) >= 1, out
    helped = _run([venv / "bin" / "edge", "--help"], cwd=run, env=env)  # the console script
    assert helped.startswith("usage:") and "edge run --config FILE" in helped, helped
