"""The TOML configuration: defaults, the shipped example, and one-line errors."""

import dataclasses
import re
from pathlib import Path

import pytest

from edge.config import SECTIONS, Config, config_from_dict, load_config
from edge.errors import DoorlockError

SHIPPED = Path(__file__).resolve().parents[1] / "firmware_config" / "doorlock.toml"

# Keys the shipped file sets differently from the code's defaults, and why. (None today:
# the example documents the defaults; threshold_override is shown commented out.)
SHIPPED_DIFFERS: dict[str, object] = {}


def write(tmp_path, text, name="doorlock.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error(tmp_path, text) -> str:
    with pytest.raises(DoorlockError) as exc:
        load_config(write(tmp_path, text))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "doorlock.toml"))
    return msg


def test_defaults():
    cfg = Config()
    assert cfg.camera.source == "picamera"
    assert (cfg.detector.model, cfg.detector.min_score, cfg.detector.min_face_px) == ("short", 0.6, 60)
    r = cfg.recognition
    assert (r.bundle, r.gallery, r.use_int8, r.use_edgetpu, r.flips, r.threshold_override,
            r.consecutive_frames, r.num_threads) == (
        "default", "/var/lib/doorlock/gallery", True, "auto", True, None, 3, 2)
    assert dataclasses.asdict(cfg.relay) == dict(pin=17, active_high=True, pulse_s=3.0,
                                                 max_pulse_s=10.0, simulated=False)
    a = cfg.audit
    assert (a.path, a.max_bytes, a.backups, a.keep_debug_images) == (
        "/var/log/doorlock/audit.jsonl", 1_000_000, 5, False)
    assert cfg.log.level == "INFO"
    assert load_config(None) == cfg


def test_empty_file_is_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg == Config() and cfg.path == str(tmp_path / "doorlock.toml")


def test_shipped_example_equals_defaults():
    cfg = load_config(SHIPPED)
    expected = Config().as_dict()
    for dotted, value in SHIPPED_DIFFERS.items():
        sec, key = dotted.split(".")
        expected[sec][key] = value
    assert cfg.as_dict() == expected


def test_shipped_example_documents_every_key():
    text = SHIPPED.read_text()
    for name, cls in SECTIONS.items():
        # this section's text: from its header to the next one
        body = re.split(r"^\[\w+\]$", text[text.index(f"\n[{name}]\n"):], flags=re.M)[1]
        lines = body.strip("\n").splitlines()
        assert lines[0].startswith("#"), f"[{name}] starts without a comment"
        for f in dataclasses.fields(cls):
            # set, or shown commented out (optional keys)
            where = [i for i, ln in enumerate(lines) if re.match(rf"(# )?{f.name} = ", ln)]
            assert where, f"{name}.{f.name} missing from {SHIPPED.name}"
            # under a comment, or grouped with the key before it (width/height)
            assert lines[where[0] - 1].startswith("#") or " = " in lines[where[0] - 1]


def test_values_read(tmp_path):
    cfg = load_config(write(tmp_path, """
        [camera]
        source = "usb:1"
        fps = 30            # an integer is fine for a float key
        [recognition]
        use_edgetpu = false
        threshold_override = -1.5
        [relay]
        pin = 27
        active_high = false
        pulse_s = 10
        [log]
        level = "debug"
    """))
    assert cfg.camera.source == "usb:1" and cfg.camera.fps == 30.0 and isinstance(cfg.camera.fps, float)
    assert cfg.recognition.use_edgetpu is False and cfg.recognition.threshold_override == -1.5
    assert (cfg.relay.pin, cfg.relay.active_high, cfg.relay.pulse_s) == (27, False, 10.0)
    assert cfg.log.level == "DEBUG"
    assert cfg.detector == Config().detector


@pytest.mark.parametrize("text, pattern", [
    ("[relay]\npinn = 4", r"unknown key 'relay\.pinn' \(did you mean 'pin'\?\)"),
    ("[relais]\npin = 4", r"unknown section 'relais' \(did you mean \[relay\]\?\)"),
    ("[relay]\nzzz = 1", r"unknown key 'relay\.zzz' \(known: 'pin', 'active_high'"),
    ("loglevel = 'x'", r"unknown key 'loglevel'"),
    ("relay = 3", r"'relay' must be a table"),
])
def test_unknown_keys(tmp_path, text, pattern):
    assert re.search(pattern, error(tmp_path, text))


