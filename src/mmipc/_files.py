"""Journal files on disk: names, page paths, page creation and the writer's lock.

Rules:

* A name is 1 to 64 characters of ``[A-Za-z0-9_.-]`` and does not start with ``.``; nothing else is
  ever joined to a directory, so a name cannot escape its directory.
* Page N of journal J is ``J.NNNNNNNN.journal`` (8 digits, so names sort in page order).
* A page is created under a hidden temporary name, allocated at full size with `posix_fallocate`, given
  its header, and only then linked to its final name. `os.link` never replaces an existing file, so a
  page that exists is complete, and two creators of the same page cannot overwrite each other.
* The writer's lock is `flock(LOCK_EX)` on ``J.lock``: the kernel drops it when the process dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time

from ._errors import DiskFullError, InvalidNameError, JournalLockedError, StorageError
from ._layout import encode_page_header

NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")
PAGE_SUFFIX = ".journal"
MAX_PAGE_NO = 99_999_999
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def check_name(name: object, what: str = "journal") -> str:
    """Return `name` if it is a valid journal or reader name, else raise `InvalidNameError`."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use 1 to 64 letters, digits, '_', '-' or '.', "
            "not starting with '.'"
        )
    return name


def page_path(directory: str, name: str, page_no: int) -> str:
    return os.path.join(directory, f"{name}.{page_no:08d}{PAGE_SUFFIX}")


def list_pages(directory: str, name: str) -> list[int]:
    """The page numbers of journal `name` in `directory`, ascending; [] if there are none."""
    pattern = re.compile(re.escape(name) + r"\.(\d{8})" + re.escape(PAGE_SUFFIX))
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot list journal directory {directory}: {exc.strerror}") from exc
    found = (pattern.fullmatch(entry) for entry in entries)
    return sorted(int(m.group(1)) for m in found if m)


def create_page(
    directory: str, name: str, page_no: int, page_size: int, flags: int = 0, replace: bool = False
) -> str:
    """Create page `page_no` at full size with its header (with `flags`), unless it already exists;
    return its path.

    With `replace`, an existing page is replaced atomically (`rename`): only the writer does this, to
    an empty page made ahead at a size too small for its next frame, which no reader can have entered.
    """
    if page_no > MAX_PAGE_NO:
        raise StorageError(f"journal {name} in {directory} has used all {MAX_PAGE_NO} page numbers")
    final = page_path(directory, name, page_no)
    if os.path.exists(final) and not replace:
        return final
    tmp = os.path.join(directory, f".{name}.{page_no:08d}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        _fill_page(tmp, encode_page_header(name, page_no, page_size, time.time_ns(), flags), page_size)
        (os.rename if replace else os.link)(tmp, final)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _storage_error(exc, f"cannot create page {final}") from exc
    finally:
        _unlink_quietly(tmp)
    return final


def _fill_page(path: str, header: bytes, page_size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.posix_fallocate(fd, 0, page_size)
        os.pwrite(fd, header, 0)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in _DISK_FULL_ERRNOS:
        return DiskFullError(
            f"{what}: {exc.strerror}. The disk (or file-size limit, or quota) is full; every frame "
            "already written is intact. Free space and write again."
        )
    return StorageError(f"{what}: {exc.strerror}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_temporaries(directory: str, name: str) -> None:
    """Delete half-made pages left by a writer that died while creating one (caller holds the lock)."""
    pattern = re.compile(r"\." + re.escape(name) + r"\.\d{8}\.\d+\.\d+\.tmp")
    for entry in os.listdir(directory):
        if pattern.fullmatch(entry):
            _unlink_quietly(os.path.join(directory, entry))


def acquire_writer_lock(directory: str, name: str) -> int:
    """Take the journal's exclusive writer lock; return its fd. Raise `JournalLockedError` if held."""
    path = os.path.join(directory, f"{name}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _storage_error(exc, f"cannot open lock file {path}") from exc
    holder = lock_or_holder(fd)
    if holder is not None:
        raise JournalLockedError(
            f"journal {name} in {directory} already has a live writer (pid {holder} holds {path}); "
            "stop that writer first: a journal has exactly one writer"
        )
    return fd


def lock_or_holder(fd: int) -> str | None:
    """Take `flock(LOCK_EX)` on `fd` and record this pid in the file; None on success. If another
    process holds the lock, close `fd` and return the pid it recorded (the kernel frees the lock of a
    process that dies, so a holder is always alive)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return None


def release_pid_lock(fd: int) -> None:
    """Forget the recorded pid and drop the lock taken by `lock_or_holder`."""
    os.ftruncate(fd, 0)
    os.close(fd)
