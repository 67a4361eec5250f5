"""The door's MQTT publisher ([mqtt], docs/mqtt.md): audit events, retained state, Home
Assistant discovery, the online/offline last will, and remote commands when enabled.

The kiosk never waits on the network: `publish(record)`, an audit listener, only appends
to a bounded in-memory queue. One publisher thread owns the paho-mqtt client (MQTT 5,
driven by `loop()`): it connects and reconnects with back-off, drains the queue, polls
the door's state and publishes it retained when it changes. While the broker is away
events queue up to queue_size; then the oldest are dropped and counted ("dropped" in the
state): the audit log stays the record of truth. paho is imported only when started.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable

from edge.errors import DoorlockError
from edge.service.fsutil import PrivateFileError, read_private_file
from edge.building.ha_discovery import discovery_messages, ha_event, topics

log = logging.getLogger(__name__)

MAX_PACKET_BYTES = 64 * 1024   # told to the broker (MQTT 5): nothing larger reaches the door
PAHO_QUEUE = 100               # messages the client may hold un-acknowledged
COALESCE_S = 10.0              # the HA event entity gets one "refused" per this long
_PRIVATE = ("image_file", "image_error")


def public_record(record: dict, names: bool = False, scores: bool = False) -> dict:
    """What of an audit record goes on the network: never images, names only with
    publish_names (identity, best), scores only with publish_scores (z)."""
    out = {k: v for k, v in record.items() if k not in _PRIVATE}
    if not scores:
        out.pop("z", None)
    if not names:
        out.pop("identity", None)
        out.pop("best", None)
    return out


def read_password(path: str) -> str:
    """mqtt.password_file: one line, no symbolic link, not readable by everyone;
    DoorlockError otherwise."""
    try:
        data = read_private_file(path, 4096)
    except PrivateFileError as exc:
        if exc.why in (exc.NOT_REGULAR, exc.EXPOSED):
            raise DoorlockError(f"mqtt.password_file {path}: must be a regular file not "
                                "readable by everyone (chmod 600)") from None
        if exc.why == exc.TOO_LARGE:
            raise DoorlockError(f"mqtt.password_file {path}: expected the password on one line") from None
        why = "a symbolic link" if exc.why == exc.LINK else exc.strerror
        raise DoorlockError(f"mqtt.password_file {path}: cannot read it ({why})") from None
    text = data.decode("utf-8", "replace").rstrip("\r\n")
    if not text or "\n" in text:
        raise DoorlockError(f"mqtt.password_file {path}: expected the password on one line")
    return text


def tls_context(m) -> ssl.SSLContext:
    """Verifies the broker's certificate and name (ca_file, or the system's CAs)."""
    try:
        ctx = ssl.create_default_context(cafile=m.ca_file or None)
        if m.cert_file:
            ctx.load_cert_chain(m.cert_file, m.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise DoorlockError(f"mqtt TLS files: {getattr(exc, 'strerror', None) or exc}") from None
    return ctx


class MqttPublisher:
    """`start()`, then `publish(record)` from any thread, `close()` at the end.

    state_fn() -> dict: the door's state, polled every poll_s in the publisher's thread
    (its "frames" becomes "fps"); on_command(payload, retained): remote commands, only
    subscribed to when given. `clock` paces fps and coalescing."""

    def __init__(self, m, *, version: str = "", state_fn: Callable[[], dict] | None = None,
                 has_contact: bool = False,
                 on_command: Callable[[bytes, bool], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, poll_s: float = 1.0,
                 fps_window_s: float = 10.0, max_backoff_s: float = 30.0):
        self.m, self.version, self.topics = m, version, topics(m)
        self.state_fn, self.has_contact, self.on_command = state_fn, has_contact, on_command
        self.clock, self.poll_s, self.fps_window_s = clock, poll_s, fps_window_s
        self.max_backoff_s = max_backoff_s
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, Any]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self.connected = threading.Event()
        self.dropped = self.sent = self.faults = self.seq = 0
        self.connects = self.attempts = 0
        self._connack = False          # a CONNACK came in answer to the last attempt
        self.last_error: str | None = None
        self._last_event: dict | None = None
        self._last_person: str | None = None
        self._last_refused = float("-inf")
        self._fps: float | None = None
        self._fps_mark: tuple[float, int] | None = None
        self._state_sent: str | None = None
        self._flush_until = 0.0
        self.client_id = m.client_id or f"doorlock-{m.door_id}"
        self._password = read_password(m.password_file) if m.password_file else None
        self._tls = tls_context(m) if m.tls else None

    # -- the kiosk's side: never blocks on the network --------------------------------------

    def publish(self, record: dict) -> None:
        """Queue an audit record (an AuditLog listener); returns at once."""
        public = public_record(record, self.m.publish_names, self.m.publish_scores)
        activity = ha_event(record, self.m.publish_names)
        now = self.clock()
        with self._cond:
            self.seq += 1
            public["seq"] = self.seq
            self._put((self.topics.event, public))
            if activity is not None:
                if activity["event_type"] == "refused":
                    if now - self._last_refused < COALESCE_S:
                        activity = None
                    else:
                        self._last_refused = now
                if activity is not None:
                    self._put((self.topics.activity, activity))
                    self._last_event = {"event": record.get("event"), "time": record.get("time")}
            if record.get("event") == "fault":
                self.faults += 1
            if record.get("event") == "granted" and record.get("identity"):
                self._last_person = str(record["identity"])
            self._cond.notify()

    def _put(self, item) -> None:
        if len(self._queue) >= self.m.queue_size:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- the publisher thread ----------------------------------------------------------------

    def start(self) -> "MqttPublisher":
        import paho.mqtt.client as paho
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._paho = paho
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=self.client_id,
                             protocol=paho.MQTTv5)
        if self.m.username:
            client.username_pw_set(self.m.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        client.max_queued_messages_set(PAHO_QUEUE)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = MAX_PACKET_BYTES
        props.SessionExpiryInterval = 0     # no stored session: no stale commands queue up
        self._connect_props = props
        self._client = client
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def _where(self) -> str:
        return f"{self.m.host}:{self.m.port}"

    def _error(self, text: str) -> None:
        """Log a connection problem once (not at every retry)."""
        if text != self.last_error:
            log.error("mqtt: %s", text)
            self.last_error = text

    def _closed_early(self, why: str) -> str:
        """The broker hung up before its CONNACK: with TLS and no client certificate, most
        likely a broker that requires one (TLS 1.3 reports that only after the handshake)."""
        hint = ""
        if self._tls is not None and not self.m.cert_file:
            hint = (" over TLS without a client certificate (if the broker requires one, set "
                    "mqtt.cert_file and mqtt.key_file)")
        return (f"the broker {self._where()} closed the connection before accepting it{hint}: "
                f"{why}; retrying, events queue in memory")

    def _connect_failed(self, exc: Exception) -> str:
        """One line for a failed connect. A broker that wants a client certificate shows up,
        depending on timing, as a TLS alert or as a connection reset in the handshake."""
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if self._tls is not None and not self.m.cert_file and (
                isinstance(exc, ConnectionResetError)
                or "CERTIFICATE_REQUIRED" in str(getattr(exc, "reason", ""))):
            return self._closed_early(why)
        tls = " over TLS (is the broker's certificate trusted by mqtt.ca_file?)" \
            if self._tls is not None and isinstance(exc, ssl.SSLError) else ""
        return (f"cannot connect to the broker {self._where()}{tls}: {why}; "
                "retrying, events queue in memory")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self._connack = True
        if reason.is_failure:
            hint = ""
            if reason.value in (0x86, 0x87, 0x8C):   # bad user name or password, not authorised
                hint = " (check mqtt.username, mqtt.password_file or the client certificate)"
            self._error(f"broker {self._where()} refused the connection: {reason}{hint}; "
                        "the door works on, events queue in memory")
            return
        self.connects += 1
        log.info("mqtt: connected to %s as %s", self._where(), self.client_id)
        self.last_error = None
        client.publish(self.topics.status, "online", qos=1, retain=True)
        if self.m.discovery:
            for topic, payload in discovery_messages(self.m, self.version, self.has_contact):
                client.publish(topic, payload, qos=1, retain=True)
        if self.on_command is not None:
            client.subscribe(self.topics.command, qos=1)
        self._state_sent = None    # send the state again: the broker may have lost it
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stop.is_set():
            self._error(f"lost the broker {self._where()} ({reason}); reconnecting, events "
                        "queue in memory")

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic != self.topics.command or self.on_command is None:
            return
        try:
            self.on_command(msg.payload, bool(msg.retain))
        except Exception as exc:  # a command must never stop the publisher
            log.error("mqtt: remote command failed: %s", exc)

    def _run(self) -> None:
        first = min(1.0, self.max_backoff_s)
        client, backoff, next_try, next_poll = self._client, first, 0.0, 0.0
        started = False
        while True:
            stopping = self._stop.is_set()
            if stopping and (not self.connected.is_set() or not self.queued
                             or time.monotonic() > self._flush_until):
                break
            now = time.monotonic()
            if not self.connected.is_set() and now >= next_try:
                if stopping:
                    break
                self.attempts += 1
                try:
                    rc = (client.reconnect() if started else
                          client.connect(self.m.host, self.m.port, self.m.keepalive_s,
                                         clean_start=True, properties=self._connect_props))
                    started = True
                    if rc == self._paho.MQTT_ERR_CONN_LOST:   # hung up in the handshake
                        raise ConnectionResetError(self._paho.error_string(rc))
                    if rc != 0:
                        raise OSError(self._paho.error_string(rc))
                    deadline = time.monotonic() + 10
                    rc, self._connack = 0, False
                    while not self.connected.is_set() and time.monotonic() < deadline and rc == 0:
                        rc = client.loop(0.1)
                    if rc != 0 and not self._connack:    # hung up without an answer
                        self._error(self._closed_early(self._paho.error_string(rc)))
                except (OSError, ValueError) as exc:
                    self._error(self._connect_failed(exc))
                if self.connected.is_set():
                    backoff = first
                else:
                    # jitter: many doors that lost one broker do not all come back at once
                    next_try = time.monotonic() + backoff * random.uniform(0.5, 1.0)
                    backoff = min(backoff * 2, self.max_backoff_s)
            if self.connected.is_set():
                if now >= next_poll or self._state_sent is None:
                    self._publish_state()
                    next_poll = now + self.poll_s
                self._drain()
                if client.loop(0 if self.queued else 0.05) != 0:
                    self.connected.clear()
            else:
                with self._cond:
                    self._cond.wait(min(0.2, max(0.0, next_try - time.monotonic())))
        self._finish()

    def _drain(self, most: int = 200) -> None:
        """Hand queued events to the client, oldest first, while it takes them."""
        client, paho = self._client, self._paho
        for _ in range(most):
            with self._cond:
                if not self._queue:
                    return
                item = self._queue[0]
            topic, payload = item
            info = client.publish(topic, json.dumps(payload, separators=(",", ":")),
                                  qos=self.m.qos)
            # QoS 1 and 2: NO_CONN means paho holds it and sends it after the reconnect
            ok = info.rc == paho.MQTT_ERR_SUCCESS or (
                info.rc == paho.MQTT_ERR_NO_CONN and self.m.qos > 0)
            if not ok:
                return
            with self._cond:
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
                else:                       # dropped meanwhile, yet sent
                    self.dropped -= 1
                self.sent += 1

    def state(self) -> dict:
        """The retained state: the door's (state_fn) and the publisher's own fields."""
        st = dict(self.state_fn()) if self.state_fn is not None else {}
        frames = st.pop("frames", None)
        now = self.clock()
        if frames is not None:
            if self._fps_mark is None:
                self._fps_mark = (now, frames)
            elif now - self._fps_mark[0] >= self.fps_window_s:
                t0, f0 = self._fps_mark
                self._fps = round((frames - f0) / (now - t0), 1)
                self._fps_mark = (now, frames)
        with self._cond:
            st.update(fps=self._fps, faults=self.faults, dropped=self.dropped,
                      last_event=self._last_event, version=self.version)
            if self.m.publish_names:
                st["last_person"] = self._last_person or ""
        return st

    def _publish_state(self) -> None:
        try:
            text = json.dumps(self.state(), separators=(",", ":"), sort_keys=True)
        except Exception as exc:   # the door's state must never stop the events
            log.error("mqtt: door state failed: %s", exc)
            return
        if text != self._state_sent:
            info = self._client.publish(self.topics.state, text, qos=self.m.qos, retain=True)
            if info.rc == self._paho.MQTT_ERR_SUCCESS:
                self._state_sent = text

    def _finish(self) -> None:
        """Last state, "offline" (a clean disconnect sends no will), then disconnect."""
        client = self._client
        if self.connected.is_set():
            try:
                self._publish_state()
                info = client.publish(self.topics.status, "offline", qos=1, retain=True)
                deadline = time.monotonic() + 2
                while not info.is_published() and time.monotonic() < deadline:
                    if client.loop(0.05) != 0:
                        break
                client.disconnect()
                client.loop(0.1)
            except Exception as exc:
                log.warning("mqtt: closing: %s", exc)

    def close(self, flush_s: float = 5.0) -> None:
        """Send what is queued (at most flush_s), go offline, stop. Never raises."""
        if self._thread is None:
            return
        self._flush_until = time.monotonic() + flush_s
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=flush_s + 15)
        self._thread = None
        if self.queued:
            log.warning("mqtt: %d event(s) not sent at exit (they are in the audit log)", self.queued)
