"""Doorbells: how writers tell a reader which of its journals moved, and wake it if it sleeps.

Rules (docs/format.md, "Doorbells", is the contract):

* Each reader that wants them owns one bell file (`Bell`, in /dev/shm or the temp directory): a
  futex word, a `sleeping` flag, a `pending` flag and one flag byte per journal it follows.
* Each journal has a side file ``NAME.bells`` (`BellList`) listing the bells to ring: a count and
  64 slots (bell path, flag index, owner pid, generation) and a version, then (format 2) one
  needy byte per slot. Readers add and remove slots under an flock of that file, the version odd
  meanwhile, and free dead readers' slots at every edit (`_edit`: the flock is taken on the
  descriptor it maps, and the name must still be that file once locked, else it opens it again:
  a list swapped between an open and the lock would be locked in vain); writers never lock it: they cache the
  bells to ring, and read the slots again, between two loads of the version, when it changed.
* A reader's needy byte is 1 whenever the journal's writer may have to ring it: set by the reader
  (only ever to 1) when it subscribes, after each clear of that journal's flag, and after each
  announcement of sleep; cleared by the writer after a ring that left its flag set and found it
  awake (clear, fence, look at the flag and `sleeping` again, set it back if needed).
* A writer rings after every commit (`Ringer.ring`) only when the count is not 0: one load per
  commit otherwise. A ring's full fence comes after the commit; then the version and the needy
  bytes: none set (and no older reader's slot, state 1) is the end of it, whatever the number of
  readers. Otherwise a bell whose flag for this journal it finds still set AFTER that fence, and
  whose reader it finds awake, needs nothing (the poll after that reader's next clear sees the
  commit). Any other bell gets the flag, then `pending`, then a full fence, then `sleeping` is
  exchanged with 0 and, if it was set, the futex word bumped and FUTEX_WAKEd. A subscription
  clears its flag first: a flag left set by the journal that had its index would silence this
  journal's writer.
* A reader clears `pending`, fences, then clears the flags it takes (setting each one's needy
  byte after) BEFORE it polls those journals (full fence in between): a ring that lands after the
  clear stays visible. The native merge leaves the flags of up to 8 journals set instead (hot:
  polled at every read, so their writers store nothing; docs/format.md, *Hot journals*).
  A sleeping reader stores `sleeping`, then its needy bytes, fences, re-checks every journal
  flagged (and every hot one), then waits on the word it read before: Drepper's rule. (The
  needy store always comes after the store it signals: the writer that clears it looks again.)
* ``NAME.bells`` is made with its journal's mode (``NAME.lock``'s) with write where read is
  granted (`list_mode`): whoever may read the journal may register a bell, nobody else. A list
  made before the journal had a writer (no NAME.lock: 0600) takes that mode when its owner's reader
  sees the journal's first page (`follow_journal_mode`); one we may not open because of such a
  mode is said once (`_say_shut_out`). Every file
  mapped here, list or bell, is a regular file with one link, opened with O_NOFOLLOW and checked
  after the open (`_unfit`): a hard link to another file planted under its name would be written
  into. A refused list is said once per process in one line (`_refuse`); its journal is polled.
* The fences need the C extension; without it a writer fences with a lock round trip (an atomic
  instruction) and wakes through ctypes, and a reader sleeps in bounded steps (`BOUNDED_SLEEP`).
* Nothing here is ever needed for correctness of what a reader returns, only for when it notices:
  a reader re-polls every journal at least every `SWEEP_EVERY` empty reads and after every wait,
  so a writer that cannot ring (an older version, a bell it may not open) costs latency, not frames.
* A reader that takes over a dead reader's slot unlinks that bell and its FIFO only if they are our
  user's regular file (FIFO) named ``mmipc-bell.*`` in the bell directory itself, by a descriptor
  of that directory: a list (anyone who can write it may) can name any path, or a link.
* A reader's bell and its FIFO are made with mode BELL_MODE (0660) exactly, whatever the umask:
  rung by the reader's own user and by the writers of its group. A journal read by other users
  is shared through its group (its mode 0640, docs/format.md "File modes"), and its writer is
  that group's; nobody else may write a bell (wake its reader for ever, clear its flags: it
  was 0666 less the umask, anyone's under umask 0). A writer outside the group (of a 0644
  journal) cannot ring it: its reader sees the frames at its next sweep.
* A bell's name records its reader: ``mmipc-bell.PID.START.PIDNS.N.RANDOM`` (START: the process's
  start time in clock ticks since boot, /proc/self/stat; PIDNS: its pid namespace, the inode of
  /proc/self/ns/pid; 0 where unknown). A killed reader cannot unlink its bell and FIFO:
  `sweep_dead_bells` (the service runs it every SAMPLE_INTERVAL) removes those, by the rule above,
  whose pid is gone or now belongs to a process that started at another time.
* A pid means something only in its own pid namespace: a reader in a container that shares the
  journal directory and /dev/shm records its container's pid. An owner recorded in another
  namespace than the checker's is taken as alive (`owner_alive`): its bell, its bell-list slots and
  (_metrics) its counter file and the pages it holds are kept, as nothing here can tell whether it
  lives. The service judges such a reader by its counter file's heartbeat instead (`_metrics.Owner`),
  and sweeps the bells named with the owner of a counter file whose heartbeat stopped; a bell of
  another namespace tied to no counter file (a standalone reader's) stays, unless its name says
  its reader holds an flock on it (this version's: RANDOM starts with LOCKED_MARK, "l"): a reader
  takes one on its bell as it makes it (`_lock_bell`), held while it has it mapped (until its
  close, or its death, even by -9), so a bell of another namespace that nobody holds (`_held`) is
  a dead reader's: its slots are freed and the sweep removes it (one changed in the last
  BELL_GRACE s is kept: its reader locks it just after making it). A slot is reclaimed by the
  rule of its bell's name, the slot's pid alone for an older name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import mmap
import os
import resource
import stat
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from .._errors import UsageError
from ._backend import native
from ._files import pid_alive

BELL_SIZE = 8192
WORD, SLEEPING, PENDING, FLAGS = 8, 12, 16, 64
MAX_FLAGS = BELL_SIZE - FLAGS
LIST_HEADER, SLOT_SIZE, SLOTS = 64, 256, 64
COUNT, VERSION = 8, 12  # in NAME.bells: 1 + the highest slot in use; bumped by every edit
LIST_V1_SIZE = LIST_HEADER + SLOT_SIZE * SLOTS  # format 1 (older readers): no needy bytes
NEEDY = LIST_V1_SIZE  # format 2: one needy byte per slot (1: its reader may need a ring), a line
LIST_SIZE = NEEDY + SLOTS
PROTOCOL_2 = 2  # a slot's state: its reader keeps its needy byte (an older reader's is 1)
SLOT = struct.Struct("<IIII240s")  # state, generation, pid, flag index, bell path (NUL-padded)
BOUNDED_SLEEP = 0.001
ON_FUTEX, IN_LOOP = 1, 2  # values of `sleeping`: woken by FUTEX_WAKE, or by a byte in PATH.fifo
SWEEP_EVERY = 4096
LONGEST_WAIT = 3600.0  # s: one native wait at most (a longer nap is several; ns fit a C long long)
LATE_RETRY = 0.1  # s between a LateRinger's tries to map NAME.bells
EDIT_TRIES = 8  # opens of NAME.bells for one edit, each found swapped for another file once locked
BELL_MODE = 0o660  # a reader's bell and its FIFO: its user and its group's writers ring it
LOCKED_MARK = "l"  # a bell name's RANDOM starts with it: its reader holds an flock on it while alive
BELL_GRACE = 1.0  # s: a bell younger than this is not judged by its flock (taken just after it is made)
_U32 = struct.Struct("<I")
_fence_lock = threading.Lock()
_serial = itertools.count()


def fence() -> None:
    """A full memory fence: the extension's, or a lock round trip (an atomic read-modify-write).
    Never a wait for the lock: a signal handler that slept in a reader, or wrote, while the code it
    interrupted held it waited for ever (a deadlock, seen under a storm of signals)."""
    if native is not None:
        native.fence()
    elif _fence_lock.acquire(False):
        _fence_lock.release()
    else:
        _own_fence()


def _own_fence() -> None:
    """`fence` when the shared lock is held (by the code a signal handler interrupted, or another
    thread): a lock of its own; a failed try of a held lock need not be an atomic write."""
    lock = threading.Lock()
    lock.acquire()
    lock.release()


def bells_path(directory: str, name: str) -> str:
    return os.path.join(directory, f"{name}.bells")


def _non_negative_seconds(value: object) -> bool:
    """A number >= 0 (inf too: a wait is clamped to LONGEST_WAIT anyway); not nan, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def start_ticks(pid: int | str) -> int:
    """When process `pid` ("self": this one) started, in clock ticks since boot (/proc/PID/stat field
    22); 0 if unknown. Unlike the pid, it tells a process from a later one given the same pid.
    This process's own is read through /proc/self: under a /proc of a parent pid namespace, /proc/PID
    with our namespace's pid is another process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return 0


def _bell_dir() -> str:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    import tempfile

    return tempfile.gettempdir()


_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO or device never blocks


def _map(path: str, size: int, create: bool) -> mmap.mmap | None:
    """Map a bell at `path` read-write, or None if the OS refuses. `create`: this reader's own bell,
    made (new: its name is random) with exactly BELL_MODE, whatever the umask. Without (a writer
    mapping a bell named in a list others may edit) only a regular file named ``mmipc-bell.*`` of
    exactly `size` bytes with one link is mapped: never another file, never resized."""
    if not create and not os.path.basename(path).startswith("mmipc-bell."):
        return None
    try:
        fd = os.open(path, _OPEN | (os.O_CREAT | os.O_EXCL if create else 0), BELL_MODE)
    except OSError:
        return None
    mm = None
    try:
        if create:
            os.fchmod(fd, BELL_MODE)  # exactly: under umask 0 it was 0666, anyone's to write into
            _lock_bell(fd)
        mm = None if _unfit(os.fstat(fd)) else _map_fd(fd, size, create)
    except OSError:
        pass
    finally:
        os.close(fd)
    if mm is None and create:
        with contextlib.suppress(OSError):
            os.unlink(path)  # ours, new (O_EXCL): a full /dev/shm is not filled with empty bells
    return mm


def _lock_bell(fd: int) -> None:
    """Take our new bell's flock, held while its map lives (the map keeps a duplicate of `fd`):
    how a reader of another pid namespace is known alive (`_held`). It never blocks (the file is
    new); where the file system has no flock (ENOLCK), nobody else can take it either, and a bell
    that cannot be locked by its checker is taken as alive."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _map_fd(fd: int, size: int, create: bool) -> mmap.mmap | None:
    """Map open file `fd` (checked by `_unfit`). `create`: grow it to `size` (unless RLIMIT_FSIZE
    forbids: past it a write raises SIGXFSZ), its blocks allocated: a store into a hole of a sparse
    file on a full disk is a SIGBUS (a reader killed at its subscription, a writer at its ring), so
    a file that cannot be allocated is not mapped. Without: only a file of exactly `size` bytes."""
    try:
        st = os.fstat(fd)
        if not create and st.st_size != size:
            return None
        if create:
            if st.st_size < size and not _may_grow_to(size):
                return None
            os.posix_fallocate(fd, 0, size)  # grows it; ENOSPC here, never SIGBUS at a store
        return mmap.mmap(fd, size)
    except (OSError, ValueError):
        return None


