"""Reader position counters: where each reader stands, published to a small file the service reads.

Rules:

* Each reader linked to a service has one counter file, ``<home>/readers/<name>.counters``
  (COUNTER_FILE_SIZE bytes, mode 0600), mapped by its process. Like Aeron's counters, it is written
  by the reader's process and only read by others; nothing is ever sent over the socket per frame.
* The reader's hot path does not touch it: `read()` costs exactly what it did. A publisher thread
  (one per process, for all its readers) copies each cursor's position into the file every
  PUBLISH_INTERVAL, and only when it changed, with a few `pack_into` calls. So a published position is
  at most PUBLISH_INTERVAL old; the thread takes the GIL a few microseconds per tick. `add_journal`
  also publishes at once (`hold`), so that a new reader holds its pages against retention from the
  moment it stands on them, not PUBLISH_INTERVAL later, and checks that its page survived until
  then (see `hold` and `_retention`). A lock keeps the publisher thread apart.
* A seqlock guards each update: the generation word is odd while the publisher writes; a reader of
  the file retries until it reads the same even generation before and after.
* A linked reader that cannot create its file is not created: `Reader.create` raises StorageError
  naming the path and the OS error (a read-only or full disk, a file where ``readers/`` should be,
  no file descriptor left). A reader that published nothing would hold no page, and the service's
  retention (or `mmipc prune`, which reads the same files and never the service's memory) could
  remove pages it still needs: silent loss. Holding every page for it at the service instead was
  rejected: a hold known only to the service's memory is invisible to `mmipc prune`, and the
  cause is one the user fixes in seconds, told where.
* A reader that closes removes its file (not a forked child's copy of it: the file stays the parent's,
  and the child's publisher thread, if it starts one, publishes only the child's own readers). A
  reader that dies leaves it: the service shows that reader
  as dead for DEAD_LINGER seconds after its registration ended, then removes it, and retention
  stops counting its positions. Dead means: its pid is gone, or now belongs to a process that
  started at another time than the one recorded at offset 56 (`_bell.owner_alive`, as for bells). A pid
  alone is not enough: on a desk that runs for months the kernel hands a dead reader's pid to
  another process, and the dead reader's file would hold its pages forever. A reader whose pid
  namespace (offset 96) is not the service's, one in a container sharing the home, cannot be
  checked by its pid from here: it counts as alive while its heartbeat (offset 24, wall clock) is
  younger than FOREIGN_LIMIT (the service's `foreign_reader_limit`), dead after (`Owner.alive`).
  The publisher thread writes the heartbeat every PUBLISH_INTERVAL, moved or not, so a live idle
  reader keeps it fresh. The trade-off: a container reader frozen (SIGSTOP, a suspended VM) longer
  than the limit loses its hold, and its pages may go. A heartbeat in the future (the wall clock
  stepped back) is fresh; one stepped forward past the limit is taken as dead until the next beat.

File layout (little-endian)::

     0 magic "MMIPCPOS" | 8 version u32 | 12 pid u32 | 16 generation u64 | 24 heartbeat_ns i64
    32 started_ns i64   | 40 durable u32 | 44 wait u32 | 48 journals_len u32 | 52 slots u32
    56 start_ticks u64: the process's start time (/proc/PID/stat, clock ticks since boot; 0: unknown)
    64 + 64*i: slot i = page_no i64, offset i64, nano i64, changed_ns i64 (wall time it last moved);
               the slot's other 32 bytes are free, but for:
    96 pid_ns u64: the process's pid namespace (inode of /proc/self/ns/pid; 0: unknown), in slot 0's
               free bytes (the header is full)
    then JSON [[directory, name], ...] of the journals, in slot order: at JOURNALS_AT in version 1

`start_ticks` and `pid_ns` took 8 bytes each that were zero before them (the version stays 1): a
file written by an older mmipc reads as "start unknown, namespace unknown", and its pid alone
decides, as before; an older mmipc ignores both.

Version 1 is a file of COUNTER_FILE_SIZE bytes for at most MAX_SLOTS journals. A reader that
follows more (a risk monitor of hundreds of journals) writes version 2: one slot per journal, the
JSON right after the last slot, in a file grown as needed (whole 4 KiB pages, at most
MAX_FILE_SIZE, allocated before they are mapped: a hole is SIGBUS on a full disk; a file that
cannot grow stays marked as being written, and holds every page, until it can). It writes version 1
again once its journals fit. Every journal is published: a journal left out would hold no page
against retention while the reader still needs it (an mmipc that knows version 1 only ignores a
version 2 file, as it ignored the journals past the 64th).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import stat
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import StorageError
from ._bell import owner_alive, pid_namespace, start_ticks
from ._files import check_name, read_regular

if TYPE_CHECKING:
    from ._cursor import Cursor

log = logging.getLogger("mmipc.metrics")

MAGIC = b"MMIPCPOS"
VERSION = 1
VERSION_WIDE = 2  # more journals than MAX_SLOTS, or a list longer than version 1 has room for
COUNTER_FILE_SIZE = 16384
MAX_SLOTS = 64
MAX_FILE_SIZE = 64 << 20  # version 2: about 100,000 journals of short paths
SLOT_SIZE = 64
SLOTS_AT = 64
JOURNALS_AT = SLOTS_AT + MAX_SLOTS * SLOT_SIZE
PUBLISH_INTERVAL = 0.2
DEAD_LINGER = 60.0
FOREIGN_LIMIT = 600.0  # seconds without a heartbeat after which another pid namespace's reader is dead
READERS_DIR = "readers"
SUFFIX = ".counters"
WAIT_MODES = ("read", "backoff", "spin", "custom", "block")  # stored by index: append only

HEADER = struct.Struct("<8sIIQqqIIII")
GENERATION = struct.Struct("<Q")
SLOT = struct.Struct("<qqqq")
START_AT = HEADER.size  # 56: the owner's start_ticks, in what was the header's padding
START = struct.Struct("<Q")
PID_NS_AT = SLOTS_AT + SLOT.size  # 96: the owner's pid namespace, in slot 0's free bytes


class Published(NamedTuple):
    """One journal's published reader position."""

    directory: str
    name: str
    page_no: int
    offset: int
    nano: int
    changed_ns: int


