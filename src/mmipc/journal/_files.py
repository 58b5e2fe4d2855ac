"""Journal files on disk: names, page paths, page creation and the writer's lock.

Rules:

* A name is 1 to 64 characters of ``[A-Za-z0-9_.-]`` and does not start with ``.``; nothing else is
  ever joined to a directory, so a name cannot escape its directory.
* Page N of journal J is ``J.NNNNNNNN.journal`` (8 digits, so names sort in page order).
* A page is created under a hidden temporary name, allocated at full size with `posix_fallocate`, given
  its header, and only then linked to its final name. `os.link` never replaces an existing file, so a
  page that exists is complete, and two creators of the same page cannot overwrite each other.
* The writer's lock is `flock(LOCK_EX)` on ``J.lock``: the kernel drops it when the process dies.
* Every file mmipc creates or writes is opened with O_NOFOLLOW (and O_EXCL when it creates it), and
  must be a regular file owned by this user: a symlink or a file planted by another user who can
  write the directory is refused, never truncated or written through.
* Files are created with the writer's `mode`: 0o600 by default (owner only), or a mode that also
  lets the group (or everyone) read, never write (see `check_mode`). The mode asked for is the mode
  set, whatever the umask. A journal directory mmipc creates gets the matching search bits (0o700,
  0o750); an existing directory is left as it is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import resource
import stat
import time
from collections.abc import Iterator

from .._errors import DiskFullError, InvalidNameError, JournalLockedError, StorageError, UsageError
from ._layout import encode_page_header

NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")
PAGE_SUFFIX = ".journal"
MAX_PAGE_NO = 99_999_999
MAX_PID = 1 << 22  # Linux pid_max can be at most 2**22 (PID_MAX_LIMIT)
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
DESCRIPTOR_ERRNOS = {errno.EMFILE, errno.ENFILE}
DEFAULT_MODE = 0o600
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_regular(path: str, size: int) -> bytes | None:
    """Up to `size` bytes from the start of the regular file at `path`, or None if there is none, it
    is something else (a link is not followed, a FIFO never blocks) or it cannot be read. For the
    small files others may have planted or damaged: counter files, bridge state files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.pread(fd, size, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (another user's counts too; 0, negatives
    and numbers no pid can be, as a damaged file may hold, never do)."""
    if not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether `pid` is dead but not reaped yet: kill(pid, 0) succeeds on a zombie, and a reader
    killed -9 whose parent had not waited for it held its pages, bell slots and name for as long
    as that parent lived. /proc/PID/stat says state Z (or X) with one thread (field 20); a process
    whose main thread ended while others run shows Z too, with more threads: that one lives."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()  # fields 3 on: the name may hold anything
        return fields[0] in (b"Z", b"X") and int(fields[17]) <= 1
    except (OSError, IndexError, ValueError):
        return False


def check_mode(mode: object) -> int:
    """Return `mode` if files may be created with it, else raise `UsageError`: the owner must read and
    write; group and others may read, never write; nothing may be executable."""
    if not isinstance(mode, int) or isinstance(mode, bool) or mode & ~0o644 or mode & 0o600 != 0o600:
        shown = oct(mode) if isinstance(mode, int) else repr(mode)
        raise UsageError(
            f"invalid file mode {shown}: use 0o600 (owner only, the default), 0o640 (the group may "
            "read) or 0o644 (everyone may read); only the writer's user may write a journal"
        )
    return mode


def directory_mode(mode: int) -> int:
    """The mode of a journal directory for files of `mode`: search wherever read is granted."""
    return mode | (mode & 0o444) >> 2


def make_journal_directory(path: str, mode: int) -> None:
    """Create the journal directory (and its parents) if missing; a new leaf directory gets exactly
    `directory_mode(mode)`, an existing one is left alone."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, directory_mode(mode))  # exactly, whatever the umask
        finally:
            os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _storage_error(exc, f"cannot create journal directory {path}") from exc


def check_name(name: object, what: str = "journal") -> str:
    """Return `name` if it is a valid journal or reader name, else raise `InvalidNameError`."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use 1 to 64 letters, digits, '_', '-' or '.', "
            "not starting with '.'"
        )
    return name


def check_directory(directory: object, what: str = "journal directory") -> str:
    """`directory` (a str or path of str) made absolute, else `UsageError` naming it: a NUL byte
    raised a bare ValueError ("embedded null byte") deep inside the first call that used it."""
    path = os.fspath(directory) if isinstance(directory, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise UsageError(f"the {what} must be a str or a path of str, not {directory!r}")
    if "\0" in path:
        raise UsageError(f"the {what} {path!r} contains a NUL byte")
    return os.path.abspath(path)


def page_path(directory: str, name: str, page_no: int) -> str:
    return os.path.join(directory, f"{name}.{page_no:08d}{PAGE_SUFFIX}")


def list_pages(directory: str, name: str) -> list[int]:
    """The page numbers of journal `name` in `directory`, ascending; [] if there are none."""
    pattern = re.compile(re.escape(name) + r"\.([0-9]{8})" + re.escape(PAGE_SUFFIX))
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:  # out of descriptors: the line naming `ulimit -n`, as everywhere else
        raise _storage_error(exc, f"cannot list journal directory {directory}") from exc
    found = (pattern.fullmatch(entry) for entry in entries)
    return sorted(int(m.group(1)) for m in found if m)


def create_page(
    directory: str,
    name: str,
    page_no: int,
    page_size: int,
    mode: int = DEFAULT_MODE,
    flags: int = 0,
    replace: bool = False,
) -> str:
    """Create page `page_no` at full size with its header (with `flags`) and file `mode`, unless it
    already exists; return its path.

    With `replace`, an existing page is replaced atomically (`rename`): only the writer does this, to
    an empty page made ahead at a size too small for its next frame, which no reader can have entered.
    """
    path = _create_page(directory, name, page_no, page_size, mode, flags, replace, ahead=False)
    assert path is not None  # only a page made ahead can be refused
    return path


def create_page_ahead(
    directory: str, name: str, page_no: int, page_size: int, mode: int = DEFAULT_MODE, flags: int = 0
) -> str | None:
    """`create_page` for the service's page made ahead: None, and no file, if page `page_no - 1` is
    gone. Retention removes only finished pages, and a page is finished only once its successor
    exists, so a missing predecessor means the request is stale (its page was made, written and
    removed since): creating it again would leave an empty, never-finished page behind the journal's
    head, a hole no reader can cross and no retention removes. The check is made just before the
    `link`."""
    return _create_page(directory, name, page_no, page_size, mode, flags, False, ahead=True)


def _create_page(
    directory: str, name: str, page_no: int, page_size: int, mode: int, flags: int, replace: bool, ahead: bool
) -> str | None:
    if page_no > MAX_PAGE_NO:
        raise StorageError(f"journal {name} in {directory} has used all {MAX_PAGE_NO} page numbers")
    final = page_path(directory, name, page_no)
    if os.path.exists(final) and not replace:
        return final
    tmp = os.path.join(directory, f".{name}.{page_no:08d}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        _fill_page(tmp, encode_page_header(name, page_no, page_size, time.time_ns(), flags), page_size, mode)
        if ahead and page_no > 0 and not os.path.exists(page_path(directory, name, page_no - 1)):
            return None
        (os.rename if replace else os.link)(tmp, final)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _storage_error(exc, f"cannot create page {final}") from exc
    finally:
        _unlink_quietly(tmp)
    return final


def _fill_page(path: str, header: bytes, page_size: int, mode: int) -> None:
    fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly the mode asked for, whatever the umask
        os.posix_fallocate(fd, 0, page_size)
        os.pwrite(fd, header, 0)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in DESCRIPTOR_ERRNOS:
        return descriptors_error(what, exc)
    if exc.errno in _DISK_FULL_ERRNOS:
        return DiskFullError(
            f"{what}: {exc.strerror}. The disk (or file-size limit, or quota) is full; every frame "
            "already written is intact. Free space and write again."
        )
    return StorageError(f"{what}: {exc.strerror}")


def descriptors_error(what: str, exc: OSError) -> StorageError:
    """One line for EMFILE (this process's RLIMIT_NOFILE) or ENFILE (the system's table), naming
    the limits and what to do. Python's mmap keeps a descriptor per mapping: a reader or writer of
    many journals holds a few per journal (its page, and a reader's bell list)."""
    if exc.errno == errno.ENFILE:
        return StorageError(
            f"{what}: the system's table of open files is full (fs.file-max): close files or raise it"
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return StorageError(
        f"{what}: too many open files (this process may have {_limit(soft)}, hard limit {_limit(hard)}; a "
        f"journal followed or written keeps a few): raise `ulimit -n` (at most the hard limit), or "
        "spread the journals over more processes"
    )


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


@contextlib.contextmanager
def descriptors_checked(what: str) -> Iterator[None]:
    """Turn an OSError for want of descriptors raised inside into `descriptors_error`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DESCRIPTOR_ERRNOS:
            raise
        raise descriptors_error(what, exc) from exc


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_temporaries(directory: str, name: str) -> None:
    """Delete half-made pages left by a writer that died while creating one (caller holds the lock)."""
    pattern = re.compile(r"\." + re.escape(name) + r"\.[0-9]{8}\.[0-9]+\.[0-9]+\.tmp")
    with descriptors_checked(f"cannot list journal directory {directory}"):
        entries = os.listdir(directory)
    for entry in entries:
        if pattern.fullmatch(entry):
            _unlink_quietly(os.path.join(directory, entry))


def open_own_file(path: str, mode: int = DEFAULT_MODE, what: str = "file") -> int:
    """Open (or create with exactly `mode`) a file this process writes: never through a symbolic
    link, never blocking, and only a regular file owned by this user. Raise `StorageError` naming
    the file (and its owner) otherwise."""
    try:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode)
            os.fchmod(fd, mode)
    except FileExistsError:
        return open_own_file(path, mode, what)  # another process created it in between: open that
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise StorageError(f"refusing {what} {path}: it is a symbolic link or a special file") from None
        raise _storage_error(exc, f"cannot open {what} {path}") from exc
    try:
        _require_own_regular_file(fd, path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _require_own_regular_file(fd: int, path: str, what: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise StorageError(f"refusing {what} {path}: it is not a regular file")
    if info.st_uid != os.geteuid():
        raise StorageError(
            f"refusing {what} {path}: it is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}); someone else can write that directory: remove the file, and keep "
            "journal directories writable by their writer's user only"
        )


def acquire_writer_lock(directory: str, name: str, mode: int = DEFAULT_MODE) -> int:
    """Take the journal's exclusive writer lock; return its fd. Raise `JournalLockedError` if held."""
    path = os.path.join(directory, f"{name}.lock")
    fd = open_own_file(path, mode, "lock file")
    # The pid is a courtesy to the next writer's error message: on a full disk the lock holds
    # without it, and the writer can still append to the room its current page has.
    holder = lock_or_holder(fd, note_required=False)
    if holder is not None:
        raise JournalLockedError(
            f"journal {name} in {directory} already has a live writer (pid {holder} holds {path}); "
            "stop that writer first: a journal has exactly one writer"
        )
    try:
        _set_lock_mode(fd, path, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            release_pid_lock(fd)
        raise
    return fd


def _set_lock_mode(fd: int, path: str, mode: int) -> None:
    """The lock file gets the mode of the writer that holds it, not only of the first one: its
    journal's NAME.bells takes its mode from it (readers of the group register only if it says
    0640). Only the lock's holder sets it, and the file is its user's (`open_own_file`)."""
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)  # exactly, whatever the umask
    except OSError as exc:
        raise _storage_error(exc, f"cannot set the mode of lock file {path} to {mode:04o}") from exc


def lock_or_holder(fd: int, note_required: bool = True) -> str | None:
    """Take `flock(LOCK_EX)` on `fd` and record this pid in the file; None on success. If another
    process holds the lock, close `fd` and return the pid it recorded (the kernel frees the lock of a
    process that dies, so a holder is always alive). If the pid cannot be recorded (a full disk),
    raise the OSError, or with `note_required=False` keep the lock without the note."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _recorded_pid(os.pread(fd, 32, 0))
        os.close(fd)
        return holder
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        if note_required:
            raise
    return None


def _recorded_pid(note: bytes) -> str:
    """The pid a lock's holder recorded, or "unknown": the file is anyone's to write (a crafted or
    damaged one printed its newlines and escapes into the next writer's one-line error)."""
    text = note.strip()
    return text.decode() if text.isdigit() and len(text) <= 10 else "unknown"


def try_lock(path: str) -> int | None:
    """Make `path`'s directory (mode 0700) and the lock file `path` (0600, never through a symlink),
    and take `flock(LOCK_EX)` on it: its fd, or None (nothing kept open) if another process holds
    it. A named reader's cursor and a bridge's state are locked this way; an OSError propagates."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_pid_lock(fd: int) -> None:
    """Forget the recorded pid and drop the lock taken by `lock_or_holder`."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, sync_directory: bool = True, mode: int = 0o600) -> None:
    """Replace the file at `path` with `data` so that a reader, or the file after a crash, is the old
    content or the new one, never a mix: write all of a temporary file beside it (O_EXCL, exactly
    `mode`), fsync it, rename it over `path`, then (`sync_directory`) fsync the directory so that
    the rename itself survives a crash. A write that fails part-way (a full disk, a file size limit)
    raises and leaves `path` as it was. A temporary left by a killed process of the same pid is
    removed first (a link planted there is removed, never followed)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exactly, whatever the umask
        view = memoryview(data)
        while view:  # a short write (a file size limit, a full disk) goes on, and then fails
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if sync_directory:
        dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
