"""`edge keygen` and `edge sign`: the administrator's commands, standard library only."""

from __future__ import annotations

from pathlib import Path

from edge.errors import DoorlockError


def cmd_keygen(args) -> int:
    from edge.enrolment.keys import key_id, write_key

    try:
        key = write_key(args.out, force=args.force)
    except OSError as exc:  # no such folder (and it cannot be made), read-only, not a folder
        where = Path(exc.filename if exc.filename is not None else args.out)
        why = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            while not where.exists() and where != where.parent:
                where = where.parent  # the file that stands where a folder should be
            why = "not a folder"
        raise DoorlockError(f"{args.out}: cannot write the key ({where}: {why})") from None
    print(f"wrote a new enrolment key to {args.out} (mode 0600), key id {key_id(key)}")
    print("install the same file on the door as /etc/doorlock/enrol.key (root:doorlock-enrol, mode 0640; "
          "install.sh does this) "
          "and keep it secret: whoever has it can enrol people")
    return 0


def cmd_sign(args) -> int:
    from edge.enrolment.keys import load_key
    from edge.enrolment.stick import MANIFEST, STICK_DIR, sign_stick

    key = load_key(args.key)
    manifest = sign_stick(args.stick, key)
    print(f"signed {Path(args.stick) / STICK_DIR / MANIFEST} with key id {manifest.key_id}: "
          f"{len(manifest.people)} people, {len(manifest.photo_paths)} photos, "
          f"{len(manifest.revoke)} to revoke")
    return 0