@pytest.mark.parametrize("text, pattern", [
    ("[relay]\npin = 28", r"relay\.pin = 28 is out of range \(allowed: 0\.\.27\)"),
    ("[relay]\npin = 'GPIO17'", r"relay\.pin must be an integer 0\.\.27, got 'GPIO17'"),
    ("[relay]\npin = 17.0", r"relay\.pin must be an integer"),
    ("[relay]\nactive_high = 1", r"relay\.active_high must be true or false, got 1"),
    ("[relay]\nmax_pulse_s = 30", r"relay\.max_pulse_s = 30\.0 is out of range \(allowed: 0 < x <= 10\)"),
    ("[relay]\npulse_s = 0", r"relay\.pulse_s = 0\.0 is out of range"),
    ("[relay]\npulse_s = 6\nmax_pulse_s = 5", r"relay\.pulse_s = 6 exceeds relay\.max_pulse_s = 5"),
    ("[detector]\nmin_score = 1.5", r"detector\.min_score = 1\.5 is out of range \(allowed: 0\.\.1\)"),
    ("[detector]\nmin_score = true", r"detector\.min_score must be a number \(0\.\.1\), got True"),
    ("[detector]\nmodel = 'tiny'", r"detector\.model must be one of 'short', 'full', got 'tiny'"),
    ("[detector]\nmin_face_px = nan", r"detector\.min_face_px must be an integer"),
    ("[recognition]\nuse_edgetpu = 'yes'", r"recognition\.use_edgetpu must be \"auto\", true or false"),
    ("[recognition]\nconsecutive_frames = 0", r"consecutive_frames = 0 is out of range \(allowed: 1\.\.100\)"),
    ("[recognition]\nthreshold_override = inf", r"threshold_override must be a number \(any finite number\)"),
    ("[camera]\nsource = 'usb:x'", r"camera\.source = 'usb:x': expected usb:N"),
    ("[camera]\nsource = 5", r"camera\.source must be a string"),
    ("[audit]\nmax_bytes = 10", r"audit\.max_bytes = 10 is out of range \(allowed: >= 1024\)"),
    ("[audit]\nkeep_debug_images = true\ndebug_dir = ''", r"keep_debug_images = true needs audit\.debug_dir"),
    ("[log]\nlevel = 'loud'", r"log\.level must be one of 'DEBUG'"),
])
def test_bad_values(tmp_path, text, pattern):
    assert re.search(pattern, error(tmp_path, text))


def test_invalid_toml_names_the_line(tmp_path):
    msg = error(tmp_path, "[camera]\nwidth = 640\nheight 480\n")
    assert "invalid TOML" in msg and "line 3" in msg