def _unfit(st: os.stat_result) -> str:
    """Why a doorbell file may not be mapped ("" if it may): only a regular file with one link. A
    hard link to another file of the user, planted under its name, would be written into."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_nlink != 1:
        return f"it has {st.st_nlink} links (a hard link to another file?)"
    return ""


def map_list(directory: str, name: str) -> mmap.mmap | None:
    """A journal's NAME.bells, mapped read-write (made, or grown to format 2), or None."""
    return _map_list(bells_path(directory, name), LIST_SIZE, create=True)


def _map_list(path: str, size: int, create: bool) -> mmap.mmap | None:
    """NAME.bells mapped read-write, made (`create`: see `_map_fd`) with the mode `list_mode`
    derives from its journal's; or None: the OS refuses (silently: a reader of another user, a
    full disk), or it is not a regular file with one link (refused in one logged line)."""
    fd = _open_fit_list(path, create)
    if fd is None:
        return None
    try:
        return _map_fd(fd, size, create)
    finally:
        os.close(fd)


def _open_fit_list(path: str, create: bool) -> int | None:
    """NAME.bells opened (`_open_list`) if it is a regular file with one link; else None, and a
    list that is something else, or that we may not open because its mode is not its journal's,
    is said in one logged line."""
    try:
        fd = _open_list(path, create)
    except OSError as exc:
        if exc.errno in _NOT_A_FILE:
            _refuse(path, _NOT_A_FILE[exc.errno])
        elif exc.errno == errno.EACCES:
            _say_shut_out(path)
        return None
    try:
        why = _unfit(os.fstat(fd))
    except OSError:
        why = "?"
    if why:
        os.close(fd)
        if why != "?":
            _refuse(path, why)
        return None
    return fd


