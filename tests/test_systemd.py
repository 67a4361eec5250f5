"""The Pi's service set-up: systemd units verified by systemd-analyze, the udev rule, the
enrolment script, install.sh (as a dry run into a directory) and the boot config lines."""

import configparser
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.__main__ import build_parser
from edge.config import load_config
from edge.enrolment.keys import load_key

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "systemd"
FW = REPO / "firmware_config"
PREFIX = "/opt/doorlock"  # where install.sh puts the code; the units name it


def _unit(name):
    """The unit as {section: {key: [values]}} (keys may repeat)."""
    out, section = {}, None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def _one(unit, section, key):
    values = unit[section][key]
    assert len(values) == 1, (key, values)
    return values[0]


def _need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (CI installs it: see .ci/run)")
    return path


@pytest.fixture
def installed_units(tmp_path):
    """The units with the install prefix pointing at a stand-in tree (systemd-analyze
    checks that every command exists and is executable)."""
    root = tmp_path / "opt"
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (root / "firmware_config").mkdir()
    shutil.copy2(FW / "doorlock-stick", root / "firmware_config" / "doorlock-stick")
    (root / "README.md").write_text("doorlock\n")
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.glob("*.service"):
        (out / unit.name).write_text(unit.read_text().replace(PREFIX, str(root)))
    return out


