"""Remote unlock by MQTT command, off by default ([mqtt] remote_unlock; docs/mqtt.md).

A command is untrusted bytes from the broker: at most MAX_COMMAND_BYTES of strict JSON,
one object of known keys. It opens the door only through the Door's own path (its
refusal(): none during an input fault or a lockout; then pulse(by="remote")), at most
remote_unlock_max times per window on an injectable clock. With a command key
(hmac_key_file) every command must also carry a fresh timestamp, a nonce not seen before
and an HMAC-SHA256 over door, action, time, nonce and sender, so a broker account alone
cannot open the door. Every command, done or refused, is one audit line, source "mqtt".
`python -m edge.building.remote_unlock keygen | command` makes the key and signed commands.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from edge.errors import DoorlockError
from edge.service.fsutil import PrivateFileError, atomic_write_bytes, read_private_file

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 1024
KEY_HEADER = "doorlock-command-key-v1"
KEY_BYTES = 32
MAX_NONCES = 10_000
ACTIONS = ("unlock", "lock")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")
_KEYS = {"action", "by", "ts", "nonce", "hmac"}


class CommandError(DoorlockError):
    """A command refused before it reaches the door; the message is its audit reason."""


def _no_constants(name: str):
    raise CommandError(f"not strict JSON ({name})")


def _pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise CommandError("a key given twice")
    return dict(pairs)


def parse_command(payload: bytes) -> dict:
    """The command in `payload`, checked: size, UTF-8, strict JSON, one object with only
    known keys of the right types. Raises CommandError (one line)."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command of {len(payload)} bytes (limit {MAX_COMMAND_BYTES})")
    try:
        text = payload.decode("utf-8")
        cmd = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_pairs)
    except UnicodeDecodeError:
        raise CommandError("command is not UTF-8") from None
    except (ValueError, RecursionError):
        raise CommandError("command is not JSON") from None
    if not isinstance(cmd, dict):
        raise CommandError("command is not a JSON object")
    if unknown := set(cmd) - _KEYS:
        raise CommandError(f"unknown key(s) {sorted(unknown)[:3]!r}"[:120])
    if cmd.get("action") not in ACTIONS:
        raise CommandError("action must be \"unlock\" or \"lock\"")
    by = cmd.get("by", "")
    if not isinstance(by, str) or len(by) > 64 or not by.isprintable():
        raise CommandError("by must be a name of at most 64 printable characters")
    ts = cmd.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or not 0 < ts < 2**40):
        raise CommandError("ts must be whole seconds since 1970")
    if "nonce" in cmd and not (isinstance(cmd["nonce"], str) and _NONCE_RE.match(cmd["nonce"])):
        raise CommandError("nonce must be 16..64 of A-Z, a-z, 0-9, _ and -")
    if "hmac" in cmd and not (isinstance(cmd["hmac"], str) and _HEX_RE.match(cmd["hmac"])):
        raise CommandError("hmac must be 64 lowercase hex digits")
    return cmd


def signed_text(base_topic: str, action: str, ts: int, nonce: str, by: str = "") -> bytes:
    """What the HMAC covers: this door (its topic), the action, the time, the nonce, the sender."""
    return f"doorlock-command-v1\n{base_topic}\n{action}\n{ts}\n{nonce}\n{by}".encode()


def make_command(key: bytes, base_topic: str, action: str, by: str = "",
                 ts: int | None = None, nonce: str | None = None) -> dict:
    """A signed command for the door at `base_topic` (the sender's side)."""
    ts = int(time.time()) if ts is None else ts
    nonce = nonce or secrets.token_urlsafe(18)
    mac = hmac.new(key, signed_text(base_topic, action, ts, nonce, by), hashlib.sha256).hexdigest()
    return {"action": action, "by": by, "ts": ts, "nonce": nonce, "hmac": mac}