def test_unreadable_files(tmp_path):
    with pytest.raises(DoorlockError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "doorlock.toml"
    p.write_bytes(b"\xff\xfe[camera]")
    with pytest.raises(DoorlockError, match="not UTF-8"):
        load_config(p)


def test_replace_validates_and_keeps_the_rest():
    cfg = Config()
    new = cfg.replace(relay={"simulated": True}, camera={"source": "clip.mp4"})
    assert new.relay.simulated and new.camera.source == "clip.mp4"
    assert new.relay.pin == 17 and cfg.relay.simulated is False  # original untouched
    assert cfg.replace(recognition={"threshold_override": None}).recognition.threshold_override is None
    assert cfg.replace(relay=dataclasses.replace(cfg.relay, pin=4)).relay.pin == 4
    with pytest.raises(DoorlockError, match=r"overrides: relay\.pin = 99 is out of range"):
        cfg.replace(relay={"pin": 99})
    with pytest.raises(DoorlockError, match=r"unknown key 'relay\.pinn'"):
        cfg.replace(relay={"pinn": 4})
    with pytest.raises(DoorlockError, match=r"unknown section 'relais'"):
        cfg.replace(relais={"pin": 4})


def test_override_strings():
    cfg = Config().override("relay.simulated=true", "camera.source=/tmp/clip.mp4",
                            "relay.pulse_s=1.5", 'log.level="WARNING"')
    assert cfg.relay.simulated is True and cfg.camera.source == "/tmp/clip.mp4"
    assert cfg.relay.pulse_s == 1.5 and cfg.log.level == "WARNING"
    with pytest.raises(DoorlockError, match="expected section.key=value"):
        Config().override("simulated")
    with pytest.raises(DoorlockError, match=r"command line: relay\.pin must be an integer"):
        Config().override("relay.pin=seventeen")
    with pytest.raises(DoorlockError, match=r"unknown section 'foo'"):
        Config().override("foo.bar=1")


def test_config_from_dict_and_frozen():
    cfg = config_from_dict({"relay": {"pin": 5}})
    assert cfg.relay.pin == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.relay.pin = 6


# --- hostile files: one line, never a traceback or a hang (issue 17) -------------------------

NESTED = [
    ("[camera]\nsource = " + "[" * 20_000 + "]" * 20_000, "nested more than"),
    ("[camera]\nsource = " + "{a = " * 10_000 + "1" + "}" * 10_000, "nested more than"),
    ("[camera]\n" + "a." * 20_000 + "a = 1\n", "dotted key"),
    ("[camera]\nsource = \"" + "x" * 10_000 + "\"\n", "a string of 10000 characters"),
]


@pytest.mark.parametrize("text, words", NESTED, ids=["arrays", "inline-tables", "dotted-key", "long-string"])
def test_hostile_nesting_gives_one_line(tmp_path, text, words):
    """tomllib recurses once per bracket (RecursionError) and is quadratic in a dotted
    key's parts; the file is scanned first, so either is a one-line error."""
    import time

    t = time.monotonic()
    msg = error(tmp_path, text)
    assert words in msg and len(msg) < 300, msg
    assert time.monotonic() - t < 2.0
    with pytest.raises(DoorlockError, match="nested more than"):
        Config().override("camera.source=" + "[" * 5000)
    # a bare string with many dots is still a bare string
    dots = "/media/clip." + ".".join("abcdefghijkl") + ".mp4"
    assert Config().override(f"camera.source={dots}").camera.source == dots


def test_nested_inside_strings_and_comments_is_not_nesting(tmp_path):
    text = (r'# [[[[[[[[[[[[[[[[[[[[[[[[ {{{{{{{{{{{{{{{{{{{{{{ a.b.c.d.e.f.g.h.i.j.k.l' '\n'
            r'[camera]' '\n'
            r'source = "[[[[[[[[[[[[[[[[[[[[[[[[[[.a.b.c.d.e.f.g.h.i.j.k \"[[[[[[[[[[["' '\n'
            r"[screen]" "\n"
            r"driver = '''{{{{{{{{{{{{{{{{{{{{{{{{{{{'''" "\n"
            r"[audit]" "\n"
            r'debug_dir = """[[[[[[[[[[[[\"""b\\"""' '\n'
            r"path = 'x.a.b.c.d.e.f.g.h.i.j.k.l.m.n'" "\n")
    cfg = load_config(write(tmp_path, text))
    assert cfg.camera.source.startswith("[[[[") and cfg.screen.driver == "{" * 27
    assert cfg.audit.debug_dir == '[[[[[[[[[[[["""b\\' and cfg.audit.path.endswith("m.n")


def test_cli_gives_one_line_for_a_nested_config(tmp_path):
    import subprocess
    import sys

    p = write(tmp_path, "[camera]\nsource = " + "[" * 20_000)
    repo = Path(__file__).resolve().parents[1]
    for args in (["run", "--config", str(p)],
                 ["enrol", "--name", "Ada", "--photo", str(p), "--config", str(p)]):
        r = subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True,
                           cwd=repo, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "nested more than" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_command_line_options_change_only_what_was_given():
    cfg = config_from_dict({}, "defaults")
    assert cfg.with_options() is cfg
    got = cfg.with_options(camera="clip.mp4", gallery="/tmp/g", simulated=True)
    assert (got.camera.source, got.recognition.gallery, got.relay.simulated) == ("clip.mp4", "/tmp/g", True)
    assert got.recognition.bundle == cfg.recognition.bundle and got.camera.width == cfg.camera.width
    assert got.path == cfg.path and cfg.relay.simulated is False   # a copy; the original stays