def _open_list(path: str, create: bool) -> int:
    """Open NAME.bells (never through a link, never blocking). `create`: make it if missing, with
    exactly `list_mode`'s mode and its journal's group; an existing list of ours whose journal's
    mode is known is set to that mode and group (an older version's list was 0666 less the umask;
    one made before the journal had a writer, 0600 and our group)."""
    if not create:
        return os.open(path, _OPEN)
    mode, gid = list_mode(path)
    try:
        fd = os.open(path, _OPEN | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        fd = os.open(path, _OPEN)
        made = False
    else:
        made = True
    _fix_mode(fd, made, mode, gid)  # refused later if it must be
    return fd


def follow_journal_mode(directory: str, name: str) -> None:
    """The journal's first page appeared, so its writer has set NAME.lock's mode: a NAME.bells of
    ours made before (0600 and our group: `list_mode` had no lock file to go by) takes the mode and
    group `list_mode` derives now. Without this, a writer of another user of the journal's group
    could not ring the readers listed in it (nor could that group's readers register): silently,
    they only saw its frames at their sweeps. Any other list, or none, is left as it is."""
    path = bells_path(directory, name)
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return
    try:
        _fix_mode(fd, False, *list_mode(path))
    finally:
        os.close(fd)


def _fix_mode(fd: int, made: bool, mode: int, gid: int) -> None:
    """The open list `fd` takes `mode` and group `gid` if we just `made` it, or if it is a fit list
    of ours and its journal's mode is known (`gid` >= 0). A mode we cannot set leaves the file as
    it was; a group we cannot set (one we are not in), the mode alone set."""
    try:
        st = os.fstat(fd)
        if not _unfit(st) and (made or gid >= 0 and st.st_uid == os.geteuid()):
            _set_mode(fd, st, mode, gid)
    except OSError:
        pass


def _set_mode(fd: int, st: os.stat_result, mode: int, gid: int) -> None:
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)  # exactly, whatever the umask
    if gid >= 0 and st.st_gid != gid:
        os.fchown(fd, -1, gid)  # its journal's group, whose members (mode 0640) may register


def list_mode(path: str) -> tuple[int, int]:
    """The mode of NAME.bells at `path`, and its group (-1: unknown): its journal's (the writer's
    `mode`, which its lock file ``NAME.lock`` has) with write wherever read is granted, so that
    whoever may read the journal may register a bell and nobody else: 0600 -> 0600, 0640 -> 0660,
    0644 -> 0666. Without a lock file (no writer yet), 0600: the owner only."""
    try:
        st = os.lstat(path.removesuffix(".bells") + ".lock")
    except OSError:
        return 0o600, -1
    if not stat.S_ISREG(st.st_mode):
        return 0o600, -1
    mode = st.st_mode & 0o644 | 0o600
    return mode | (mode & 0o044) >> 1, st.st_gid


_said: set[str] = set()  # bell files warned about (`say_once`)
_NOT_A_FILE = {  # what open() met in place of NAME.bells
    errno.ELOOP: "it is a symbolic link",
    errno.EISDIR: "it is a directory",
    errno.ENXIO: "it is a socket or a device",
}


