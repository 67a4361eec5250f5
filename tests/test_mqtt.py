"""[mqtt] against a real mosquitto broker on a free loopback port (skipped without one):
events in order, discovery, retained state and the last will, the broker down and back,
wrong credentials, TLS with a CA made here, remote unlock over it, ten doors at once, and
the demo's decisions. Every wait is on a condition
with a generous timeout; no test assumes a speed."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.config import config_from_dict
from test_mqtt_unit import ha_schema_errors

paho = pytest.importorskip("paho.mqtt.client")
REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (make system-tools)")
PASSWORD = "s3cret-door"


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_password_line(user: str, password: str) -> str:
    """mosquitto 2's hashed password format ($7$: PBKDF2-SHA512, 101 rounds)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


class Broker:
    """One mosquitto process; `stop()` and `start()` again keep its port and, with
    persistence, its retained messages and sessions."""

    def __init__(self, tmp: Path, tls: dict | None = None, auth: bool = False,
                 require_certificate: bool = False):
        self.tmp, self.port, self.proc = tmp, free_port(), None
        # `user`: run as root, mosquitto would switch to "mosquitto", who cannot write here
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "persistence true",
                 f"persistence_location {tmp}/", f"log_dest file {tmp}/broker.log",
                 # a subscriber of ten doors' burst lags behind: mosquitto's default (1000
                 # queued per client) would drop messages to it (docs/mqtt.md, many doors)
                 "max_queued_messages 20000"]
        if auth:
            (tmp / "passwd").write_text(mosquitto_password_line("door", PASSWORD)
                                        + mosquitto_password_line("admin", PASSWORD))
            lines += ["allow_anonymous false", f"password_file {tmp}/passwd"]
        else:
            lines += ["allow_anonymous true"]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        if require_certificate:          # mutual TLS: a client must show a certificate of the CA
            lines += ["require_certificate true"]
        (tmp / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.tmp / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, what="the broker to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # saves its persistence file
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    made = []

    def make(**kw):
        d = tmp_path / f"broker{len(made)}"
        d.mkdir()
        made.append(Broker(d, **kw))
        return made[-1]
    yield make
    for b in made:
        b.stop()


class Subscriber:
    """A test client that records what arrives; a persistent session (QoS 1) when given a
    client id, so it gets what was sent while it or the broker was away."""

    def __init__(self, port, topics=("#",), client_id="", tls=None, **auth):
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=paho.MQTTv5)
        if auth:
            c.username_pw_set(auth["username"], auth["password"])
        if tls:
            c.tls_set(ca_certs=tls)
        c.on_message = self._message
        c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        c.reconnect_delay_set(0.1, 0.5)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = None
        if client_id:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=not client_id, properties=props)
        c.loop_start()
        self.client = c
        wait_for(lambda: c.is_connected(), what="the subscriber to connect")

    def _message(self, client, userdata, msg):
        with self.lock:
            self.got.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic):
        with self.lock:
            return [p for t, p, _ in self.got if t == topic]

    def json_on(self, topic):
        return [json.loads(p) for p in self.on(topic) if p]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers():
    made = []

    def make(*a, **kw):
        made.append(Subscriber(*a, **kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


def mqtt_cfg(port, **keys):
    return config_from_dict({"mqtt": {"enabled": True, "host": "127.0.0.1", "port": port,
                                      "keepalive_s": 5, **keys}}).mqtt


@pytest.fixture
def publishers():
    made = []

    def make(m, **kw):
        from edge.building.mqtt import MqttPublisher

        kw.setdefault("max_backoff_s", 0.5)   # the test's outage is short (see the test)
        kw.setdefault("poll_s", 0.1)
        made.append(MqttPublisher(m, **kw).start())
        return made[-1]
    yield make
    for p in made:
        p.close(flush_s=2)


def events(n, door="front"):
    return [{"time": f"t{i}", "event": "denied", "frame": i, "door": door} for i in range(n)]


# --- the tests ----------------------------------------------------------------------------------

def test_events_in_order_state_and_discovery(broker, subscribers, publishers):
    b = broker()
    sub = subscribers(b.port)
    m = mqtt_cfg(b.port, door_id="front")
    state = {"lock": "LOCKED", "door": "closed", "problem": "OFF", "people": 3, "bundle": "default"}
    pub = publishers(m, version="9.9", state_fn=lambda: dict(state), has_contact=True)
    wait_for(pub.connected.is_set, what="the publisher to connect")
    for e in events(300):
        pub.publish(e)
    pub.publish({"time": "t", "event": "granted", "identity": "Ada", "z": -2.0})
    wait_for(lambda: len(sub.on("doorlock/front/event")) == 301, what="301 events")
    got = sub.json_on("doorlock/front/event")
    assert [e["seq"] for e in got] == list(range(1, 302))
    assert [e.get("frame") for e in got[:300]] == list(range(300))
    assert "identity" not in got[-1] and "z" not in got[-1]
    # the HA event entity's message comes on its own topic, after the event's: wait for it
    wait_for(lambda: sub.json_on("doorlock/front/activity")[-1:] != [], what="the activity message")
    wait_for(lambda: sub.json_on("doorlock/front/activity")[-1]["event_type"] == "granted",
             what="the grant's activity message")
    assert sub.on("doorlock/front/status")[0] == b"online"
    disc = [(t, p.decode()) for t, p, _ in sub.got if t.startswith("homeassistant/")]
    assert len(disc) == 10 and all(ha_schema_errors(t, p) == [] for t, p in disc)
    wait_for(lambda: any(s.get("last_event") for s in sub.json_on("doorlock/front/state")),
             what="the state after the grant")
    st = sub.json_on("doorlock/front/state")[-1]
    assert st["lock"] == "LOCKED" and st["people"] == 3 and st["version"] == "9.9"
    assert st["last_event"]["event"] == "granted"
    # every value_template names a key of the state, with values the entity understands
    for t, p in disc:
        config = json.loads(p) if p else {}
        if config.get("state_topic") == "doorlock/front/state":
            key = config["value_template"].split("value_json.")[1].split()[0]
            assert key in st, (t, key)
            if "payload_on" in config:
                assert st[key] in (config["payload_on"], config["payload_off"]), (t, st[key])
    state["lock"] = "UNLOCKED"
    wait_for(lambda: sub.json_on("doorlock/front/state")[-1]["lock"] == "UNLOCKED",
             what="the state to follow the lock")


def test_retained_state_and_the_will_survive_restarts(broker, subscribers, publishers):
    b = broker()
    m = mqtt_cfg(b.port, door_id="front")
    pub = publishers(m, state_fn=lambda: {"lock": "LOCKED", "people": 7})
    wait_for(lambda: pub._state_sent is not None, what="the state")
    pub.close()                                   # a clean stop: "offline", retained
    b.stop()                                      # and the broker restarts
    b.start()
    late = subscribers(b.port, topics=("doorlock/front/#",))
    wait_for(lambda: late.on("doorlock/front/status") and late.on("doorlock/front/state"),
             what="retained status and state")
    assert late.on("doorlock/front/status") == [b"offline"]
    assert late.json_on("doorlock/front/state")[0]["people"] == 7
    assert all(r for t, _, r in late.got)          # they came as retained messages
    # the door itself restarts: online again, and killed without a word, the will
    code = ("import sys, time; from edge.config import config_from_dict; from edge.building.mqtt import "
            "MqttPublisher; m = config_from_dict({'mqtt': {'enabled': True, 'host': '127.0.0.1', "
            f"'port': {b.port}, 'door_id': 'front'}}}}).mqtt; p = MqttPublisher(m, state_fn=lambda: "
            "{'people': 8}).start(); p.connected.wait(10); print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline() == b"up\n"
        wait_for(lambda: late.on("doorlock/front/status")[-1:] == [b"online"], what="online")
        wait_for(lambda: late.json_on("doorlock/front/state")[-1]["people"] == 8, what="new state")
        proc.kill()                                # no clean disconnect: the broker sends the will
        wait_for(lambda: late.on("doorlock/front/status")[-1:] == [b"offline"], what="the will")
    finally:
        proc.kill()
        proc.wait()


def test_broker_down_and_back(broker, subscribers, publishers):
    """The outage here lasts about a second, not 30 s: what the publisher does depends only
    on the queue's length (bounded by count, not time) and on its reconnect back-off (capped
    at 0.5 s here, 30 s by default); stopping the broker closes the TCP connection at once,
    so no keep-alive timeout is involved either."""
    b = broker()
    sub = subscribers(b.port, topics=("doorlock/front/event",), client_id="watcher")
    m = mqtt_cfg(b.port, door_id="front", queue_size=50)
    pub = publishers(m)
    wait_for(pub.connected.is_set, what="the publisher to connect")
    for e in events(10):
        pub.publish(e)
    wait_for(lambda: len(sub.on("doorlock/front/event")) == 10, what="the first 10 events")
    b.stop()
    wait_for(lambda: not pub.connected.is_set(), what="the publisher to notice")
    attempts = pub.attempts
    slowest = 0.0
    for e in events(80):                           # the real thread is running, retrying
        t = time.perf_counter()
        pub.publish(e)
        slowest = max(slowest, time.perf_counter() - t)
    # A publish that waited on the network would wait for a connect timeout (seconds); one
    # that only queues takes microseconds. The bound leaves room for a loaded machine.
    assert slowest < 1.0, f"publish() took {slowest * 1000:.1f} ms while the broker was down"
    wait_for(lambda: pub.attempts >= attempts + 2, what="reconnect attempts while down")
    assert pub.queued == 50 and pub.dropped == 30
    b.start()
    wait_for(lambda: pub.queued == 0 and pub.connected.is_set(), what="the queue to drain")
    # QoS 1 is at least once: the broker may send a message again after its restart
    expected = set(range(1, 11)) | set(range(41, 91))   # the 30 oldest were dropped
    wait_for(lambda: {e["seq"] for e in sub.json_on("doorlock/front/event")} >= expected,
             what="the queued events")
    assert {e["seq"] for e in sub.json_on("doorlock/front/event")} == expected
    assert pub.state()["dropped"] == 30


def test_wrong_credentials_one_clear_line_and_the_door_works_on(broker, publishers, tmp_path, caplog):
    from edge.service.audit import AuditLog
    from edge.door.relay import simulated_relay

    b = broker(auth=True)
    pw = tmp_path / "mqtt.pass"
    pw.write_text("not-the-password\n")
    pw.chmod(0o600)
    m = mqtt_cfg(b.port, username="door", password_file=str(pw))
    caplog.set_level(logging.ERROR, logger="edge.building.mqtt")
    pub = publishers(m)
    audit = AuditLog(tmp_path / "audit.jsonl", listeners=[pub.publish])
    wait_for(lambda: pub.attempts >= 3, what="three refused attempts")
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.building.mqtt"]
    assert len(lines) == 1, lines                  # once, not at every retry
    assert "refused the connection" in lines[0] and "mqtt.password_file" in lines[0]
    assert ("Bad user name or password" in lines[0] or "Not authorized" in lines[0])
    assert "\n" not in lines[0] and not pub.connected.is_set()
    relay = simulated_relay(pulse_s=1)
    try:
        assert relay.pulse() > 0                   # the door is unaffected
        t = time.perf_counter()
        audit.write("granted", "Ada")
        assert time.perf_counter() - t < 1.0
        assert pub.queued == 2                     # the event and its HA event wait
    finally:
        relay.close()
        audit.close()


def make_ca(tmp: Path, name: str) -> dict:
    """A CA and a server certificate for 127.0.0.1 / localhost, made with `cryptography`."""
    import datetime
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509", reason="cryptography not installed")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, sign_key, ca, san=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(sign_key, hashes.SHA256())

    def pem_key(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    srv = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name,
               srv_key, ca_key, False,
               [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    out = {"ca": tmp / f"{name}-ca.pem", "cert": tmp / f"{name}-srv.pem", "key": tmp / f"{name}-srv.key"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(pem_key(srv_key))
    cli_key = ec.generate_private_key(ec.SECP256R1())     # a door's own certificate, for mutual TLS
    cli = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} door")]), ca_name,
               cli_key, ca_key, False)
    out["client_cert"], out["client_key"] = tmp / f"{name}-door.pem", tmp / f"{name}-door.key"
    out["client_cert"].write_bytes(cli.public_bytes(serialization.Encoding.PEM))
    out["client_key"].write_bytes(pem_key(cli_key))
    out["client_key"].chmod(0o600)
    return out


def test_tls_and_remote_unlock_through_the_broker(broker, subscribers, publishers, tmp_path, caplog):
    from edge.service.audit import AuditLog, read_records
    from edge.door.door import Door
    from edge.door.relay import simulated_relay
    from edge.building.remote_unlock import RemoteUnlock, make_command

    tls = make_ca(tmp_path, "good")
    b = broker(tls=tls, auth=True)
    pw = tmp_path / "mqtt.pass"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    m = mqtt_cfg(b.port, door_id="front", tls=True, ca_file=str(tls["ca"]), username="door",
                 password_file=str(pw), remote_unlock=True)
    relay = simulated_relay(pulse_s=2)
    audit = AuditLog(tmp_path / "audit.jsonl")
    door = Door(relay, audit=audit)
    key = os.urandom(32)
    remote = RemoteUnlock(door, audit, "doorlock/front", key=key, max_unlocks=1)
    try:
        pub = publishers(m, on_command=remote.handle)
        audit.add_listener(pub.publish)
        wait_for(pub.connected.is_set, what="a TLS connection")
        admin = subscribers(b.port, topics=("doorlock/front/event", "doorlock/front/state"),
                            tls=str(tls["ca"]), username="admin", password=PASSWORD)
        # the door subscribes on connecting, before it sends its state: once the state is
        # here, the broker has the door's subscription
        wait_for(lambda: admin.on("doorlock/front/state"), what="the door's state")
        cmd = json.dumps(make_command(key, "doorlock/front", "unlock", by="ops"))
        admin.client.publish("doorlock/front/command", cmd, qos=1)
        wait_for(lambda: relay.is_open, what="the remote unlock")
        admin.client.publish("doorlock/front/command", cmd, qos=1)          # a replay
        admin.client.publish("doorlock/front/command", '{"action":"unlock"}', qos=1)
        wait_for(lambda: len(admin.json_on("doorlock/front/event")) >= 3, what="3 audit events")
        got = [(e["event"], e.get("reason", "")[:8]) for e in admin.json_on("doorlock/front/event")]
        assert got[:3] == [("remote_unlock", ""), ("remote_refused", "replayed"),
                           ("remote_refused", "unsigned")]
        assert [r["event"] for r in read_records(tmp_path / "audit.jsonl")] == [
            "remote_unlock", "remote_refused", "remote_refused"]
        # a door that does not trust the broker's CA never connects, and says why
        other = make_ca(tmp_path, "other")
        caplog.set_level(logging.ERROR, logger="edge.building.mqtt")
        wrong = publishers(mqtt_cfg(b.port, door_id="back", tls=True, ca_file=str(other["ca"]),
                                    username="door", password_file=str(pw)))
        wait_for(lambda: wrong.attempts >= 2, what="refused TLS attempts")
        msgs = [r.getMessage() for r in caplog.records if "back" not in r.getMessage()]
        assert any("over TLS" in x and "certificate" in x.lower() for x in msgs), msgs
        assert not wrong.connected.is_set()
    finally:
        door.close()
        relay.close()
        audit.close()


def test_mutual_tls_a_door_needs_its_client_certificate(broker, subscribers, publishers, tmp_path, caplog):
    """A broker that requires client certificates takes the door with mqtt.cert_file and
    key_file; without them the door never connects, says why in its log, and keeps queueing."""
    tls = make_ca(tmp_path, "mtls")
    b = broker(tls=tls, require_certificate=True)
    door = publishers(mqtt_cfg(b.port, door_id="front", tls=True, ca_file=str(tls["ca"]),
                               cert_file=str(tls["client_cert"]), key_file=str(tls["client_key"])))
    wait_for(door.connected.is_set, what="a mutual-TLS connection")
    caplog.set_level(logging.ERROR, logger="edge.building.mqtt")
    bare = publishers(mqtt_cfg(b.port, door_id="back", tls=True, ca_file=str(tls["ca"])))
    bare.publish({"event": "granted", "identity": "A", "time": "2026-12-02T10:00:00Z"})
    wait_for(lambda: bare.attempts >= 2, what="refused attempts without a client certificate")
    assert not bare.connected.is_set() and bare.queued >= 1
    msgs = [r.getMessage() for r in caplog.records if "client certificate" in r.getMessage()]
    assert msgs and all("\n" not in m for m in msgs), [r.getMessage() for r in caplog.records]


def test_ten_doors_into_one_broker(broker, subscribers, publishers):
    b = broker()
    sub = subscribers(b.port, topics=("doorlock/+/event",))
    pubs = [publishers(mqtt_cfg(b.port, door_id=f"door{i}")) for i in range(10)]
    wait_for(lambda: all(p.connected.is_set() for p in pubs), what="10 doors connected")
    n = 300                                        # 3,000 events: 20 s of 15 fps at each door
    threads = [threading.Thread(target=lambda p=p: [p.publish(e) for e in events(n)]) for p in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: sum(len(sub.on(f"doorlock/door{i}/event")) for i in range(10)) >= 10 * n,
             timeout=20, what="3,000 events")
    for i, p in enumerate(pubs):
        seqs = [e["seq"] for e in sub.json_on(f"doorlock/door{i}/event")]
        assert seqs == list(range(1, n + 1)), f"door{i}"
        assert p.dropped == 0 and p.sent == n


def test_the_demo_publishes_every_decision(broker, subscribers):
    """Done-when: with [mqtt] on, a subscriber sees every decision of `edge run`, and the
    gallery reload (SIGHUP, as after a USB enrolment) as "enrolment_applied"."""
    b = broker()
    sub = subscribers(b.port, topics=("doorlock/demo/#",))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--max-frames", "45",
                             "--set", "mqtt.enabled=true", "--set", "mqtt.host=127.0.0.1",
                             "--set", f"mqtt.port={b.port}", "--set", "mqtt.door_id=demo"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().startswith("demo:")
        proc.send_signal(signal.SIGHUP)            # reloaded once the kiosk runs
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    printed = [(int(ln.split()[1]), ln.split()[2]) for ln in out.splitlines()
               if ln.startswith("frame ")]
    assert any(e == "granted" for _, e in printed)
    wait_for(lambda: sub.on("doorlock/demo/status")[-1:] == [b"offline"], what="offline")
    got = [(e["frame"], e["event"]) for e in sub.json_on("doorlock/demo/event") if "frame" in e]
    assert got == printed
    assert sub.json_on("doorlock/demo/state")[-1]["lock"] == "LOCKED"
    applied = [e for e in sub.json_on("doorlock/demo/event") if e["event"] == "enrolment_applied"]
    assert len(applied) == 1 and applied[0]["people"] == 1
    assert "enrolment_applied" in [e["event_type"] for e in sub.json_on("doorlock/demo/activity")]

