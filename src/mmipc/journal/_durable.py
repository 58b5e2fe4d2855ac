"""Durable cursors: where a named reader stands in each journal, kept on disk across crashes.

Rules:

* One file per reader name, ``<cursor_dir>/<name>.cursor`` (default cursor_dir: the service home's
  ``cursors/``, mode 0700). It holds, per journal, the position just past the last frame the
  application acknowledged: ``(page_no, offset, nano, seq)``, with `nano` the timestamp of that
  frame (0 if none yet) and `seq` its full 64-bit sequence number (format v2; -1 on a version-1
  page, or before the journal's first frame). Resume is O(1): map that page, start at that offset.
  The seq is found at commit time from the page the cursor has mapped (the time index and a frame
  or two), never on the read path; it makes a durable reader's lag in frames exact.
* A commit writes the whole record to a temporary file, fsyncs it, renames it over the old one and
  fsyncs the directory. `rename` is atomic: after a SIGKILL or a crash at any instant the file is
  the old record or the new one, never a mix, never empty. The record carries a CRC-32 and a
  generation counter; a file that fails its check is an error (`CursorError`), never a silent
  restart from the beginning.
* A commit never moves a journal's position backwards unless asked (`reset`); the generation only grows.
  A journal that has no page yet is committed as page 0's start: the reader holds it against
  retention from its first frame on, and resumes there.
* Only one process uses a name's cursor at a time: ``<name>.cursor.lock`` is `flock`ed while a
  durable reader is open (the kernel drops it when the process dies).
* On load a position is checked against the journal: its page exists, `offset` is a frame boundary
  and the frame that ends there has timestamp `nano` (and, on a version-2 page, sequence number
  `seq`, unless the record predates seqs in cursor files: -1). A page that retention removed is not an error:
  the reader resumes at the oldest page after it (the frames of the removed page are gone, and a
  warning says so). Anything else that does not match is a `CursorError`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
import time
import zlib
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .._errors import CursorError, UsageError
from ..service._home import resolve_home
from ..service._lag import live_first_seq
from ._files import (
    NAME_PATTERN,
    check_directory,
    check_name,
    list_pages,
    page_path,
    try_lock,
    write_atomically,
)
from ._layout import PAGE_HEADER_SIZE, FrameInfo, full_seq
from ._page import MappedPage
from ._types import Frame, JournalId

if TYPE_CHECKING:
    from ._cursor import Cursor

log = logging.getLogger("mmipc.cursor")

SUFFIX = ".cursor"
FORMAT = "mmipc-cursor 1"
MAX_FILE = 1 << 20
Sized_T = TypeVar("Sized_T", bound=Sized)


class Position(NamedTuple):
    """Just past the last acknowledged frame of one journal."""

    page_no: int
    offset: int
    nano: int
    seq: int = -1


def cursor_dir_for(cursor_dir: str | os.PathLike[str] | None, home: str | os.PathLike[str] | None) -> str:
    """The directory of the cursor files: `cursor_dir`, else the home's ``cursors/``."""
    if cursor_dir is not None:
        return check_directory(cursor_dir, "cursor directory")
    return os.path.join(resolve_home(home), "cursors")


class CursorFile:
    """The durable positions of one reader name. `lock()` before using it to read."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.name = check_name(name, "reader")
        self.path = os.path.join(directory, name + SUFFIX)
        self.generation = 0
        self.positions: dict[JournalId, Position] = {}
        self._lock_fd = -1

    def lock(self, load: bool = True) -> CursorFile:
        """Take the name's lock, then load the record (an absent file is an empty record)."""
        try:
            fd = try_lock(self.path + ".lock")
        except OSError as exc:
            raise CursorError(
                f"cannot use cursor directory {self.directory} for reader {self.name!r}: "
                f"{exc.strerror} ({exc.filename})"
            ) from None
        if fd is None:
            raise CursorError(
                f"durable reader {self.name!r} is open in another process ({self.path}.lock is held)"
            )
        self._lock_fd = fd
        try:
            if load:
                self.load()
        except BaseException:
            self.unlock()
            raise
        return self

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def load(self) -> None:
        record = read_record(self.path)
        if record is None:
            return
        self.generation = record["generation"]
        self.positions = {
            JournalId(j["directory"], j["name"]): _position(j, self.path) for j in record["journals"]
        }

    def commit(self, positions: dict[JournalId, Position]) -> None:
        """Store `positions` (merged into the record) atomically and durably."""
        merged = {**self.positions, **positions}
        self.generation += 1
        body = json.dumps(
            {
                "reader": self.name,
                "generation": self.generation,
                "committed_ns": time.time_ns(),
                "journals": [
                    {"directory": j.directory, "name": j.name, **p._asdict()} for j, p in merged.items()
                ],
            },
            sort_keys=True,
        ).encode()
        try:
            write_atomically(self.path, f"{FORMAT} {zlib.crc32(body):08x}\n".encode() + body)
        except OSError as exc:  # a full disk, a file size limit: the last record stays as it was
            self.generation -= 1
            raise CursorError(f"cannot commit cursor file {self.path}: {exc.strerror}") from None
        self.positions = merged


