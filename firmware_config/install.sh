#!/bin/bash
# Install doorlock on Raspberry Pi OS Bookworm (64-bit), from a checkout of this repository:
#
#   sudo ./firmware_config/install.sh            install (or update) and start the lock
#   ./firmware_config/install.sh --root DIR      lay the files out under DIR only (a dry run
#                                                 for tests: no apt, users, chown or systemctl)
#
# What it does (each step is safe to repeat):
#   1. apt packages: python3-venv, picamera2 and lgpio (camera and GPIO come from the OS);
#   2. two system users (no login, no home): `doorlock` runs the kiosk (groups gpio, video,
#      render) and never sees the key; `doorlock-enrol` checks sticks and writes the
#      gallery, and is the only user that can read the key;
#   3. the code in /opt/doorlock (owned by root, read-only for the service) and its
#      virtual environment /opt/doorlock/.venv (with the OS's picamera2 and lgpio);
#   4. /etc/doorlock/doorlock.toml (kept if present) and the device enrolment key
#      /etc/doorlock/enrol.key (made once, root:doorlock-enrol 0640: copy it to the
#      administrator's computer to sign sticks);
#   5. /var/lib/doorlock (root, 0755) with gallery/ (doorlock-enrol:doorlock 2750: the
#      kiosk reads, enrolment writes; an empty gallery until the first enrolment) and
#      kiosk/ (the kiosk's own files), and /var/log/doorlock (audit log);
#   6. the systemd units, the udev rule for enrolment sticks, the hardware watchdog;
#   7. the camera/display/watchdog lines appended once to /boot/firmware/config.txt;
#   8. enables and (re)starts doorlock.service. Reboot once if config.txt changed.
set -euo pipefail

root=""
if [ "${1:-}" = "--root" ]; then
    root="${2:?--root needs a directory}"
    mkdir -p "$root"
    root="$(cd "$root" && pwd)"
elif [ -n "${1:-}" ]; then
    echo "usage: sudo $0   (or $0 --root DIR for a dry run)" >&2
    exit 2
fi
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/opt/doorlock"
etc="$root/etc/doorlock"
units="$root/etc/systemd/system"
rules="$root/etc/udev/rules.d"
sysconf="$root/etc/systemd/system.conf.d"
bootcfg="$root/boot/firmware/config.txt"
user=doorlock           # the kiosk
enrol_user=doorlock-enrol  # stick verification and gallery writes: the key's only reader

run() {  # a step that needs the real system: shown, not run, with --root
    if [ -n "$root" ]; then echo "(dry run) $*"; else "$@"; fi
}

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo $0" >&2
    exit 1
fi

echo "1. packages"
run apt-get install -y --no-install-recommends python3-venv python3-picamera2 python3-lgpio util-linux

echo "2. users $user and $enrol_user"
if [ -z "$root" ]; then
    for group in gpio video render; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! id "$user" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /var/lib/doorlock/kiosk \
            --shell /usr/sbin/nologin --user-group --groups gpio,video,render "$user"
    else
        usermod -a -G gpio,video,render "$user"
    fi
    if ! id "$enrol_user" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /var/lib/doorlock/gallery \
            --shell /usr/sbin/nologin --user-group "$enrol_user"
    fi
    # an older install let the kiosk's group read the key: not any more
    if id -nG "$user" | tr ' ' '\n' | grep -qx "$enrol_user"; then
        gpasswd -d "$user" "$enrol_user" >/dev/null
    fi
fi

echo "3. code in /opt/doorlock"
mkdir -p "$prefix"
if [ "$src" != "$(cd "$prefix" && pwd)" ]; then
    tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=__pycache__ \
        --exclude=./.pytest_cache -cf - . | tar -C "$prefix" --no-same-owner -xf -
fi
chmod 0755 "$prefix/firmware_config/doorlock-stick"
run chown -R root:root "$prefix"
if [ -z "$root" ]; then
    [ -x "$prefix/.venv/bin/python" ] || python3 -m venv --system-site-packages "$prefix/.venv"
    "$prefix/.venv/bin/pip" install -q --disable-pip-version-check -r "$prefix/requirements.txt"
fi

echo "4. configuration in /etc/doorlock"
install -d -m 0755 "$etc"
if [ ! -e "$etc/doorlock.toml" ]; then
    install -m 0644 "$src/firmware_config/doorlock.toml" "$etc/doorlock.toml"