class RemoteUnlock:
    """Verifies commands and acts on the Door. `handle(payload, retained)` runs in the
    MQTT client's thread; `clock` (monotonic) paces the rate limit, `wall` (Unix time)
    judges a command's timestamp."""

    def __init__(self, door, audit, base_topic: str, *, max_unlocks: int = 3,
                 window_s: float = 60.0, key: bytes | None = None, max_age_s: float = 30.0,
                 max_refusals_logged: int = 10, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.door, self.audit, self.base_topic = door, audit, base_topic
        self.max_unlocks, self.window_s = int(max_unlocks), float(window_s)
        self.key, self.max_age_s = key, float(max_age_s)
        self.max_refusals_logged = int(max_refusals_logged)
        self.clock, self.wall = clock, wall
        self._mutex = threading.Lock()
        self._unlocks: deque[float] = deque()
        self._refusals: deque[float] = deque()
        self._suppressed = 0
        self._nonces: dict[str, int] = {}

    def _audit(self, event: str, **extra: Any) -> dict:
        record = {"event": event, "source": "mqtt", **extra}
        if self.audit is not None:
            try:
                record = self.audit.write(event, source="mqtt", **extra)
            except Exception as exc:  # a full disk: the command is still refused or done
                log.error("audit log write failed: %s", exc)
        return record

    def _refuse(self, reason: str, **extra: Any) -> dict:
        """One audit line per refusal, at most max_refusals_logged per window, so a flood
        of junk cannot rotate the door's real records out of the audit log."""
        now = self.clock()
        while self._refusals and now - self._refusals[0] > self.window_s:
            self._refusals.popleft()
        log.warning("remote command refused: %s", reason)
        if len(self._refusals) >= self.max_refusals_logged:
            self._suppressed += 1
            return {"event": "remote_refused", "reason": reason, "logged": False}
        self._refusals.append(now)
        if self._suppressed:
            extra["suppressed"], self._suppressed = self._suppressed, 0
        return self._audit("remote_refused", reason=reason, **extra)

    def _check_fresh(self, cmd: dict) -> None:
        if self.key is None:
            if "hmac" in cmd:
                raise CommandError("signed command, but this door has no command key "
                                   "(mqtt.hmac_key_file)")
            if "ts" in cmd and abs(self.wall() - cmd["ts"]) > self.max_age_s:
                raise CommandError(f"stale command (ts more than {self.max_age_s:g} s from the door's clock)")
            return
        if not all(k in cmd for k in ("ts", "nonce", "hmac")):
            raise CommandError("unsigned command (this door needs ts, nonce and hmac)")
        text = signed_text(self.base_topic, cmd["action"], cmd["ts"], cmd["nonce"], cmd.get("by", ""))
        good = hmac.new(self.key, text, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(good, cmd["hmac"]):
            raise CommandError("bad hmac (wrong key, door or content)")
        now = self.wall()
        for nonce, ts in list(self._nonces.items()):   # past the age limit a replay is stale anyway
            if abs(now - ts) > self.max_age_s:
                del self._nonces[nonce]
        if abs(now - cmd["ts"]) > self.max_age_s:
            raise CommandError(f"stale command (ts more than {self.max_age_s:g} s from the door's clock)")
        if cmd["nonce"] in self._nonces:
            raise CommandError("replayed command (nonce seen before)")
        if len(self._nonces) >= MAX_NONCES:
            raise CommandError("too many commands within the age limit")
        self._nonces[cmd["nonce"]] = cmd["ts"]

    def handle(self, payload: bytes, retained: bool = False) -> dict:
        """Verify one command and act on it; returns its audit record."""
        with self._mutex:
            if retained:   # a retained unlock would open the door at every reconnect
                return self._refuse("retained command (commands must be sent with retain off)")
            try:
                cmd = parse_command(bytes(payload))
                self._check_fresh(cmd)
            except CommandError as exc:
                return self._refuse(str(exc))
            who = {"by": cmd.get("by") or None, "auth": "hmac" if self.key else "broker"}
            if cmd["action"] == "lock":
                self.door.lock()
                return self._audit("remote_lock", **who)
            now = self.clock()
            while self._unlocks and now - self._unlocks[0] > self.window_s:
                self._unlocks.popleft()
            if len(self._unlocks) >= self.max_unlocks:
                return self._refuse(f"rate limit: {self.max_unlocks} remote unlocks within "
                                    f"{self.window_s:g} s", **who)
            self._unlocks.append(now)
            why = self.door.refusal()
            if why:
                return self._refuse(f"door: {why}", **who)
            left = self.door.pulse(by="remote")
            if left <= 0:
                return self._refuse("door: the relay did not open", **who)
            return self._audit("remote_unlock", open_s=round(left, 2), **who)


# -- the command key ----------------------------------------------------------------------

def write_command_key(path: str | os.PathLike) -> bytes:
    """A new command key in a file of mode 0600 (never over an existing file)."""
    key = secrets.token_bytes(KEY_BYTES)
    try:   # whole or not at all: a power cut never leaves half a key behind
        atomic_write_bytes(path, f"{KEY_HEADER} {key.hex()}\n".encode(), mode=0o600, overwrite=False)
    except OSError as exc:
        raise DoorlockError(f"{path}: cannot write the command key ({exc.strerror or exc})") from None
    return key


def load_command_key(path: str | os.PathLike) -> bytes:
    """Read a command key; refuses links, non-files, files readable by everyone, bad text."""
    try:
        data = read_private_file(path, 256)
    except PrivateFileError as exc:
        if exc.why in (exc.NOT_REGULAR, exc.EXPOSED):
            raise DoorlockError(f"mqtt.hmac_key_file {path}: must be a regular file not readable "
                                "by everyone (chmod 600)") from None
        if exc.why != exc.TOO_LARGE:
            why = "a symbolic link" if exc.why == exc.LINK else exc.strerror
            raise DoorlockError(f"mqtt.hmac_key_file {path}: cannot read the command key ({why})") from None
        data = b""   # too large for a key: refused as not one, below
    try:
        header, hexkey = data.decode("ascii").split()
        key = bytes.fromhex(hexkey)
    except (UnicodeDecodeError, ValueError):
        key, header = b"", ""
    if header != KEY_HEADER or len(key) != KEY_BYTES:
        raise DoorlockError(f"mqtt.hmac_key_file {path}: not a doorlock command key "
                            f"(make one with python -m edge.building.remote_unlock keygen --out {path})")
    return key


def main(argv: list[str] | None = None) -> int:
    """keygen --out FILE | command --key FILE --topic BASE [--by NAME] unlock|lock"""
    p = argparse.ArgumentParser(prog="python -m edge.building.remote_unlock",
                                description="The command key and signed remote commands.")
    sub = p.add_subparsers(dest="what", required=True)
    k = sub.add_parser("keygen", help="make a command key (door and sender hold the same file)")
    k.add_argument("--out", required=True)
    c = sub.add_parser("command", help="print a signed command (for mosquitto_pub -m)")
    c.add_argument("--key", required=True)
    c.add_argument("--topic", required=True, help="the door's base topic, e.g. doorlock/front")
    c.add_argument("--by", default="", help="who sends it (in the door's audit log)")
    c.add_argument("action", choices=ACTIONS)
    args = p.parse_args(argv)
    try:
        if args.what == "keygen":
            write_command_key(args.out)
            print(f"wrote a command key to {args.out} (mode 0600); install the same file on "
                  "the door and name it in mqtt.hmac_key_file")
        else:
            cmd = make_command(load_command_key(args.key), args.topic, args.action, args.by)
            print(json.dumps(cmd, separators=(",", ":")))
    except DoorlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
