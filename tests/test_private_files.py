"""Secrets' files (edge/service/fsutil.py read_private_file), as the enrolment key and the
command key read them (the MQTT password's: tests/test_mqtt_unit.py): no symbolic link,
regular files only, not exposed to others, bounded; and the atomic write's options."""

import os
import stat

import pytest

from edge.building.remote_unlock import load_command_key, write_command_key
from edge.enrolment import keys
from edge.errors import DoorlockError
from edge.service.fsutil import PrivateFileError, atomic_write_bytes, read_private_file


def _secret(tmp_path, data=b"secret\n", mode=0o600, name="secret"):
    p = tmp_path / name
    p.write_bytes(data)
    p.chmod(mode)
    return p


def _why(path, limit=64, **kw):
    with pytest.raises(PrivateFileError) as exc:
        read_private_file(path, limit, **kw)
    return exc.value.why


def test_a_private_file_is_read_whole(tmp_path):
    assert read_private_file(_secret(tmp_path), 64) == b"secret\n"
    assert read_private_file(_secret(tmp_path, b"x" * 64, 0o640), 64) == b"x" * 64


def test_every_refusal_has_its_reason(tmp_path):
    p = _secret(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(p)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert _why(tmp_path / "none") == PrivateFileError.MISSING
    assert _why(link) == PrivateFileError.LINK
    assert _why(fifo) == PrivateFileError.NOT_REGULAR          # and it did not hang
    assert _why(tmp_path) == PrivateFileError.NOT_REGULAR
    assert _why(_secret(tmp_path, mode=0o604, name="world")) == PrivateFileError.EXPOSED
    assert _why(_secret(tmp_path, b"x" * 65, name="big")) == PrivateFileError.TOO_LARGE
    assert _why(p / "below-a-file") == PrivateFileError.UNREADABLE


def test_the_caller_chooses_which_mode_bits_expose_a_file(tmp_path):
    p = _secret(tmp_path, mode=0o640)
    assert read_private_file(p, 64) == b"secret\n"            # the group may read by default
    assert _why(p, deny_mode=0o077) == PrivateFileError.EXPOSED
    p.chmod(0o602)                                              # world-writable is exposed too
    assert _why(p) == PrivateFileError.EXPOSED


def test_the_command_key_and_the_enrolment_key_refuse_links_and_size(tmp_path):
    command = tmp_path / "command.key"
    write_command_key(command)
    link = tmp_path / "command-link.key"
    link.symlink_to(command)
    with pytest.raises(DoorlockError, match=r"cannot read the command key \(a symbolic link\)"):
        load_command_key(link)
    padded = _secret(tmp_path, command.read_bytes() + b" " * 300, name="padded.key")
    with pytest.raises(DoorlockError, match="not a doorlock command key"):
        load_command_key(padded)

    enrol = tmp_path / "enrol.key"
    keys.write_key(enrol)
    padded = _secret(tmp_path, enrol.read_bytes() + b" " * 300, name="padded-enrol.key")
    with pytest.raises(keys.EnrolKeyError, match="not a doorlock enrolment key file"):
        keys.load_key(padded)
    with pytest.raises(keys.EnrolKeyError, match="the enrolment key is not a regular file"):
        keys.load_key(tmp_path)


def test_a_no_clobber_write_never_replaces_a_file(tmp_path):
    p = tmp_path / "d" / "key"
    atomic_write_bytes(p, b"first", mode=0o600, overwrite=False)
    assert p.read_bytes() == b"first" and stat.S_IMODE(p.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        atomic_write_bytes(p, b"second", overwrite=False)
    assert p.read_bytes() == b"first"
    assert sorted(x.name for x in p.parent.iterdir()) == ["key"]   # no temporary file left
    atomic_write_bytes(p, b"third")
    assert p.read_bytes() == b"third"


def test_the_steps_of_a_write_are_seen_in_order(tmp_path):
    seen = []
    atomic_write_bytes(tmp_path / "f", b"data", suffix=".tmp", checkpoint=seen.append,
                       before_replace=lambda tmp: seen.append(("before", os.path.basename(tmp)[-4:])))
    assert seen == ["temp-partial", "temp-written", "temp-synced", ("before", ".tmp"), "renamed", "done"]