def say_once(path: str, message: str, *args: object) -> None:
    """One warning line (logger ``mmipc.bell``) about the file at `path`, once per path and process:
    what goes wrong with a bell file goes wrong again at every retry."""
    if path in _said:
        return
    _said.add(path)
    import logging  # not at import: `import mmipc` loads no logging

    logging.getLogger("mmipc.bell").warning(message, *args)


def say_fixed(path: str, message: str, *args: object) -> None:
    """After `say_once` warned about the file at `path`: say, once, that it works now (one line,
    logger ``mmipc.bell``); a later failure is warned about again."""
    if path not in _said:
        return
    _said.discard(path)
    import logging

    logging.getLogger("mmipc.bell").warning(message, *args)  # seen wherever the warning was


def _refuse(path: str, why: str) -> None:
    """Say once that NAME.bells is refused: a ringer retries every LATE_RETRY."""
    say_once(
        path,
        "refusing the bells file %s: %s; the journal's readers are not rung through it, they poll "
        "(up to their nap late): remove it",
        path,
        why,
    )


def _say_shut_out(path: str) -> None:
    """NAME.bells refused us (EACCES): say so once, if its mode is not the one its journal's gives
    it (`list_mode`): made by a reader of another user before the journal had a writer, it is that
    user's and 0600 until that user's reader sees the journal's first page (`follow_journal_mode`)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    mode, _ = list_mode(path)
    if stat.S_IMODE(st.st_mode) == mode:
        return
    say_once(
        path,
        "cannot open the bells file %s: it is uid %d's with mode %04o, not its journal's %04o (made "
        "by a reader before the journal had a writer?); the journal's readers are not rung through "
        "it, they poll (up to their nap late), until a reader of uid %d subscribes or sees the "
        "journal's first page, which sets its mode, or it is removed",
        path,
        st.st_uid,
        stat.S_IMODE(st.st_mode),
        mode,
        st.st_uid,
    )


def _may_grow_to(size: int) -> bool:
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return limit == resource.RLIM_INFINITY or limit >= size


class Bell:
    """A reader's own doorbell (created by `Bell.create`, unlinked by `close`). A forked child
    that inherits it (`mine` false there) leaves the file and its subscriptions to the parent."""

    __slots__ = ("path", "mm", "pending", "pid", "needy")

    def __init__(self, path: str, mm: mmap.mmap) -> None:
        self.path, self.mm, self.pid = path, mm, os.getpid()
        self.pending = memoryview(mm)[PENDING : PENDING + 4].cast("I")
        # flag index -> (its journal's NAME.bells, mapped; offset of this reader's needy byte)
        self.needy: dict[int, tuple[mmap.mmap, int]] = {}

    def need_all(self) -> None:
        """Set this reader's needy byte in every list it is in: after it announces sleep (its store
        of `sleeping`), before the fence and the re-check (docs/format.md, "Needy bytes")."""
        for mm, offset in self.needy.values():
            mm[offset] = 1

    @classmethod
    def create(cls) -> Bell | None:
        owner = f"{os.getpid()}.{start_ticks('self')}.{pid_namespace()}"
        name = f"mmipc-bell.{owner}.{next(_serial)}.{LOCKED_MARK}{os.urandom(4).hex()}"
        path = os.path.join(_bell_dir(), name)
        mm = _map(path, BELL_SIZE, create=True)
        return None if mm is None else cls(path, mm)

    def collect(self, n: int) -> list[int]:
        """The flagged journal indexes below `n`, cleared (then a fence: poll them after this)."""
        if native is not None:
            flagged: list[int] = native.bell_collect(self.mm, n)
            for i in flagged:
                cell = self.needy.get(i)
                if cell is not None:
                    cell[0][cell[1]] = 1
            if flagged and self.needy:
                fence()
            return flagged
        mm, needy = self.mm, self.needy
        _U32.pack_into(mm, PENDING, 0)
        fence()  # `pending` cleared before the flags are looked at: a ring's store of it stays
        out = []
        i = mm.find(b"\x01", FLAGS, FLAGS + n)
        while i >= 0:
            mm[i] = 0
            cell = needy.get(i - FLAGS)
            if cell is not None:  # after the clear (stores stay in order): its writer rings again
                cell[0][cell[1]] = 1
            out.append(i - FLAGS)
            i = mm.find(b"\x01", i + 1, FLAGS + n)
        fence()
        return out

    def sleep(self, how: int = ON_FUTEX, core: object = None) -> int:
        """Announce the reader sleeps (full fence), ON_FUTEX or IN_LOOP; the word to pass to `wait`.
        `core`: the reader's C merge (native), which sets the needy bytes in the same call."""
        if native is not None and core is not None:
            seq: int = native.bell_sleep(self.mm, how, core if self.needy else None)
            return seq
        if native is not None:
            seq = native.bell_sleep(self.mm, how)
        else:
            seq = _U32.unpack_from(self.mm, WORD)[0]
            _U32.pack_into(self.mm, SLEEPING, how)
        if self.needy:  # after `sleeping` (a writer that clears one sees the other), then a fence
            self.need_all()
            fence()
        elif native is None:
            fence()
        return seq

    def wait(self, seq: int, timeout: float | None) -> None:
        """Sleep until rung (or `timeout` s, None: no limit, but LONGEST_WAIT at most either way: a
        caller re-checks after any wake-up); the pure-Python backend sleeps BOUNDED_SLEEP at most."""
        if timeout is not None and not _non_negative_seconds(timeout):
            raise UsageError(f"a bell wait needs a timeout in seconds, a number >= 0 or None: {timeout!r}")
        if native is not None:
            native.bell_wait(self.mm, seq, -1 if timeout is None else int(min(timeout, LONGEST_WAIT) * 1e9))
            return
        time.sleep(BOUNDED_SLEEP if timeout is None else min(timeout, BOUNDED_SLEEP))
        _U32.pack_into(self.mm, SLEEPING, 0)

    def awake(self) -> None:
        """The reader found a frame after announcing sleep: it does not wait after all (or woke up).
        A bell closed meanwhile (a signal handler closed the reader) has nothing to clear."""
        if not self.mm.closed:
            _U32.pack_into(self.mm, SLEEPING, 0)

    def word(self) -> int:
        return int(_U32.unpack_from(self.mm, WORD)[0])

    @property
    def mine(self) -> bool:
        return self.pid == os.getpid()

    def close(self) -> None:
        self.needy.clear()
        self.pending.release()
        self.mm.close()
        if not self.mine:
            return  # a forked child's copy: the parent still sleeps on this file
        for path in (self.path, self.path + ".fifo"):
            try:
                os.unlink(path)
            except OSError:
                pass


