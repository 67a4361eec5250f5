"""The administrator's commands run with the standard library alone, as the README says:
`edge keygen` and `edge sign` on a laptop with no numpy or OpenCV (a fresh venv without
site packages), and the tools that need the device's packages say so in one line."""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    d = tmp_path_factory.mktemp("bare-venv")
    venv.create(d, with_pip=False, system_site_packages=False)
    py = d / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import numpy"], capture_output=True)
    if r.returncode == 0:
        pytest.skip("this Python's venv still sees numpy")
    return py


def _edge(py, *args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([str(py), "-m", "edge", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


def test_keygen_and_sign_need_only_the_standard_library(bare_python, tmp_path, shared):
    photo = shared("data", "faces", "fr_examples", "train", "obama", "obama.jpg")
    stick = tmp_path / "stick" / "doorlock"
    (stick / "photos").mkdir(parents=True)
    shutil.copy(photo, stick / "photos" / "obama.jpg")
    (stick / "enrol.toml").write_text('version = 1\n\n[[person]]\nname = "Barack Obama"\n'
                                      'photos = ["photos/obama.jpg"]\n')
    key = tmp_path / "keys" / "enrol.key"
    r = _edge(bare_python, "keygen", "--out", str(key), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _edge(bare_python, "sign", str(tmp_path / "stick"), "--key", str(key), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "signed" in r.stdout and "hmac_sha256" in (stick / "enrol.toml").read_text()
    for args in (["--help"], ["sign", "--help"], ["keygen", "--help"]):
        assert _edge(bare_python, *args, cwd=tmp_path).returncode == 0, args


def test_a_tool_without_its_packages_fails_in_one_line(bare_python, tmp_path):
    r = _edge(bare_python, "bench", cwd=tmp_path)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "pip install" in err[0], r.stderr
    assert sys.version_info >= (3, 11)
