"""[mqtt] without a broker: the audit listener hook, config rules, event filtering,
Home Assistant discovery payloads against HA's schema, remote-unlock commands."""

from __future__ import annotations

import pytest

from edge.audit import AuditLog, read_records


# --- the audit log's listeners ---------------------------------------------------------------

def test_audit_listeners_get_each_durable_record_in_order(tmp_path, caplog):
    seen = []
    path = tmp_path / "audit.jsonl"

    def broken(record):
        raise RuntimeError("listener bug")

    log = AuditLog(path, listeners=[seen.append, broken])
    first = log.write("granted", "Ada", z=-1.0)
    log.write("denied")
    log.close()
    assert [r["event"] for r in seen] == ["granted", "denied"]
    assert seen[0] is first
    assert [r["event"] for r in read_records(path)] == ["granted", "denied"]
    assert "listener bug" in caplog.text        # logged, never raised into the caller


def test_audit_listener_not_told_of_a_record_that_was_not_stored(tmp_path):
    seen = []
    from edge.errors import DoorlockError

    log = AuditLog(tmp_path / "audit.jsonl", listeners=[seen.append])
    (tmp_path / "audit.jsonl").mkdir()          # the disk refuses the line
    with pytest.raises(DoorlockError):
        log.write("granted")
    assert seen == []