def read_record(path: str) -> dict[str, Any] | None:
    """The checked record of a cursor file, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CursorError(f"cannot open cursor file {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CursorError(f"cursor file {path} is not a regular file")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    head, _, body = data.partition(b"\n")
    parts = head.decode(errors="replace").rsplit(" ", 1)
    if len(data) > MAX_FILE or len(parts) != 2 or parts[0] != FORMAT:
        raise CursorError(f"cursor file {path} is not an mmipc cursor file (or is damaged)")
    if f"{zlib.crc32(body):08x}" != parts[1]:
        raise CursorError(f"cursor file {path} fails its checksum: it was damaged on disk")
    try:
        record: dict[str, Any] = json.loads(body)
        if not isinstance(record["generation"], int) or not isinstance(record["journals"], list):
            raise TypeError("bad field types")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # json nests recursively
        raise CursorError(f"cursor file {path} has a bad record: {exc}") from None
    for entry in record["journals"]:
        if not _is_entry(entry):
            raise CursorError(f"cursor file {path} has a bad journal entry: {str(entry)[:200]}")
    return record


_ENTRY_INTS = ("page_no", "offset", "nano", "seq")


def _is_entry(entry: object) -> bool:
    """True if `entry` has the fields and types of a journal's position (its checksum may be a
    forger's: every reader of the record trusts these types). A directory with a NUL byte is no
    path: os.path.realpath raised ValueError in retention's `holds` for every journal."""
    if not isinstance(entry, dict) or not isinstance(entry.get("directory"), str):
        return False
    if "\0" in entry["directory"]:
        return False
    if not isinstance(entry.get("name"), str) or NAME_PATTERN.fullmatch(entry["name"]) is None:
        return False
    return all(type(entry.get(key)) is int for key in _ENTRY_INTS)


def _position(entry: dict[str, Any], path: str) -> Position:
    try:
        position = Position(
            int(entry["page_no"]), int(entry["offset"]), int(entry["nano"]), int(entry["seq"])
        )
    except (KeyError, TypeError, ValueError):
        raise CursorError(f"cursor file {path} has a bad journal entry: {str(entry)[:200]}") from None
    if position.page_no < 0 or position.offset < PAGE_HEADER_SIZE:
        raise CursorError(f"cursor file {path} has an impossible position {tuple(position)}")
    return position


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CursorError(f"cannot remove cursor file {path}: {exc.strerror}") from None