class BellList:
    """A journal's ``NAME.bells``, as a reader edits it (under its flock)."""

    @staticmethod
    def subscribe(directory: str, name: str, bell: str, index: int) -> int | None:
        """Add (bell, index) to the journal's list: the slot number, or None (no room, no access).

        The bell's flag `index` is cleared first: a flag left set (rung by the journal that had
        this index, after the reader stopped collecting it) would make this journal's writer ring
        nothing, and nothing would make the reader collect it (docs/format.md, *A ring that stores
        nothing*)."""
        _clear_flag(bell, index)
        return _edit(directory, name, lambda mm: _claim(mm, bell, index))

    @staticmethod
    def unsubscribe(directory: str, name: str, slot: int, bell: str) -> None:
        _edit(directory, name, lambda mm: _release(mm, slot, bell))


def _clear_flag(bell: str, index: int) -> None:
    mm = _map(bell, BELL_SIZE, create=False)
    if mm is not None:
        if 0 <= index < MAX_FLAGS:
            mm[FLAGS + index] = 0
        mm.close()


def _edit(directory: str, name: str, change: Any) -> int | None:
    """Apply `change` to the journal's list under its flock: `change`'s result, or None (no list)."""
    path = bells_path(directory, name)
    for _ in range(EDIT_TRIES):
        fd = _open_fit_list(path, create=True)
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _still_named(fd, path):
                continue  # swapped since the open: a lock on the old file keeps out no editor
            mm = _map_fd(fd, LIST_SIZE, create=True)
            if mm is None:
                return None
            try:
                return _edit_locked(mm, change)
            finally:
                mm.close()
        except OSError:
            return None
        finally:
            os.close(fd)
    return None


def _still_named(fd: int, path: str) -> bool:
    """Whether `path` still names the file open at `fd` (no link, no other file put there)."""
    try:
        st, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _edit_locked(mm: mmap.mmap, change: Any) -> int | None:
    version = _U32.unpack_from(mm, VERSION)[0] | 1
    _U32.pack_into(mm, VERSION, version)  # odd: being edited, writers do not cache it
    _free_dead_slots(mm)
    result: int | None = change(mm)
    _U32.pack_into(mm, COUNT, _used(mm))
    _U32.pack_into(mm, VERSION, (version + 1) & 0xFFFFFFFF)
    fence()
    return result


def _slot_off(slot: int) -> int:
    return LIST_HEADER + slot * SLOT_SIZE


def _used(mm: mmap.mmap) -> int:
    """1 + the highest slot in use (the count writers scan up to)."""
    top = 0
    for slot in range(SLOTS):
        if _U32.unpack_from(mm, _slot_off(slot))[0]:
            top = slot + 1
    return top


def _free_dead_slots(mm: mmap.mmap) -> None:
    """Under the list's lock: free the slots of dead readers (and unlink their bells), and clear
    the needy byte of every free slot. A reader killed while needy would otherwise keep its
    journal's writer on its full ring for good, if the writer cannot map its bell to settle it."""
    for slot in range(SLOTS):
        state, _, pid, _, old = SLOT.unpack_from(mm, _slot_off(slot))
        if state and not _slot_alive(pid, old):
            _U32.pack_into(mm, _slot_off(slot), 0)
            _unlink_bell(old)
            state = 0
        if not state:
            mm[NEEDY + slot] = 0


def _claim(mm: mmap.mmap, bell: str, index: int) -> int | None:
    raw = os.fsencode(bell)
    for slot in range(SLOTS):
        state, gen, pid, _, old = SLOT.unpack_from(mm, _slot_off(slot))
        if state and _slot_alive(pid, old):
            continue
        if state:  # a dead reader's slot: reclaim it, and its bell file
            _unlink_bell(old)
        off = _slot_off(slot)
        _U32.pack_into(mm, off, 0)
        _U32.pack_into(mm, off + 4, (gen + 1) & 0xFFFFFFFF | 1)  # odd: being written
        mm[off + 8 : off + SLOT_SIZE] = SLOT.pack(0, 0, os.getpid(), index, raw)[8:]
        _U32.pack_into(mm, off + 4, (gen + 2) & 0xFFFFFFFE)
        mm[NEEDY + slot] = 1  # its flag is clear: it needs the next ring
        _U32.pack_into(mm, off, PROTOCOL_2)
        return slot
    return None


def _release(mm: mmap.mmap, slot: int, bell: str) -> None:
    off = _slot_off(slot)
    state, gen, pid, _, raw = SLOT.unpack_from(mm, off)
    if state and pid == os.getpid() and raw.rstrip(b"\0") == os.fsencode(bell):
        _U32.pack_into(mm, off, 0)
        mm[NEEDY + slot] = 0
    return None


