"""The kiosk as a systemd service: readiness, the watchdog, status, reload on SIGHUP.

systemd's notify protocol (sd_notify(3)) without libsystemd; a no-op without
$NOTIFY_SOCKET. WATCHDOG=1 follows each healthy frame, so a loop that hangs or only
faults is killed and restarted by systemd, with the relay off. `GalleryReloader` reloads
the gallery on SIGHUP: the signal handler only sets a flag and the reload runs in the
kiosk loop between two frames (a frame listener), so the matcher never sees half a
gallery; a gallery that fails to load is logged and the one in use kept.
The messages sent and when: docs/install.md, "The systemd service".
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

log = logging.getLogger(__name__)

# How long a state change (READY, RELOADING, STOPPING) may wait for room in systemd's queue.
STATE_RETRY_S = 2.0


class Notifier:
    """sd_notify: send state changes to systemd over $NOTIFY_SOCKET."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET") or ""
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        elif addr and not addr.startswith("/"):
            log.warning("ignoring NOTIFY_SOCKET=%r: not a path or @name", addr)
            addr = ""
        self.address = addr or None
        wpid = env.get("WATCHDOG_PID")
        self.watchdog_for_us = wpid is None or wpid == str(os.getpid())
        try:
            usec = int(env.get("WATCHDOG_USEC") or 0)
        except ValueError:
            usec = 0
        self.watchdog_s = usec / 1e6 if usec > 0 and self.watchdog_for_us else None
        self._sock = None
        self._warned = False
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str, retry_s: float = 0.0) -> bool:
        """Send one notification (fields like "READY=1"); False if it could not be sent.

        The socket never blocks: a busy systemd costs a dropped WATCHDOG or STATUS ping,
        never a stalled lock. A state change (READY, RELOADING, STOPPING) must not be lost:
        systemd would keep the unit "reloading" waiting for READY=1, so those retry for up
        to `retry_s` while the receiver's queue is full."""
        if self.address is None:
            return False
        msg = "\n".join(fields).encode("utf-8")
        deadline = time.monotonic() + retry_s
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                           | socket.SOCK_NONBLOCK)
            while True:
                try:
                    self._sock.sendto(msg, self.address)
                    return True
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.005)
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError as exc:
            if not self._warned:  # once: the lock itself goes on either way
                log.warning("systemd notification failed (%s): %s", self.address.lstrip("\0"), exc)
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []), retry_s=STATE_RETRY_S)

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1") if self.watchdog_for_us else False

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []), retry_s=STATE_RETRY_S)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Frame listener: WATCHDOG=1 after every healthy frame, STATUS= every `status_every_s`."""

    def __init__(self, notifier: Notifier | None = None, status_every_s: float = 5.0,
                 clock=time.monotonic, describe=None):
        self.notifier = notifier or Notifier()
        self.status_every_s = status_every_s
        self.clock = clock
        self.describe = describe  # () -> str for STATUS=, e.g. frame and fault counts
        self.pings = 0
        self.unhealthy = 0
        self._last_status = None

    def ready(self, status: str | None = None) -> bool:
        return self.notifier.ready(status)

    def __call__(self, frame, face, decision) -> None:
        healthy = frame is not None and (decision is None or decision.event != "fault")
        if not healthy:
            self.unhealthy += 1
            return
        if self.notifier.ping():
            self.pings += 1
        now = self.clock()
        if self.describe is not None and (self._last_status is None
                                          or now - self._last_status >= self.status_every_s):
            self._last_status = now
            self.notifier.status(self.describe())


class GalleryReloader:
    """Frame listener that reloads the gallery after SIGHUP (see the module doc).

    `load()` returns the new gallery (raising on a bad one); `apply(gallery)` installs it
    (prepare the matcher, swap the kiosk's gallery)."""

    def __init__(self, load, apply, notifier: Notifier | None = None):
        self.load, self.apply = load, apply
        self.notifier = notifier or Notifier()
        self.pending = False
        self.reloads = 0
        self.failures = 0

    def request(self, signum=None, frame=None) -> None:
        """The SIGHUP handler: only a flag (safe in a signal handler)."""
        self.pending = True

    def install(self, signum: int = signal.SIGHUP):
        """Handle `signum` from now on; returns the previous handler."""
        return signal.signal(signum, self.request)

    def __call__(self, frame=None, face=None, decision=None) -> None:
        if not self.pending:
            return
        self.pending = False
        self.notifier.send("RELOADING=1", "STATUS=reloading the gallery", retry_s=STATE_RETRY_S)
        try:
            gallery = self.load()
            self.apply(gallery)
        except Exception as exc:  # keep the gallery in use; the door stays as safe as it was
            self.failures += 1
            log.error("gallery reload failed, keeping the gallery in use: %s", exc)
            self.notifier.ready(f"gallery reload failed: {exc}")
            return
        self.reloads += 1
        n = len(gallery)
        log.info("gallery reloaded: %d people enrolled", n)
        print(f"gallery reloaded: {n} people enrolled", flush=True)
        self.notifier.ready(f"gallery reloaded: {n} people enrolled")