else
    echo "   keeping $etc/doorlock.toml (the shipped one: $prefix/firmware_config/doorlock.toml)"
    # Earlier versions had the default bundle in a folder of the checkout, models/default; it is
    # now packaged in edge and named "default". Only that exact line changes; a copy is kept.
    old_bundle='^([[:space:]]*bundle[[:space:]]*=[[:space:]]*)"models/default"([[:space:]]*(#.*)?)$'
    if grep -Eq "$old_bundle" "$etc/doorlock.toml"; then
        cp -p "$etc/doorlock.toml" "$etc/doorlock.toml.bak"
        sed -E -i "s|$old_bundle|\\1\"default\"\\2|" "$etc/doorlock.toml"
        echo "   recognition.bundle \"models/default\" is now the packaged \"default\" (the old file: doorlock.toml.bak)"
    fi
fi
if [ ! -e "$etc/enrol.key" ]; then
    if [ -n "$root" ]; then py="${PYTHON:-python3}"; else py="$prefix/.venv/bin/python"; fi
    (cd "$prefix" && "$py" -m edge keygen --out "$etc/enrol.key")
fi
run chown "root:$enrol_user" "$etc/enrol.key"
chmod 0640 "$etc/enrol.key"

echo "5. state and log directories"
# /var/lib/doorlock itself is root's: the kiosk owns only kiosk/, so it can neither write
# the gallery nor rename the gallery folder away and put one of its own in its place.
install -d -m 0755 "$root/var/lib/doorlock"
run chown root:root "$root/var/lib/doorlock"
install -d -m 2750 "$root/var/lib/doorlock/gallery"
run chown -R "$enrol_user:$user" "$root/var/lib/doorlock/gallery"
chmod -R u+rwX,g+rX,g-w,o-rwx "$root/var/lib/doorlock/gallery"  # older installs: 0600 files
install -d -m 0700 "$root/var/lib/doorlock/kiosk"
install -d -m 0750 "$root/var/log/doorlock"
run chown -R "$user:$user" "$root/var/lib/doorlock/kiosk" "$root/var/log/doorlock"
if [ -z "$root" ]; then
    # An empty gallery for this bundle, so that the kiosk runs (door locked) until the
    # first enrolment stick; or the installed bundle recorded in the gallery (its pin: a
    # bundle edited after this is refused by the kiosk and by enrolment).
    (cd "$prefix" && setpriv --reuid="$(id -u "$enrol_user")" --regid="$(id -g "$enrol_user")" --init-groups -- \
        "$prefix/.venv/bin/python" -c '
import sys
from edge.app import install_gallery
from edge.config import load_config
print("  ", install_gallery(load_config(sys.argv[1])))
' "$etc/doorlock.toml")
fi

echo "6. systemd units, udev rule, hardware watchdog"
install -d -m 0755 "$units" "$rules" "$sysconf"
install -m 0644 "$src/systemd/doorlock.service" "$src/systemd/doorlock-enrol@.service" "$units/"
install -m 0644 "$src/firmware_config/99-doorlock-stick.rules" "$rules/"
install -m 0644 "$src/firmware_config/doorlock-watchdog.conf" "$sysconf/"

echo "7. /boot/firmware/config.txt"
changed_boot=no
if [ -n "$root" ] || [ -e "$bootcfg" ]; then
    mkdir -p "$(dirname "$bootcfg")"
    touch "$bootcfg"
    if ! grep -q '^# --- doorlock ' "$bootcfg"; then
        cp -p "$bootcfg" "$bootcfg.before-doorlock"
        { echo; cat "$src/firmware_config/config.txt"; } >> "$bootcfg"
        changed_boot=yes
    else
        echo "   already has the doorlock lines"
    fi
else
    echo "   $bootcfg not found (not a Raspberry Pi?): skipped"
fi

echo "8. enable and start"
run systemctl daemon-reload
run udevadm control --reload-rules
run systemctl enable doorlock.service
run systemctl restart doorlock.service
echo "done. Status: systemctl status doorlock; logs: journalctl -u doorlock -f"
if [ "$changed_boot" = yes ]; then
    echo "config.txt changed: reboot once (sudo reboot) for the camera and watchdog settings"
fi