def _unlink_bell(raw: bytes) -> None:
    """Remove a dead reader's bell and FIFO that a list names: only if they are in the bell
    directory (a hostile or corrupt list may name any path) and ours. A path with a NUL byte
    before its padding is damaged: it names nothing (and no os call takes it)."""
    path = os.fsdecode(raw.rstrip(b"\0"))
    directory, base = os.path.split(path)
    if not base.startswith("mmipc-bell.") or base.endswith(".fifo") or "\0" in path:
        return
    bell_dir = _bell_dir()
    if os.path.realpath(directory or ".") != os.path.realpath(bell_dir):
        return
    with _opened_dir(bell_dir) as dir_fd:
        if dir_fd >= 0:
            _remove_own(dir_fd, base)
            _remove_own(dir_fd, base + ".fifo")


def sweep_dead_bells(dead: frozenset[tuple[int, int, int]] = frozenset()) -> list[str]:
    """Remove the bells (and FIFOs) of readers that died without closing them: the names removed.

    Only our own user's files named ``mmipc-bell.*`` in the bell directory whose name records a pid
    that is gone, or that another process holds now (its start time differs); a name without the
    start time (an older version's) goes by the pid alone; a name we cannot parse stays. `dead`:
    owners (pid, start, pid namespace) known dead otherwise, the readers of another pid namespace
    whose counter file's heartbeat stopped (`_metrics.Owner.alive`): `owner_alive` keeps those.
    """
    removed = []
    with _opened_dir(_bell_dir()) as dir_fd:
        if dir_fd < 0:
            return []
        for base in os.listdir(dir_fd):
            owner = _bell_owner(base)
            gone = owner is not None and (owner in dead or not _bell_alive(base, owner))
            if gone and _remove_own(dir_fd, base):
                removed.append(base)
    return removed


def _bell_alive(base: str, owner: tuple[int, int, int]) -> bool:
    """Whether the reader of bell (or FIFO) `base` of the bell directory lives, for the sweep: by
    its flock if `_judged_by_flock` (one made in the last BELL_GRACE s is kept: its reader locks it
    just after making it), else `owner_alive`."""
    path = os.path.join(_bell_dir(), base.removesuffix(".fifo"))
    if _judged_by_flock(path, owner):
        return _held(path, BELL_GRACE)
    return owner_alive(*owner)


def _bell_owner(base: str) -> tuple[int, int, int] | None:
    """(pid, start ticks or -1, pid namespace or 0) from a bell's or FIFO's name (this version's
    PID.START.PIDNS.N.RANDOM, or an older PID.START.N.RANDOM or PID.N.RANDOM), or None if it is not
    one we made."""
    if not base.startswith("mmipc-bell."):
        return None
    parts = base.removesuffix(".fifo").split(".")[1:]
    # ASCII digits only: str.isdigit() also holds for "²", which int() refuses
    if len(parts) not in (3, 4, 5) or not all(p.isascii() and p.isdigit() for p in parts[:-2]):
        return None
    start = int(parts[1]) if len(parts) >= 4 else -1
    return int(parts[0]), start, int(parts[2]) if len(parts) == 5 else 0


def _slot_alive(pid: int, raw: bytes) -> bool:
    """Whether a bell-list slot's reader lives: by its bell's name (pid, start time, namespace) if
    the name records the slot's pid, else by the pid alone (an older name, or a path we did not make)."""
    path = os.fsdecode(raw.rstrip(b"\0"))
    owner = _bell_owner(os.path.basename(path))
    if owner is None or owner[0] != pid:
        return pid_alive(pid)
    return _held(path) if _judged_by_flock(path, owner) else owner_alive(*owner)


def _judged_by_flock(path: str, owner: tuple[int, int, int]) -> bool:
    """Whether bell `path` of `owner` is judged by its flock: its reader is of another pid namespace
    (its pid names nothing here) and its name says it holds one (this version's, LOCKED_MARK)."""
    ns = owner[2]
    marked = os.path.basename(path).removesuffix(".fifo").rpartition(".")[2].startswith(LOCKED_MARK)
    return marked and ns != 0 and ns != pid_namespace()


def _held(path: str, grace: float = 0.0) -> bool:
    """Whether a process holds the flock of bell `path` (`_map`: its reader, while it has it
    mapped; a forked child too). A bell gone is a reader gone; one we cannot open or that is not
    a regular file, or (`grace`) changed less than `grace` s ago, is taken as held: we cannot tell."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or time.time() - st.st_ctime < grace:
            return True
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at the close below
    except OSError:
        return True  # held (EWOULDBLOCK), or cannot tell
    finally:
        os.close(fd)
    return False


_PID_NS: dict[int, int] = {}  # pid -> its pid namespace: a process forked after unshare has another


def pid_namespace() -> int:
    """This process's pid namespace: the inode of /proc/self/ns/pid, 0 if unknown (no /proc)."""
    pid = os.getpid()
    ns = _PID_NS.get(pid)
    if ns is None:
        try:
            ns = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            ns = 0
        _PID_NS[pid] = ns
    return ns


