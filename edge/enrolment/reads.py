"""Reading a stick as hostile ground: below <root>/doorlock/ only, one folder at a time
without following a symbolic link, regular files only, never more than the caller's bound,
and the stick's removal (EIO, ENODEV...) told apart from a bad file. Also the one write a
stick gets: the report, replaced atomically without following a link."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from edge.enrolment.manifest import STICK_DIR, PhotoRejected, StickError, StickGone
from edge.service.fsutil import read_regular_fd


def os_reason(exc: OSError) -> str:
    """The system's words for a failed call (for reports and one-line errors)."""
    return exc.strerror or str(exc)


class Stick:
    """Read access below <root>/doorlock/, one folder at a time with O_NOFOLLOW, so that no
    symbolic link (in any part of a path) is followed and nothing outside is reached."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            rfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StickError(f"{self.root}: cannot open the stick ({os_reason(exc)})") from None
        try:
            self.fd = os.open(STICK_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=rfd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise StickError(f"{self.root}: no {STICK_DIR}/ folder on the stick "
                                 "(not an enrolment stick)") from None
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StickError(f"{self.root}: {STICK_DIR} is not a folder (or is a symbolic "
                                 "link)") from None
            raise StickError(f"{self.root}: cannot open {STICK_DIR}/ ({os_reason(exc)})") from None
        finally:
            os.close(rfd)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def still_here(self) -> bool:
        """True while the stick's doorlock/ folder is reachable as the same folder."""
        try:
            st = os.stat(self.root / STICK_DIR, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def read(self, rel: str, limit: int) -> bytes:
        """The whole file at `rel` (checked with check_photo_path or a fixed name), at most
        `limit` bytes. PhotoRejected for a bad file; StickGone when the stick fails."""
        parts = rel.split("/")
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                flags |= (os.O_NONBLOCK | os.O_NOCTTY) if last else os.O_DIRECTORY
                try:
                    nfd = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    raise self._open_error(exc, fd, part, "/".join(parts[:i + 1]), last) from None
                os.close(fd)
                fd = nfd
            return read_regular_fd(fd, limit, rel, PhotoRejected,
                                   lambda exc: StickGone(f"stick removed or unreadable while reading {rel} "
                                                         f"({os_reason(exc)})"))
        finally:
            os.close(fd)

    def _open_error(self, exc: OSError, dir_fd: int, part: str, shown: str, last: bool):
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                is_link = stat.S_ISLNK(os.lstat(part, dir_fd=dir_fd).st_mode)
            except OSError:
                is_link = False
            if is_link:
                return PhotoRejected(f"{shown}: is a symbolic link (refused: links could reach "
                                     "files outside the stick)")
            return PhotoRejected(f"{shown}: not a folder")
        if exc.errno == errno.ENOENT:
            return PhotoRejected(f"{shown}: not found on the stick")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
            return PhotoRejected(f"{shown}: cannot be opened ({os_reason(exc)})")
        if last:   # a socket or device answers open() with ENXIO/ENODEV: that photo only
            try:
                mode = os.lstat(part, dir_fd=dir_fd).st_mode
            except OSError:
                mode = None
            if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                return PhotoRejected(f"{shown}: not a regular file")
        return StickGone(f"stick removed or unreadable while opening {shown} ({os_reason(exc)})")

    def write(self, name: str, data: bytes) -> None:
        """Replace doorlock/<name> atomically (temporary file, fsync, rename) without
        following a link that may be there. Raises OSError (e.g. EROFS) on failure."""
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise
        try:
            os.fsync(self.fd)
        except OSError:
            pass