def _verify(paths):
    analyze = _need("systemd-analyze")
    r = subprocess.run([analyze, "verify", "--man=no", *map(str, paths)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    # systemd-analyze verify reports unknown keys and bad values as warnings with rc 0
    noise = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    return r.returncode, noise


def test_units_pass_systemd_analyze_verify(installed_units):
    units = sorted(installed_units.glob("*.service"))
    assert [u.name for u in units] == ["doorlock-enrol@.service", "doorlock.service"]
    rc, noise = _verify(units)
    assert rc == 0 and noise == [], noise


def test_verify_would_catch_a_mistake(installed_units, tmp_path):
    """The check above is a real one: a misspelt key or a bad value is reported."""
    bad = tmp_path / "bad.service"
    text = (installed_units / "doorlock.service").read_text()
    bad.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
                   .replace("WatchdogSec=30", "WatchdogSec=thirty"))
    rc, noise = _verify([bad])
    assert any("NoNewPrivilege" in line for line in noise) and any("thirty" in line for line in noise)


def test_kiosk_unit_is_a_hardened_notify_service():
    u = _unit("doorlock.service")
    s = u["Service"]
    assert _one(u, "Service", "Type") == "notify"
    assert int(_one(u, "Service", "WatchdogSec")) <= 60
    assert _one(u, "Service", "Restart") == "always"
    assert _one(u, "Unit", "StartLimitIntervalSec") == "0"  # never gives up restarting
    assert _one(u, "Service", "User") == "doorlock" and _one(u, "Service", "Group") == "doorlock"
    assert {"gpio", "video"} <= set(_one(u, "Service", "SupplementaryGroups").split())
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateNetwork", "yes"), ("StateDirectory", "doorlock/kiosk"),
                       ("LogsDirectory", "doorlock"), ("CapabilityBoundingSet", ""), ("DevicePolicy", "closed"),
                       ("ProtectProc", "invisible"), ("RemoveIPC", "yes")):
        assert _one(u, "Service", key) == value, key
    assert "ReadWritePaths" not in s  # writable: its own state and the log directory only
    assert _one(u, "Service", "InaccessiblePaths") == "-/etc/doorlock/enrol.key"
    devices = {v.split()[0] for v in s["DeviceAllow"]}
    assert devices == {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip", "char-drm",
                       "char-usb_device"}
    assert _one(u, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one(u, "Install", "WantedBy") == "multi-user.target"
    # the command line is one our CLI accepts, with the shipped configuration's path
    argv = shlex.split(_one(u, "Service", "ExecStart"))
    assert argv[:3] == [f"{PREFIX}/.venv/bin/python", "-m", "edge"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "run" and args.config == "/etc/doorlock/doorlock.toml"
    assert _one(u, "Service", "WorkingDirectory") == PREFIX


def test_shipped_config_writes_only_where_the_unit_allows():
    """ProtectSystem=strict: every path the kiosk writes must be in StateDirectory or
    LogsDirectory, and the bundle is read from the install prefix."""
    cfg = load_config(FW / "doorlock.toml")
    for path in (cfg.audit.debug_dir, cfg.screen.path):
        assert path.startswith("/var/lib/doorlock/kiosk/"), path
    assert cfg.audit.path.startswith("/var/log/doorlock/")
    # the gallery is read, never written, by the kiosk: outside its StateDirectory
    assert cfg.recognition.gallery == "/var/lib/doorlock/gallery"
    assert cfg.recognition.bundle == "default"  # the packaged bundle, in the venv under the prefix
    assert cfg.relay.simulated is False


def _exposure(unit):
    """systemd-analyze security's overall exposure of the unit, and its full report."""
    analyze = _need("systemd-analyze")
    r = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {r.stderr[-300:]}")
    return float(m.group(1)), r.stdout[-3000:]


def test_kiosk_unit_security_exposure_is_low(installed_units):
    level, report = _exposure(installed_units / "doorlock.service")
    assert level <= 2.5, report


def test_enrol_unit_security_exposure(installed_units):
    """The enrolment runs as root to mount the stick, so its exposure is higher than the
    kiosk's; it must stay in systemd-analyze's "OK" band all the same."""
    level, report = _exposure(installed_units / "doorlock-enrol@.service")
    assert level <= 3.0, report


def test_enrol_unit_is_bound_to_the_stick():
    u = _unit("doorlock-enrol@.service")
    assert _one(u, "Unit", "BindsTo") == "dev-%i.device" and _one(u, "Unit", "After") == "dev-%i.device"
    assert _one(u, "Service", "Type") == "oneshot"
    assert _one(u, "Service", "ExecStart") == f"{PREFIX}/firmware_config/doorlock-stick %I"
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateNetwork", "yes"),
                       ("ReadWritePaths", "/var/lib/doorlock/gallery"), ("DevicePolicy", "closed"),
                       ("DeviceAllow", "block-sd rw"), ("ProtectProc", "invisible")):
        assert _one(u, "Service", key) == value, key
    caps = set(_one(u, "Service", "CapabilityBoundingSet").split())
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_ADMIN" not in caps and "CAP_SYS_MODULE" not in caps


def test_udev_rule_starts_the_enrol_unit_for_usb_fat_sticks():
    rules = [line for line in (FW / "99-doorlock-stick.rules").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(rules) == 1
    pairs = re.findall(r'([A-Z_]+(?:\{[A-Za-z_]+\})?)\s*(==|!=|\+=|=)\s*"([^"]*)"', rules[0])
    assert ", ".join(f"{k}{op}\"{v}\"" for k, op, v in pairs).replace(" ", "") == \
        rules[0].replace(" ", ""), "unparsed text in the rule"
    rule = {(k, op): v for k, op, v in pairs}
    assert rule[("ACTION", "==")] == "add" and rule[("SUBSYSTEM", "==")] == "block"
    assert rule[("ENV{ID_BUS}", "==")] == "usb"
    assert set(rule[("ENV{ID_FS_TYPE}", "==")].split("|")) == {"vfat", "exfat"}
    assert rule[("TAG", "+=")] == "systemd"
    wants = rule[("ENV{SYSTEMD_WANTS}", "+=")]
    assert wants == "doorlock-enrol@%k.service"
    assert (UNITS / wants.replace("%k", "")).is_file()
    assert not any(k == "RUN" for k, _ in rule)  # udev must not mount or run long jobs


def test_enrol_script(tmp_path):
    script = FW / "doorlock-stick"
    assert os.stat(script).st_mode & stat.S_IXUSR
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run([str(script), "../sda1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage" in r.stderr  # no path tricks in the instance name
    r = subprocess.run([str(script), "doorlock-test-no-such-device"], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "RUNTIME_DIRECTORY": str(tmp_path)})
    assert r.returncode == 0 and "not a block device" in r.stderr
    # the commands it runs are ones our CLI accepts
    text = script.read_text()
    assert '-m edge enrol --from "$mnt" --config "$config" --key "$key"' in text
    assert '-m edge enrol --from "$mnt" --copy-report "$report"' in text
    a = build_parser().parse_args(["enrol", "--from", "/m", "--config", "/c", "--key", "/k", "--report", "/r"])
    assert (a.stick, a.config, a.key, a.report) == ("/m", "/c", "/k", "/r")
    assert 'mount -n -t "$fstype" -o "ro,$opts"' in text and "nosuid,nodev,noexec" in text
    assert "setpriv --reuid" in text  # the enrolment itself never runs as root
    assert 'user="${DOORLOCK_USER:-doorlock-enrol}"' in text  # the key's only reader, not the kiosk


def test_scripts_pass_shellcheck():
    sc = _need("shellcheck")
    r = subprocess.run([sc, str(FW / "doorlock-stick"), str(FW / "install.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_install_script_dry_run(tmp_path):
    """install.sh --root DIR lays everything out under DIR; running it twice changes nothing
    more (config.txt lines appended once, configuration and key kept)."""
    root = tmp_path / "pi"
    boot = root / "boot" / "firmware" / "config.txt"
    boot.parent.mkdir(parents=True)
    boot.write_text("# Raspberry Pi OS\n[all]\n")
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(FW / "install.sh"), "--root", str(root)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "(dry run) systemctl enable doorlock.service" in r.stdout
    # least privilege: the key is the enrolment user's, the gallery folder is written by it
    # and read by the kiosk's group, and /var/lib/doorlock itself stays root's
    assert "(dry run) chown root:doorlock-enrol " in r.stdout
    assert "(dry run) chown -R doorlock-enrol:doorlock " in r.stdout
    assert "(dry run) chown root:root " in r.stdout
    for unit in ("doorlock.service", "doorlock-enrol@.service"):
        assert (root / "etc/systemd/system" / unit).read_text() == (UNITS / unit).read_text()
    assert (root / "etc/udev/rules.d/99-doorlock-stick.rules").is_file()
    assert (root / "etc/systemd/system.conf.d/doorlock-watchdog.conf").is_file()
    assert (root / "opt/doorlock/edge/enrolment/stick.py").is_file()
    assert os.access(root / "opt/doorlock/firmware_config/doorlock-stick", os.X_OK)
    assert not (root / "opt/doorlock/.git").exists()
    key = root / "etc/doorlock/enrol.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o640 and len(load_key(key)) == 32
    cfg = root / "etc/doorlock/doorlock.toml"
    load_config(cfg)
    assert stat.S_IMODE(os.stat(root / "var/lib/doorlock").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "var/lib/doorlock/gallery").st_mode) == 0o2750
    assert stat.S_IMODE(os.stat(root / "var/lib/doorlock/kiosk").st_mode) == 0o700
    cfg.write_text(cfg.read_text() + "\n# local change\n")
    key_bytes = key.read_bytes()

    r = subprocess.run(["bash", str(FW / "install.sh"), "--root", str(root)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert key.read_bytes() == key_bytes and cfg.read_text().endswith("# local change\n")
    text = boot.read_text()
    assert text.startswith("# Raspberry Pi OS\n[all]\n") and text.count("# --- doorlock ") == 1
    assert (boot.parent / "config.txt.before-doorlock").read_text() == "# Raspberry Pi OS\n[all]\n"


def test_boot_config_lines():
    lines = [line.strip() for line in (FW / "config.txt").read_text().splitlines()]
    settings = [line for line in lines if line and not line.startswith("#")]
    assert "camera_auto_detect=1" in settings and "dtparam=watchdog=on" in settings
    assert all(re.fullmatch(r"[a-z_]+=[A-Za-z0-9_,.=-]+", s) for s in settings), settings
    conf = configparser.ConfigParser()
    conf.read(FW / "doorlock-watchdog.conf")
    assert conf["Manager"]["RuntimeWatchdogSec"]


def _block_device():
    for d in sorted(Path("/dev").glob("*")):
        try:
            if stat.S_ISBLK(d.stat().st_mode):
                return d
        except OSError:
            continue
    pytest.skip("no block device in /dev to stand in for a USB stick")


def test_enrol_script_end_to_end_with_stand_in_system_tools(tmp_path, shared):
    """doorlock-stick as the unit runs it, with mount, blkid, setpriv and systemctl replaced
    by stand-ins that log what they are asked to do (a real FAT mount needs a kernel that
    has vfat and the right to mount): mount read-only, enrol from the signed stick as the
    service user, reload the kiosk, remount read-write only for the report, unmount."""
    from edge.enrolment import keys
    from edge.vision.gallery import load_gallery
    from edge.enrolment.stick import sign_stick

    dev = _block_device()
    photos = shared("data", "faces", "fr_examples")
    stick = tmp_path / "stick-content"
    (stick / "doorlock" / "photos").mkdir(parents=True)
    shutil.copyfile(photos / "train" / "obama" / "obama.jpg", stick / "doorlock" / "photos" / "o.jpg")
    (stick / "doorlock" / "enrol.toml").write_text(
        'version = 1\n[[person]]\nname = "Barack Obama"\nphotos = ["photos/o.jpg"]\n')
    key_file = tmp_path / "enrol.key"
    sign_stick(stick, keys.write_key(key_file))
    gallery = tmp_path / "state" / "gallery"
    config = tmp_path / "doorlock.toml"
    config.write_text(f'[recognition]\nbundle = "{REPO / "edge" / "models" / "default"}"\ngallery = "{gallery}"\n')

    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    stubs = {
        "blkid": 'echo vfat',
        "mount": 'echo "mount $*" >> "$FAKE_LOG"\ncase "$*" in *remount*) exit 0;; esac\n'
                 'for last; do :; done\ncp -a "$FAKE_STICK/." "$last/"',
        "umount": 'echo "umount $*" >> "$FAKE_LOG"',
        "setpriv": 'echo "setpriv $*" | cut -c1-60 >> "$FAKE_LOG"\n'
                   'while [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"',
        "systemctl": 'echo "systemctl $*" >> "$FAKE_LOG"',
        "sync": 'true',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    # the whole environment, not only its interpreter: a lone symlinked python finds no
    # pyvenv.cfg beside it and runs without the environment's packages
    (prefix / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    run_dir = tmp_path / "run"
    me = pwd.getpwuid(os.getuid())  # the service user's stand-in
    ids = f"uid={os.getuid()},gid={os.getgid()}"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_STICK": str(stick), "DOORLOCK_PREFIX": str(prefix), "DOORLOCK_CONFIG": str(config),
           "DOORLOCK_KEY": str(key_file), "DOORLOCK_USER": me.pw_name, "RUNTIME_DIRECTORY": str(run_dir)}
    r = subprocess.run([str(FW / "doorlock-stick"), dev.name], capture_output=True, text=True,
                       timeout=120, env=env, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert load_gallery(gallery / "gallery.npz").names == ["Barack Obama"]
    calls = log.read_text().splitlines()
    print("\n".join(calls))
    first = calls[0].split()
    assert first[:5] == ["mount", "-n", "-t", "vfat", "-o"] and first[5].startswith(f"ro,nosuid,nodev,noexec,{ids}")
    assert first[-2:] == [f"/dev/{dev.name}", str(run_dir / "stick")]
    assert calls[1].startswith(f"setpriv --reuid={os.getuid()} --regid={os.getgid()} --init-groups -- "[:60])
    assert calls[2:] == ["systemctl --quiet is-active doorlock.service",
                         "systemctl --no-block reload doorlock.service",
                         calls[4], calls[5], calls[6], calls[7]]
    assert calls[4].startswith("mount -n -o remount,rw,nosuid") and calls[5].startswith("setpriv")
    assert calls[6].startswith("mount -n -o remount,ro") and calls[7] == f"umount -n {run_dir / 'stick'}"
    report = (run_dir / "stick" / "doorlock" / "report.txt").read_text()
    assert "enrolled  Barack Obama (1 photo(s))" in report
    assert report == (run_dir / "report.txt").read_text()
    assert "asked the kiosk to reload its gallery" in r.stdout

    # the same stick again: refused (already applied), no reload, still a report, exit 2
    log.write_text("")
    r = subprocess.run([str(FW / "doorlock-stick"), dev.name], capture_output=True, text=True,
                       timeout=120, env=env, cwd=REPO)
    assert r.returncode == 2 and "already applied" in r.stderr
    assert not any("reload" in c for c in log.read_text().splitlines())
    assert "REFUSED" in (run_dir / "stick" / "doorlock" / "report.txt").read_text()


def test_install_script_moves_an_old_config_to_the_packaged_bundle(tmp_path):
    """An update keeps the administrator's doorlock.toml; a bundle line from before the
    bundle was packaged ("models/default", a folder that is gone) is rewritten to "default",
    with the old file kept beside it, and nothing else in the file changes."""
    root = tmp_path / "pi"
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text("[all]\n")
    etc = root / "etc" / "doorlock"
    etc.mkdir(parents=True)
    shipped = (FW / "doorlock.toml").read_text()
    assert shipped.count('\nbundle = "default"\n') == 1
    old = shipped.replace('\nbundle = "default"\n', '\nbundle = "models/default"   # as installed\n')
    old = old.replace("consecutive_frames = 3", "consecutive_frames = 4")  # the administrator's
    (etc / "doorlock.toml").write_text(old)
    r = subprocess.run(["bash", str(FW / "install.sh"), "--root", str(root)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    assert 'recognition.bundle "models/default" is now the packaged "default"' in r.stdout
    assert (etc / "doorlock.toml.bak").read_text() == old
    now = (etc / "doorlock.toml").read_text()
    assert now == old.replace('bundle = "models/default"   # as installed', 'bundle = "default"   # as installed')
    cfg = load_config(etc / "doorlock.toml")
    assert cfg.recognition.bundle == "default" and cfg.recognition.consecutive_frames == 4