def counters_path(home: str, name: str) -> str:
    return os.path.join(home, READERS_DIR, check_name(name, "reader") + SUFFIX)


class Board:
    """One reader's counter file. Its cursors list is the reader's own (mutated in place)."""

    def __init__(self, path: str, cursors: list[Cursor], durable: bool) -> None:
        self.path = path
        self.cursors = cursors
        self.wait = 0
        self._durable = int(durable)
        self._published: list[tuple[int, int, int]] = []
        self._journals: list[tuple[str, str]] = []
        self._journals_size = 2  # "[]"
        # even, and where no earlier file of this name left off: retention's cache knows a file by
        # (device, inode, ctime, pid, start, generation), and a reader made again by the same
        # process may get the inode back within one tick of a coarse ctime (kernels before 6.13)
        self._generation = int.from_bytes(os.urandom(6), "little") * 2
        self._lock = threading.Lock()
        self._pid = os.getpid()  # a forked child's copy leaves the file to the parent (`close`)
        self._version = VERSION
        self._mm, self._file = _create(path)
        self._write_header(time.time_ns())

    def wait_mode(self, wait: object) -> None:
        """Record how the reader waits: its `frames(wait=...)` name, or "custom"."""
        self.wait = WAIT_MODES.index(wait) if isinstance(wait, str) and wait in WAIT_MODES else 3

    def hold(self, cursor: Cursor) -> None:
        """Publish a cursor just placed, then make sure its page was not removed meanwhile.

        Retention re-reads the published positions before removing each page, oldest first. So if
        the page is still there after we published, no page from it on can go any more; if it is
        gone, the cursor is placed again, on what is left, and published again.
        """
        self.publish_now()
        while cursor.page is not None and not os.path.exists(cursor.page.path):
            cursor.position(cursor.start)
            self.publish_now()

    def publish_now(self) -> None:
        """Publish from the reader's thread (after `add_journal`); a failure is logged, never raised."""
        try:
            self.publish()
        except Exception as exc:  # a full disk must not fail add_journal
            log.debug("could not publish %s: %s", self.path, exc)

    def publish(self) -> None:
        """Copy the cursors' positions into the file if they moved (publisher thread)."""
        with self._lock:
            self._publish()

    def _publish(self) -> None:
        now = time.time_ns()
        jids = [(c.jid.directory, c.jid.name) for c in self.cursors]
        # by journal: the list may have changed (and _write_journals may have cut it short)
        before = dict(zip(self._journals, self._published, strict=False))
        positions = [
            _position_of(c, before.get(jid, (-1, -1, -1))) for c, jid in zip(self.cursors, jids, strict=True)
        ]
        changed = jids != self._journals
        if not changed and positions == self._published:
            self._heartbeat(now)
            return
        self._begin()
        if changed:
            self._write_journals(jids)
            positions = positions[: len(self._journals)]
        for i, position in enumerate(positions):
            if changed or position != self._published[i]:  # a new list: every slot is rewritten
                SLOT.pack_into(self._mm, SLOTS_AT + i * SLOT_SIZE, *position, now)
        self._published = positions
        self._write_header(now)
        self._end()

    def _write_header(self, now: int) -> None:
        HEADER.pack_into(
            self._mm, 0, MAGIC, self._version, os.getpid(), self._generation, now, _started(),
            self._durable, self.wait, self._journals_size, len(self._journals),
        )  # fmt: skip
        START.pack_into(self._mm, START_AT, _start_ticks())
        START.pack_into(self._mm, PID_NS_AT, pid_namespace())

    def _write_journals(self, jids: list[tuple[str, str]]) -> None:
        """The journals' list, and the layout it needs: version 1 if it fits, else version 2 in a
        file grown to hold it (inside the seqlock: the service takes nothing of it meanwhile)."""
        data = json.dumps(jids).encode()
        fits = len(jids) <= MAX_SLOTS and len(data) <= COUNTER_FILE_SIZE - JOURNALS_AT
        at = JOURNALS_AT if fits else journals_at(VERSION_WIDE, len(jids))
        while at + len(data) > MAX_FILE_SIZE:  # past any real reader: the rest goes unpublished
            jids = jids[: len(jids) * 9 // 10]
            data = json.dumps(jids).encode()
            at = journals_at(VERSION_WIDE, len(jids))
        if at + len(data) > len(self._mm):
            self._grow(-(-(at + len(data)) // 4096) * 4096)
        self._version = VERSION if fits else VERSION_WIDE
        self._journals, self._journals_size = jids, len(data)  # the header's size, kept: no JSON per tick
        self._mm[at : at + len(data)] = data

    def _grow(self, size: int) -> None:
        """Allocate the file to `size` bytes, then map them: a part grown by `resize` alone is a hole,
        and a store into one on a full disk is SIGBUS. An OSError (ENOSPC) leaves the seqlock open:
        the file reads as being written, and holds every page while its reader lives (`_begin`)."""
        fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self._file:
                raise StorageError(f"counter file {self.path} was replaced: not growing another's")
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        self._mm.resize(size)

    def _heartbeat(self, now: int) -> None:
        struct.pack_into("<q", self._mm, 24, now)

    def _begin(self) -> None:
        """Open the seqlock (odd generation); an update that failed left it open: it stays so."""
        self._generation += 1 - self._generation % 2
        GENERATION.pack_into(self._mm, 16, self._generation)

    def _end(self) -> None:
        self._generation += 1
        GENERATION.pack_into(self._mm, 16, self._generation)

    def close(self) -> None:
        """Stop publishing and remove the file; in a forked child (the board inherited with its
        reader) only unmap the child's copy: the file is the parent's, which goes on publishing.
        No lock there: the parent's publisher thread may have held it at the fork."""
        if self._pid != os.getpid():
            self._mm.close()
            return
        PUBLISHER.remove(self)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        with self._lock:
            self._mm.close()


def _position_of(cursor: Cursor, published: tuple[int, int, int]) -> tuple[int, int, int]:
    """(page_no, offset, nano) of a cursor, read so that page and offset belong together; the
    position `published` before while the cursor has no page. A cursor between two pages has none
    for a moment (`_enter_page` unmaps the old page before it sets the new one), and this thread may
    run just then: publishing "no position" there let retention remove every page past the reader's
    while it was stopped (`mmipc torture --seed 7`, a reader stalled in that instant)."""
    while True:
        page_no = cursor.page_no
        position = (page_no, cursor.pos, cursor.last_nano)
        if cursor.page_no == page_no:
            return position if cursor.page is not None else published


_STARTED = time.time_ns()


def _started() -> int:
    return _STARTED


_START_TICKS: dict[int, int] = {}  # pid -> its start_ticks: a forked child has its own


def _start_ticks() -> int:
    pid = os.getpid()
    ticks = _START_TICKS.get(pid)
    if ticks is None:
        ticks = _START_TICKS[pid] = start_ticks("self")
    return ticks


def _create(path: str) -> tuple[mmap.mmap, tuple[int, int]]:
    """The new file mapped, and its (device, inode): `_grow` allocates that file, no other."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.posix_fallocate(fd, 0, COUNTER_FILE_SIZE)  # no hole: a store into one on a full disk is SIGBUS
        mm = mmap.mmap(fd, COUNTER_FILE_SIZE)
        info = os.fstat(fd)
        os.rename(tmp, path)
    except OSError:
        _remove_quietly(tmp)
        raise
    finally:
        os.close(fd)
    return mm, (info.st_dev, info.st_ino)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Publisher:
    """The process's publisher thread, started with its first board."""

    def __init__(self) -> None:
        self._boards: weakref.WeakSet[Board] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, board: Board) -> None:
        with self._lock:
            self._boards.add(board)
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="mmipc-positions", daemon=True)
                self._thread.start()

    def remove(self, board: Board) -> None:
        with self._lock:
            self._boards.discard(board)

    def forget_after_fork(self) -> None:
        """In a forked child: the boards are the parent's (its thread publishes them; one started
        here would write the child's stale copies of the positions into them), and the lock may
        have been held by that thread at the fork."""
        self._lock = threading.Lock()
        self._boards = weakref.WeakSet()
        self._thread = None

    def _run(self) -> None:
        while True:
            time.sleep(PUBLISH_INTERVAL)
            with self._lock:
                boards = list(self._boards)
            for board in boards:
                try:
                    board.publish()
                except Exception as exc:  # a closed board or a full disk must not end the thread
                    log.debug("could not publish %s: %s", board.path, exc)


PUBLISHER = _Publisher()
os.register_at_fork(after_in_child=PUBLISHER.forget_after_fork)


def open_board(home: str, name: str, cursors: list[Cursor], durable: bool) -> Board:
    """Start publishing a reader's positions; StorageError if its file cannot be made (see the
    rules: a reader that publishes nothing holds nothing, and retention would remove its pages)."""
    path = counters_path(home, name)
    try:
        board = Board(path, cursors, durable)
    except OSError as exc:
        raise StorageError(
            f"reader {name} cannot create its position file {path}: {_why(exc, path)}"
        ) from None
    PUBLISHER.add(board)
    return board


def _why(exc: OSError, path: str) -> str:
    """What is wrong, and what to do. A directory in the file's place is named as such (the rename
    onto it failed, and the OS error named the temporary file renamed). Otherwise the OS error, and
    the file it was about when that is not the position file itself (a file where the ``readers/``
    directory should be: "File exists (/home/readers)")."""
    if os.path.isdir(path) and not os.path.islink(path):
        return f"{path} is a directory: remove it, then create the reader again"
    why = exc.strerror or str(exc)
    where = exc.filename2 or exc.filename  # a rename's: the position file, not the temporary one
    if where and where != path:
        why = f"{why} ({where})"
    return (
        f"{why}; without it the service's retention could remove pages the reader still needs: make "
        f"{os.path.dirname(path)} a writable directory with free space (and files left under "
        f"`ulimit -n`), then create the reader again"
    )


def close_board(board: Board | None) -> None:
    if board is not None:
        PUBLISHER.remove(board)
        board.close()


# -- for the service ------------------------------------------------------------------------------


def read_counters(path: str) -> dict[str, Any] | None:
    """A counter file's consistent content, or None if it is not one (or keeps changing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        for _ in range(8):  # the size again each time: the publisher may have grown the file
            data = os.pread(fd, min(max(os.fstat(fd).st_size, COUNTER_FILE_SIZE), MAX_FILE_SIZE), 0)
            if len(data) < COUNTER_FILE_SIZE or data[:8] != MAGIC:
                return None
            parsed = _parse(data)
            if parsed is not None and os.pread(fd, 24, 0)[16:24] == data[16:24]:
                return parsed
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


class Owner(NamedTuple):
    """Who wrote a counter file, and when it last showed it lived."""

    pid: int
    start_ticks: int
    pid_ns: int
    heartbeat_ns: int

    @classmethod
    def of(cls, counters: dict[str, Any]) -> Owner:
        return cls(counters["pid"], counters["start_ticks"], counters["pid_ns"], counters["heartbeat_ns"])

    def foreign(self) -> bool:
        """Recorded in another pid namespace than ours: its pid names nothing here."""
        return bool(self.pid_ns) and self.pid_ns != pid_namespace()

    def alive(self, foreign_limit: float = FOREIGN_LIMIT) -> bool:
        """By its pid and start time (`_bell.owner_alive`); one of another pid namespace by its
        heartbeat: alive while younger than `foreign_limit` seconds (see the rules)."""
        if self.foreign():
            return time.time_ns() - self.heartbeat_ns < foreign_limit * 1e9
        return owner_alive(self.pid, self.start_ticks, self.pid_ns)


def counters_owner(path: str) -> Owner | None:
    """The owner in a counter file's header, read whatever its generation (a publisher may be in
    the middle of an update, or stopped there); None if the file is not a counter file."""
    size = PID_NS_AT + START.size
    data = read_regular(path, size)
    if data is None or len(data) != size or data[:8] != MAGIC:
        return None
    _, version, pid, _, beat = HEADER.unpack_from(data)[:5]
    if version not in (VERSION, VERSION_WIDE):
        return None
    return Owner(int(pid), START.unpack_from(data, START_AT)[0], START.unpack_from(data, PID_NS_AT)[0], beat)


def _parse(data: bytes) -> dict[str, Any] | None:
    """The content of a counter file snapshot; None if the publisher was writing it."""
    magic, version, pid, gen, beat, started, durable, wait, jlen, slots = HEADER.unpack_from(data)
    if version not in (VERSION, VERSION_WIDE) or gen % 2 or (version == VERSION and slots > MAX_SLOTS):
        return None
    at = journals_at(version, slots)
    if at + jlen > len(data):  # cut short (the file grew after its size was taken), or damaged
        return None
    try:
        journals = json.loads(data[at : at + jlen] or b"[]")
        positions = [
            Published(str(d), str(n), *SLOT.unpack_from(data, SLOTS_AT + i * SLOT_SIZE))
            for i, (d, n) in enumerate(journals[:slots])
        ]
    except (ValueError, TypeError, RecursionError):  # a damaged list: json nests arrays recursively
        return None
    if any("\0" in p.directory or "\0" in p.name for p in positions):  # no path has one: damaged,
        return None  # and os.path.realpath would raise in every status and retention pass
    mode = WAIT_MODES[wait] if wait < len(WAIT_MODES) else "custom"
    start, ns = START.unpack_from(data, START_AT)[0], START.unpack_from(data, PID_NS_AT)[0]
    return {"pid": pid, "start_ticks": start, "pid_ns": ns, "heartbeat_ns": beat, "started_ns": started,
            "durable": bool(durable), "wait": mode, "positions": positions}  # fmt: skip


def journals_at(version: int, slots: int) -> int:
    """Where a counter file's journal list starts: fixed in version 1, after the slots in 2."""
    return JOURNALS_AT if version == VERSION else SLOTS_AT + max(slots, 1) * SLOT_SIZE


def list_counters(home: str) -> dict[str, str]:
    """Reader name -> counter file path, for every counter file in the home."""
    directory = os.path.join(home, READERS_DIR)
    try:
        entries = os.listdir(directory)
    except OSError:
        return {}
    return {e[: -len(SUFFIX)]: os.path.join(directory, e) for e in entries if e.endswith(SUFFIX)}