def list_cursors(directory: str) -> list[dict[str, Any]]:
    """Every cursor file in `directory`: name, generation, committed time and positions (or error).
    A directory that cannot be listed is one entry named ``*`` with its error: its readers are unknown."""
    try:
        entries = sorted(e for e in os.listdir(directory) if e.endswith(SUFFIX) and not e.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [
            {
                "name": "*",
                "path": directory,
                "error": f"cannot list cursor directory {directory}: {exc.strerror}",
            }
        ]
    out = []
    for entry in entries:
        item: dict[str, Any] = {"name": entry[: -len(SUFFIX)], "path": os.path.join(directory, entry)}
        try:
            record = read_record(item["path"])
            if record is not None:
                item.update(generation=record["generation"], committed_ns=record.get("committed_ns", 0))
                item["journals"] = record["journals"]
        except CursorError as exc:
            item["error"] = str(exc)
        out.append(item)
    return out


def check_position(jid: JournalId, position: Position) -> Position | None:
    """`position` if it still fits the journal; None if retention removed its page (see the rules)."""
    path = page_path(jid.directory, jid.name, position.page_no)
    try:
        page = MappedPage.open(path, jid.name, position.page_no)
    except FileNotFoundError:
        return None
    try:
        if not _ends_frame(page, position):
            raise CursorError(
                f"the committed position of journal {jid} (page {position.page_no}, "
                f"offset {position.offset}, "
                f"nano {position.nano}) does not match the journal: was it deleted and written anew? "
                "Reset the cursor with `mmipc cursors --reset NAME`"
            )
    finally:
        page.release()
    return position


def _ends_frame(page: MappedPage, position: Position) -> bool:
    """True if a committed frame with timestamp `nano` (and seq `seq`, if known) ends at `offset`, or
    `offset` is the page's start."""
    if position.offset == PAGE_HEADER_SIZE:
        return True
    last = _frame_ending_at(page, position.offset, position.nano)
    if last is None:
        return False
    return (
        position.seq < 0
        or page.header.version < 2
        or full_seq(live_first_seq(page), last.seq) == position.seq
    )


def _frame_ending_at(page: MappedPage, end: int, nano: int) -> FrameInfo | None:
    """The committed frame with timestamp `nano` that ends at `end`, or None if there is none."""
    if end > page.page_size:
        return None
    offset, last = page.seek(nano)[0], None
    while offset < end:
        last = page.frame(offset)
        if last is None or last.nano != nano:
            return None
        offset = last.end
    return last if offset == end else None


def committed_seq(page: MappedPage, end: int, nano: int) -> int:
    """The full seq of the frame that ends at `end` (at the page's start: of the frame before the
    page's first); -1 on a version-1 page or where no frame is numbered."""
    if page.header.version < 2:
        return -1
    first = live_first_seq(page)
    if end <= PAGE_HEADER_SIZE:
        return first - 1
    last = _frame_ending_at(page, end, nano)
    return full_seq(first, last.seq) if last is not None else -1


def fallback_page(jid: JournalId, position: Position) -> int | None:
    """The oldest page after a removed one, or None if there is none yet."""
    later = [no for no in list_pages(jid.directory, jid.name) if no > position.page_no]
    if later:  # else the journal has no page yet (its writer has not started): nothing is lost
        log.warning(
            "page %d of journal %s is gone (retention?): resuming at page %d; the rest of that page is lost",
            position.page_no,
            jid,
            later[0],
        )
    return later[0] if later else None


class Durable:
    """A durable reader's cursor file and its commit policy (it holds no reference to the reader)."""

    def __init__(self, file: CursorFile, commit_every: float | None) -> None:
        if not _is_period(commit_every):
            file.unlock()  # the name is free again: a corrected call may take it
            raise UsageError(
                f"commit_every must be a positive number of frames or seconds, not {commit_every!r}"
            )
        self.file = file
        self.commit_every = commit_every
        self.inherited = False  # a forked child's copy: it never commits (_reader.py, the fork rule)
        self.pacer: _EveryFrames | _EverySeconds | None = None  # `auto`'s last wrapper, if any

    def forget_after_fork(self) -> None:
        """In a forked child: close the child's copy of the lock's descriptor (the parent's keeps the
        flock held) and refuse every commit from now on, automatic ones included."""
        self.inherited = True
        self.file.unlock()

    def resume(self, cursor: Cursor) -> bool:
        """Put `cursor` just past its committed position; False if it has none."""
        position = self.file.positions.get(cursor.jid)
        if position is None:
            return False
        if check_position(cursor.jid, position) is not None:
            cursor.resume(position.page_no, position.offset, position.nano)
            return True
        page = fallback_page(cursor.jid, position)
        if page is None:
            cursor.position("begin")
        else:
            cursor.resume(page, PAGE_HEADER_SIZE, position.nano)
        return True

    def commit(self, cursors: list[Cursor]) -> None:
        """Acknowledge every frame the cursors have handed out (a peeked frame is not handed out)."""
        if self.inherited:
            raise UsageError(
                f"durable reader {self.file.name} was inherited from the parent process at fork: open a "
                "new reader in the child (it must not commit positions the parent has not processed)"
            )
        moved = {}
        for c in cursors:
            if c.page is None:  # the journal has no page yet: hold it from its first frame on
                if c.jid not in self.file.positions:
                    moved[c.jid] = Position(0, PAGE_HEADER_SIZE, 0)
                continue
            page_no, pos, nano = c.page_no, c.pos, c.last_nano
            if not nano and pos > PAGE_HEADER_SIZE:  # placed by a seek or a start, nothing read since
                nano = _nano_before(c.page, pos)
            known = self.file.positions.get(c.jid)
            if known is None or known[:3] != (page_no, pos, nano):
                moved[c.jid] = Position(page_no, pos, nano, committed_seq(c.page, pos, nano))
        if moved:
            self.file.commit(moved)

    def auto(self, read: Callable[[], Frame | None], cursors: list[Cursor]) -> Callable[[], Frame | None]:
        """`read` that commits every `commit_every` frames (int) or seconds (float), before the next
        read. One pacer per reader, re-pointed at each new `read` (a journal added or removed): its
        count goes on, where a new one at every add_journal let a reader that adds journals more
        often than every N frames never commit."""
        every = self.commit_every
        if every is None:
            return read
        if self.pacer is not None:
            self.pacer.read = read
        elif isinstance(every, int):
            self.pacer = _EveryFrames(read, functools.partial(self.commit, cursors), every)
        else:
            self.pacer = _EverySeconds(read, functools.partial(self.commit, cursors), int(every * 1e9))
        return self.pacer


def _is_period(every: object) -> bool:
    """None, a positive int (frames) or a positive float of seconds that fits in ns."""
    if every is None or (isinstance(every, int) and not isinstance(every, bool) and every > 0):
        return True
    return isinstance(every, float) and 0 < every < (1 << 63) / 1e9


class _EveryFrames:
    """Commits before the read that follows every `every`-th frame: the application has finished
    with those frames when it asks for the next one."""

    __slots__ = ("read", "commit", "every", "count")

    def __init__(self, read: Callable[[], Frame | None], commit: Callable[[], None], every: int) -> None:
        self.read, self.commit, self.every, self.count = read, commit, every, 0

    def __call__(self) -> Frame | None:
        if self.count >= self.every:
            self.commit()
            self.count = 0
        frame = self.read()
        if frame is not None:
            self.count += 1
        return frame

    def batch(self, take: Callable[[], Sized_T]) -> Sized_T:
        """`read_batch`: commit before the batch if due, never inside it (the application has not
        handled its first frames when the batch takes the next), and count its frames."""
        if self.count >= self.every:
            self.commit()
            self.count = 0
        batch = take()
        self.count += len(batch)
        return batch


class _EverySeconds:
    """Commits before a read once `every_ns` have passed since the first frame not committed yet."""

    __slots__ = ("read", "commit", "every_ns", "due")

    def __init__(self, read: Callable[[], Frame | None], commit: Callable[[], None], every_ns: int) -> None:
        self.read, self.commit, self.every_ns, self.due = read, commit, every_ns, 0

    def __call__(self) -> Frame | None:
        if self.due and time.monotonic_ns() >= self.due:
            self.commit()
            self.due = 0
        frame = self.read()
        if frame is not None and not self.due:
            self.due = time.monotonic_ns() + self.every_ns
        return frame

    def batch(self, take: Callable[[], Sized_T]) -> Sized_T:
        """`read_batch`, as `_EveryFrames.batch`."""
        if self.due and time.monotonic_ns() >= self.due:
            self.commit()
            self.due = 0
        batch = take()
        if len(batch) and not self.due:
            self.due = time.monotonic_ns() + self.every_ns
        return batch


def position_at(jid: JournalId, nano: int) -> Position | None:
    """The position just before the journal's first frame at or after `nano` (None: no page yet)."""
    from ._cursor import Cursor  # the cursor imports nothing of ours; this keeps the import one-way

    cursor = Cursor(jid, nano)
    try:
        if not cursor.position(nano) or cursor.page is None:
            return None
        nano = _nano_before(cursor.page, cursor.pos)
        return Position(cursor.page_no, cursor.pos, nano, committed_seq(cursor.page, cursor.pos, nano))
    finally:
        cursor.detach()


def _nano_before(page: MappedPage, offset: int) -> int:
    """The timestamp of the frame that ends at `offset` (0 at the page's start)."""
    start = max((s for s in page.filled_slots() if s < offset), default=PAGE_HEADER_SIZE)
    nano = 0
    for info in page.frames(start):
        if info.offset >= offset:
            break
        nano = info.nano
    return nano


def reset(directory: str, name: str, to_nano: int | None) -> CursorFile:
    """Move a durable reader's positions to `to_nano` (its file removed if None); it must not be open.
    A damaged file can be removed (that is how its reader starts again), not moved."""
    file = CursorFile(directory, name).lock(load=False)
    try:
        if to_nano is None:
            _remove(file.path)
            return file
        try:
            file.load()
        except CursorError as exc:
            raise CursorError(f"{exc}; its journals are unknown: reset it without --to") from None
        moved = {jid: position_at(jid, to_nano) for jid in file.positions}
        file.positions = {}
        file.commit({jid: p for jid, p in moved.items() if p is not None})
        return file
    finally:
        file.unlock()