def owner_alive(pid: int, start: int, ns: int = 0) -> bool:
    """Whether the process that made a bell (or wrote a counter file, `_metrics`) lives: `pid`
    exists and, if its start time was recorded (`start` > 0), started then. A pid reused by a later
    process is not the owner. An owner recorded in another pid namespace (`ns`, 0: not recorded)
    counts as alive: its pid names nothing here, so it cannot be checked, and taking it for dead
    would remove the bell, slots and pages a live reader in a container still uses."""
    if ns and ns != pid_namespace():
        return True
    if not pid_alive(pid):
        return False
    if start <= 0:
        return True  # not recorded (an older file, or unknown when made): the pid alone decides
    return start_ticks(pid) in (0, start)  # 0: cannot tell, so keep it


@contextlib.contextmanager
def _opened_dir(path: str) -> Iterator[int]:
    """A descriptor of directory `path` (-1 if it cannot be opened), closed after."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    try:
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)


def _remove_own(dir_fd: int, base: str) -> bool:
    """Unlink `base` in `dir_fd` if it is our user's regular file (a FIFO for ``*.fifo``), not a
    link: whether it was removed."""
    try:
        st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
        kind_ok = stat.S_ISFIFO(st.st_mode) if base.endswith(".fifo") else stat.S_ISREG(st.st_mode)
        if not kind_ok or st.st_uid != os.getuid():
            return False
        os.unlink(base, dir_fd=dir_fd)
    except OSError:
        return False
    return True


class Ringer:
    """A writer's side of ``NAME.bells``: `count[0]` is the one load per commit; `ring` the rest.

    The bells to ring are cached with the list's version: while no reader edits the list, a ring
    is one load of the version and one call per bell.
    """

    __slots__ = ("mm", "list", "count", "_version", "_targets", "_bells", "_legacy", "_top")

    def __init__(self, mm: mmap.mmap | None) -> None:
        self.mm = mm
        self._legacy, self._top = True, 0  # set by _reload: ring in full / the needy bytes to look at
        # `list[COUNT]`: the low byte of the count (at most SLOTS = 64), the writer's one load per
        # commit: an mmap's item costs half a memoryview's
        self.list: mmap.mmap | bytearray = mm if mm is not None else bytearray(LIST_HEADER)
        self.count = memoryview(self.list)[COUNT : VERSION + 4].cast("I")  # [count, version]
        self._version = -1
        self._targets: list[list[Any]] = []  # [bell map, flag offset, bell path, FIFO fd or -1]
        self._bells: dict[str, mmap.mmap | None] = {}

    @classmethod
    def open(cls, directory: str, name: str) -> Ringer:
        path = bells_path(directory, name)
        mm = _map_list(path, LIST_SIZE, create=True)
        return cls(mm) if mm is not None else LateRinger(path)

    def ring(self) -> None:
        """Ring every bell listed (called after a commit, when the count is not 0).

        The fence F first (a lock round trip here: the commit before every load below), then the
        list's version (Dekker with a subscriber's fence) and its needy bytes: when no reader needs
        a ring, that is all, whatever their number (docs/format.md, "Needy bytes"). Otherwise each
        bell found asleep, or whose flag is clear, is settled (`_settle`: flag, `pending`, fence,
        wake); one whose flag is set and whose reader is awake needs nothing (*A ring that stores
        nothing*); then the needy bytes of the bells rung are settled (`_settle_needy`). A list that
        changed is read again and its bells rung in full; a bell flagged on its way out of the list
        costs its reader one spurious poll at most.
        """
        if native is not None:
            self._ring_native()
            return
        if _fence_lock.acquire(False):  # fence(), inlined: this is the pure-Python writer's hot path
            _fence_lock.release()
        else:
            _own_fence()
        if self.count[1] != self._version:
            keeping_up = []  # flag found clear: its reader collects every frame, and stays needy
            self._reload()
            for target in self._targets:
                if not target[0][target[1]]:
                    keeping_up.append(target)
                if _ring(target[0], target[1] - FLAGS) == IN_LOOP:
                    _poke(target)
        elif not self._legacy and self.list.find(b"\x01", NEEDY, NEEDY + self._top) < 0:
            return  # nobody needs a ring
        else:
            keeping_up = []
            for target in self._targets:
                bell = target[0]
                if not bell[target[1]]:
                    keeping_up.append(target)
                    _settle(target)
                elif bell[SLEEPING]:  # 0, 1 or 2
                    _settle(target)
        if not self._legacy:
            _settle_needy(self.list, self._targets, keeping_up)

    def _ring_native(self) -> None:
        assert native is not None
        fence()  # the commit before the loads of the list (Dekker, with the subscriber's fence)
        if self.count[1] != self._version:
            self._reload()
        for target in self._targets:
            if native.bell_ring(target[0], target[1] - FLAGS) == IN_LOOP:
                _poke(target)

    def _reload(self) -> None:
        """Read the slots again (a reader edited the list): between two loads of the version, so a
        half-written list is never cached (its reader polls everything after subscribing anyway)."""
        mm = self.mm
        assert mm is not None
        version = _U32.unpack_from(mm, VERSION)[0]
        targets, bells = [], {}
        self._top = min(self.count[0], SLOTS)
        self._legacy = len(mm) < LIST_SIZE  # an older reader's list, mapped by a late ringer
        for slot in range(self._top):
            state, _, _, index, raw = SLOT.unpack_from(mm, _slot_off(slot))
            path = os.fsdecode(raw.rstrip(b"\0"))
            if not state or index >= MAX_FLAGS:
                continue
            self._legacy |= state != PROTOCOL_2  # an older reader keeps no needy byte
            bell = self._bells.pop(path, None) if path in self._bells else _map(path, BELL_SIZE, create=False)
            bells[path] = bell
            if bell is not None:
                targets.append([bell, FLAGS + index, path, -1, NEEDY + slot])
        for old in self._bells.values():
            if old is not None:
                old.close()
        for target in self._targets:
            if target[3] >= 0:
                os.close(target[3])
        self._bells, self._targets = bells, targets
        stable = not version & 1 and _U32.unpack_from(mm, VERSION)[0] == version
        self._version = version if stable else -1

    def close(self) -> None:
        self.count.release()
        self.list = bytearray(LIST_HEADER)
        for target in self._targets:
            if target[3] >= 0:
                os.close(target[3])
        self._targets = []
        for bell in self._bells.values():
            if bell is not None:
                bell.close()
        self._bells.clear()
        if self.mm is not None:
            self.mm.close()


class LateRinger(Ringer):
    """A writer that could not make ``NAME.bells`` (RLIMIT_FSIZE, a full disk, no permission).

    Its `list[COUNT]` is 1, so its writer calls `ring` after every commit: that tries to map the
    list (made by then by a subscribing reader, whose limits are its own) at most every
    `LATE_RETRY` seconds, and rings once mapped. A writer keeps calling `ring`, which then costs a
    load of the count more per commit than a normal ringer (docs/format.md, "Doorbells").
    """

    __slots__ = ("path", "_retry_at")

    def __init__(self, path: str) -> None:
        super().__init__(None)
        self.list[COUNT] = 1
        self.path, self._retry_at = path, 0.0

    def ring(self) -> None:
        if self.mm is None:
            now = time.monotonic()
            if now < self._retry_at:
                return
            self._retry_at = now + LATE_RETRY
            mm = _map_list(self.path, LIST_SIZE, create=False)
            if mm is None:  # an older reader's list (format 1): rung in full
                mm = _map_list(self.path, LIST_V1_SIZE, create=False)
            if mm is None:
                return
            self.count.release()
            self.mm, self.list = mm, mm
            self.count = memoryview(mm)[COUNT : VERSION + 4].cast("I")
        if self.count[0]:
            super().ring()


def _poke(target: list[Any]) -> None:
    """Wake an asyncio reader: one byte into its bell's FIFO (opened once, non-blocking)."""
    if target[3] < 0:
        target[3] = _open_fifo(target[2] + ".fifo")
        if target[3] < 0:
            return  # no loop listens: the reader's wait ends within its max_nap
    try:
        os.write(target[3], b"!")
    except BlockingIOError:
        pass  # full: the reader has plenty to wake up to
    except OSError:
        os.close(target[3])
        target[3] = -1


