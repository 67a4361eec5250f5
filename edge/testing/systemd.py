"""A stand-in for systemd's notify socket ($NOTIFY_SOCKET): receives what the kiosk's
Notifier sends and lets a test wait for each message in order, never skipping one."""

from __future__ import annotations

import os
import socket
import tempfile
import time


class FakeSystemd:
    """A unix datagram socket standing in for systemd's notify socket: `address` is what
    NOTIFY_SOCKET is set to (a path, or "@name" for an abstract socket)."""

    def __init__(self, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"doorlock-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="dl-notify-", dir="/tmp")  # short: sun_path limit
            self.address = os.path.join(self.dir, "notify.sock")
            self.sock.bind(self.address)
        self.messages: list[dict] = []
        self.cursor = 0  # wait_for's read position in messages

    def receive(self, timeout: float = 0.0) -> list[dict]:
        """Messages that arrived (waiting up to `timeout` for the first one); all are
        also appended to `messages`, where `wait_for` reads them in order."""
        got = []
        self.sock.settimeout(timeout if timeout > 0 else 0.0)  # 0.0: non-blocking
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, socket.timeout):
                break
            msg = dict(line.split("=", 1) for line in data.decode().splitlines())
            got.append(msg)
            self.sock.settimeout(0.0)
        self.messages += got
        return got

    def _next_match(self, predicate):
        """The first message at or after the read cursor that matches, moving the
        cursor just past it: a message received in the same batch as an earlier
        match is offered to the next wait_for, never skipped."""
        while self.cursor < len(self.messages):
            msg = self.messages[self.cursor]
            self.cursor += 1
            if predicate(msg):
                return msg
        return None

    def wait_for(self, predicate, timeout: float = 60.0, proc=None) -> dict:
        """The next message (after the last one returned) that satisfies `predicate`,
        waiting up to `timeout` seconds for it. With `proc` (a subprocess.Popen, the
        service under test), its exit before such a message fails at once, with its
        stderr. Fails with AssertionError when none comes."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next_match(predicate)
            if msg is not None:
                return msg
            if time.monotonic() >= deadline:
                break
            if proc is not None and proc.poll() is not None:
                self.receive()
                msg = self._next_match(predicate)
                if msg is not None:
                    return msg
                out, err = proc.communicate()
                raise AssertionError(f"kiosk exited ({proc.returncode}) before the expected "
                                     f"notification:\n{(err or '')[-3000:]}")
            self.receive(timeout=0.2)
        raise AssertionError(f"no such notification within {timeout} s; got {self.messages[-5:]}")

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            os.unlink(self.address)
            os.rmdir(self.dir)

    def __enter__(self) -> "FakeSystemd":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