def _open_fifo(path: str) -> int:
    """A descriptor to write a byte into FIFO `path`, or -1: never a link, a regular file or a
    device (a list, which anyone who may write it may fill, names the bell: a FIFO "!" lands in)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return -1


def _settle(target: list[Any]) -> None:
    """After a ring's fence: a bell whose reader sleeps, or that cleared its flag since the ring
    looked before the fence: flag it again (then fence), and wake its reader if it sleeps."""
    bell, flag = target[0], target[1]
    if not bell[flag]:
        bell[flag] = 1
        bell[PENDING] = 1
        fence()  # the flag before the load of `sleeping` (Drepper's rule)
    if bell[SLEEPING] and _wake(bell) == IN_LOOP:
        _poke(target)


def _settle_needy(needy: mmap.mmap | bytearray, targets: list[list[Any]], keeping_up: list[Any]) -> None:
    """After a ring: clear the needy byte (in list `needy`) of each bell rung, fence, and set it
    again where the bell's flag is clear or its reader sleeps: a reader's store of 1 that the clear
    overwrote came after its clear of the flag or its announcement, which the look after the fence
    sees (docs/format.md, "Needy bytes"). The bells `keeping_up` (flag found clear: their reader
    collects every frame) stay needy: clearing would cost a fence per commit for nothing."""
    skip = {id(t) for t in keeping_up}
    cleared = [t for t in targets if needy[t[4]] and id(t) not in skip]
    if not cleared:
        return
    for target in cleared:
        needy[target[4]] = 0
    fence()
    for target in cleared:
        bell = target[0]
        if bell[SLEEPING] or not bell[target[1]]:
            needy[target[4]] = 1


def _ring(bell: mmap.mmap, index: int) -> int:
    """The pure-Python ring of one bell: the old value of `sleeping`."""
    bell[FLAGS + index] = 1
    _U32.pack_into(bell, PENDING, 1)
    fence()
    return _wake(bell)


def _wake(bell: mmap.mmap) -> int:
    """After the flag, `pending` and a fence: wake the bell's reader if it sleeps; the old value
    of `sleeping`."""
    sleeping = int(_U32.unpack_from(bell, SLEEPING)[0])
    if sleeping:
        _U32.pack_into(bell, SLEEPING, 0)
    if sleeping == ON_FUTEX:
        _U32.pack_into(bell, WORD, (_U32.unpack_from(bell, WORD)[0] + 1) & 0xFFFFFFFF)
        _futex_wake(bell)
    return sleeping


_FUTEX_WAKE = 1
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)


def _futex_wake(bell: mmap.mmap) -> None:
    """FUTEX_WAKE through libc's syscall(): the pure-Python writer's way to wake a native reader."""
    if _SYS_FUTEX is None:
        return  # the reader's wait ends within its MAX_NAP anyway
    import ctypes  # only pure-Python writers that find a reader asleep get here

    try:
        libc = ctypes.CDLL(None)
        word = ctypes.c_uint32.from_buffer(bell, WORD)
    except (OSError, TypeError, ValueError):
        return
    libc.syscall(_SYS_FUTEX, ctypes.byref(word), _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)
    del word
