"""A reader's position in one journal.

Rules:

* A cursor only reads: it opens page files read-only, maps them read-only and never creates, extends
  or modifies a file, so any number of readers in any number of processes are invisible to the writer.
* It reads a frame's commit word (one aligned 4-byte load) and looks at nothing else of the frame
  until that word is non-zero. On x86-64 loads are not reordered with other loads, so the header and
  payload loads that follow see what the writer stored before its commit store.
* Every committed header is checked before its payload is handed out: length, payload length, room
  left in the page and timestamp order, and on a CHECKSUMS page the payload's CRC-32. A failure
  raises `CorruptJournalError`; the cursor stays put.
* The fast path (`read`, `poll`) handles frames of version 2 pages without checksums whose sequence
  numbers stay below 2**32 to the page's end: the stored 32 bits are then the full seq. Every other
  page (version 1, checksums, later seqs) sets `limit` to 0, so that the single room check sends
  each of its frames to `_poll_slow`: an add per frame would cost every frame 200 instructions.
  The fast path reads `seq` and `checksum` as one u64, which is `seq` because `checksum` is 0 on
  such a page; a non-zero one is damage that `mmipc check` reports, and would show in `seq`.
* At an end-of-page marker the cursor moves to the next page, which exists by the writer's switch
  order; the page it leaves is unmapped as soon as no caller holds a view into it.
* A journal with no page yet is not an error: the cursor looks for its first page at most once per
  `PROBE_INTERVAL_NS` and starts when it appears. Then a ``NAME.bells`` this user made before the
  journal had a writer (mode 0600) takes its journal's mode (`_bell.follow_journal_mode`).
* Retention may remove the oldest pages while a cursor positions itself (it holds no page until
  its reader publishes where it stands): a listed page that is gone when opened, or a next page
  that is gone while the page before it is gone too, means "list again". A reader that no
  retention could see (`mmipc prune` of another home) may find the pages after its own removed
  with its own: it warns and goes on at the oldest page left.
"""

from __future__ import annotations

import _thread
import functools
import mmap
import os
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from .._errors import CorruptJournalError, UsageError
from ._backend import native
from ._bell import follow_journal_mode
from ._files import list_pages, page_path
from ._layout import (
    COMMIT,
    FRAME_BODY,
    FRAME_BODY_FAST,
    FRAME_HEADER_SIZE,
    PAGE_END_RESERVE,
    PAGE_HEADER_SIZE,
    SEQ_MASK,
    MsgType,
    PageHeader,
    align8,
    check_checksum,
    check_frame,
)
from ._page import MappedPage, page_header
from ._types import Frame, JournalId

Start = Literal["begin", "end"] | int
PROBE_INTERVAL_NS = 1_000_000
RELIST_ATTEMPTS = 100  # a page listed a moment ago may be gone (retention): list again, this often
_new_frame = tuple.__new__
_unpack_commit = COMMIT.unpack_from
_unpack_body = FRAME_BODY_FAST.unpack_from
_unpack_full = FRAME_BODY.unpack_from
_crc32 = zlib.crc32
_PAGE_END = int(MsgType.PAGE_END)
_get_ident = _thread.get_ident
_NATIVE = native is not None
if TYPE_CHECKING:
    from ._native import CursorCore as _CursorBase
else:  # the native Cursor is a CursorCore: `read` is the C method itself (see "the native backend")
    _CursorBase = object if native is None else native.CursorCore


class Cursor(_CursorBase):
    """Where a reader stands in one journal; `next_nano` is -1 until a frame is peeked."""

    __slots__ = (
        "jid",
        "page",
        "page_no",
        "mm",
        "view",
        "page_size",
        "limit",
        "room",
        "checksums",
        "first_seq",
        "pos",
        "last_nano",
        "next_nano",
        "msg_type",
        "source",
        "length",
        "seq",
        "start",
        "probe_at",
        "owner",
        "on_thread",
        "in_python",
    )

    def __init__(self, jid: JournalId, start: Start) -> None:
        self.jid = jid
        self.page: MappedPage | None = None
        self.mm: mmap.mmap | None = None
        self.view: memoryview | None = None
        self.page_no = self.page_size = self.limit = self.pos = self.last_nano = 0
        self.room = self.first_seq = 0
        self.checksums = False
        self.next_nano = -1
        self.msg_type = self.source = self.length = self.seq = 0
        self.start: Start = start
        self.probe_at = 0
        self.owner = 0  # the thread allowed to read (pure Python; 0: any); another calls on_thread
        self.on_thread: Callable[[], object] = _any_thread
        self.in_python = False  # native: the slow path (`_python`) runs
        if _NATIVE:
            native.CursorCore.__init__(self, jid, Frame)  # type: ignore[union-attr]

    # -- the hot path -------------------------------------------------------------------------

    def read(self) -> Frame | None:
        """The next committed frame of this journal, or None.

        This is `poll` and `take` fused, for a reader of one journal: two Python calls fewer per frame
        (about 150 ns here). Its header checks must stay the same as `poll`'s. It is `Reader.read`
        itself, so it checks the reader's thread (`owner`; the native core's check is the merge's)
        before it changes anything, but after an empty read has found nothing: that costs nothing
        then, and a thread check costs about 500 instructions in Python (an int made per call).
        """
        mm = self.mm
        if mm is None or self.next_nano >= 0:
            if _get_ident() != self.owner and self.owner:
                self.on_thread()
            return self._read_slow(self._py_poll)
        pos = self.pos
        length = _unpack_commit(mm, pos)[0]
        if length == 0:
            return None
        if _get_ident() != self.owner and self.owner:
            self.on_thread()
        nano: int
        msg_type, nano, source, n, seq = _unpack_body(mm, pos + 4)
        end = pos + ((length + 7) & ~7)
        if self.pos != pos or self.mm is not mm:  # a signal handler read meanwhile: read on,
            return self._read_slow(self._py_poll)  # where it cannot (no recursion however many)
        if (
            length != n + FRAME_HEADER_SIZE
            or end + PAGE_END_RESERVE > self.limit
            or nano < self.last_nano
            or msg_type == _PAGE_END
        ):
            return self._read_slow(functools.partial(self._poll_slow_at, pos, mm, length, msg_type, nano, n))
        self.pos = end
        self.last_nano = nano
        view: memoryview = self.view  # type: ignore[assignment]  # never None while mm is set
        frame: Frame = _new_frame(
            Frame, (nano, msg_type, source, self.jid, view[pos + 32 : pos + length], seq)
        )
        return frame

    def read_data(self) -> memoryview | None:
        """`read()`'s payload view alone (`Reader.read_data`): no Frame made. Its header checks must
        stay the same as `read`'s, and its thread check too; every frame its fast path refuses is
        `read`'s to handle."""
        mm = self.mm
        if mm is None or self.next_nano >= 0:
            return _data(self.read())
        pos = self.pos
        length = _unpack_commit(mm, pos)[0]
        if length == 0:
            return None
        if _get_ident() != self.owner and self.owner:
            self.on_thread()
        nano: int
        msg_type, nano, _, n, _ = _unpack_body(mm, pos + 4)
        end = pos + ((length + 7) & ~7)
        if self.pos != pos or self.mm is not mm:  # a signal handler read meanwhile: read on
            return _data(self._read_slow(self._py_poll))
        if (
            length != n + FRAME_HEADER_SIZE
            or end + PAGE_END_RESERVE > self.limit
            or nano < self.last_nano
            or msg_type == _PAGE_END
        ):
            return _data(self.read())
        self.pos = end
        self.last_nano = nano
        view: memoryview = self.view  # type: ignore[assignment]  # never None while mm is set
        return view[pos + 32 : pos + length]

    def _read_slow(self, poll: Callable[[], int]) -> Frame | None:
        """`read`'s slow path: `poll`, then take. The owner is READING meanwhile: a read from
        inside it (a signal handler's) takes the other-thread path and is refused (the native
        backend runs this inside `_python`, which refuses it first)."""
        owner, self.owner = self.owner, READING
        try:
            return self._py_take() if poll() >= 0 else None
        finally:
            if self.owner == READING:  # unless it closed the reader, or handed it over
                self.owner = owner

    def _poll_slow_at(self, pos: int, mm: mmap.mmap, length: int, msg_type: int, nano: int, n: int) -> int:
        """`_poll_slow` of the frame `read` found at `pos` of `mm`, or `poll` if a signal handler's
        read moved the cursor before `_read_slow` refused reads."""
        if self.pos != pos or self.mm is not mm:
            return self._py_poll()
        return self._poll_slow(length, msg_type, nano, n)

    def poll(self) -> int:
        """Peek at the next committed data frame: its timestamp, or -1 if there is none yet."""
        if self.next_nano >= 0:
            return self.next_nano
        mm = self.mm
        if mm is None:
            return self._poll_missing()
        pos = self.pos
        length = _unpack_commit(mm, pos)[0]
        if length == 0:
            return -1
        nano: int
        msg_type, nano, source, n, seq = _unpack_body(mm, pos + 4)
        if (
            length != n + FRAME_HEADER_SIZE
            or pos + ((length + 7) & ~7) + PAGE_END_RESERVE > self.limit
            or nano < self.last_nano
            or msg_type == _PAGE_END
        ):
            return self._poll_slow(length, msg_type, nano, n)
        self.next_nano, self.msg_type, self.source, self.length = nano, msg_type, source, length
        self.seq = seq
        return nano

    def take(self) -> Frame:
        """Hand out the peeked frame and step past it."""
        pos, length, nano = self.pos, self.length, self.next_nano
        self.pos = pos + ((length + 7) & ~7)
        self.last_nano = nano
        self.next_nano = -1
        assert self.view is not None
        data = self.view[pos + FRAME_HEADER_SIZE : pos + length]
        frame: Frame = _new_frame(Frame, (nano, self.msg_type, self.source, self.jid, data, self.seq))
        return frame

    # The Python methods under names the native backend does not rebind: its slow path (`_python`).
    _py_read = read
    _py_poll = poll
    _py_take = take

    # -- the slow path ------------------------------------------------------------------------

    def _poll_slow(self, length: int, msg_type: int, nano: int, n: int) -> int:
        """`poll` for a frame the fast path refused: a damaged one, an end-of-page marker, or any
        frame of a page whose `limit` is 0 (version 1, checksums, sequence numbers past 2**32)."""
        page, pos = self.page, self.pos
        assert page is not None and self.mm is not None
        if msg_type == _PAGE_END or length != n + FRAME_HEADER_SIZE or pos + align8(length) > self.room:
            check_frame(pos, length, msg_type, n, self.page_size, page.path)  # raises unless a marker
            try:
                self._enter_page(self.page_no + 1, PAGE_HEADER_SIZE, after_marker=True)
            except CorruptJournalError as exc:
                self._skip_removed(exc)
            return self._py_poll()
        if nano < self.last_nano:
            raise CorruptJournalError(
                page.path, pos, f"timestamp {nano} is older than the frame before it ({self.last_nano})"
            )
        _, _, source, _, seq, checksum = _unpack_full(self.mm, pos + 4)
        if self.checksums and _crc32(self.view[pos + FRAME_HEADER_SIZE : pos + length]) != checksum:  # type: ignore[index]
            check_checksum(self.mm, pos, length, checksum, page.path)  # raises, naming both values
        self.next_nano, self.msg_type, self.source, self.length = nano, msg_type, source, length
        first = self.first_seq
        self.seq = first + ((seq - first) & SEQ_MASK) if first >= 0 else -1
        return nano

    def _skip_removed(self, exc: CorruptJournalError) -> None:
        """Retention removed the next pages, and this one (it goes oldest first), before the cursor
        reached them: go on at the oldest page left, saying what was lost. A hole is damage: raise."""
        later = [no for no in list_pages(self.jid.directory, self.jid.name) if no > self.page_no]
        if not later or not self._removed_meanwhile(exc):
            raise exc
        import logging  # not at import: `import mmipc` loads no logging

        logging.getLogger("mmipc.cursor").warning(
            "pages %d to %d of journal %s are gone (retention?): the reader lost their frames "
            "and goes on at page %d",
            self.page_no + 1,
            later[0] - 1,
            self.jid,
            later[0],
        )
        self._enter_page(later[0], PAGE_HEADER_SIZE)

    def _poll_missing(self) -> int:
        now = time.monotonic_ns()
        if now < self.probe_at:
            return -1
        self.probe_at = now + PROBE_INTERVAL_NS
        if not self._position(self.start):
            return -1
        follow_journal_mode(self.jid.directory, self.jid.name)  # its writer has set NAME.lock's mode
        return self._py_poll()

    def _enter_page(self, page_no: int, pos: int, after_marker: bool = False) -> None:
        path = page_path(self.jid.directory, self.jid.name, page_no)
        try:
            page = MappedPage.open(path, self.jid.name, page_no)
        except FileNotFoundError:
            if not after_marker:
                raise
            assert self.page is not None
            raise CorruptJournalError(
                self.page.path, self.pos, f"the page ends here but the next page {path} is missing"
            ) from None
        self.detach()
        self.page, self.page_no, self.mm, self.view = page, page_no, page.mm, page.view
        header = page.header
        self.page_size, self.pos, self.room = page.page_size, pos, page.page_size - PAGE_END_RESERVE
        self.limit = fast_limit(header)
        self.checksums = header.checksums
        self.first_seq = header.first_seq if header.version >= 2 else -1

    def detach(self) -> None:
        """Unmap the current page (frames already handed out keep theirs alive)."""
        if _NATIVE:
            self._core_release()  # before the page's mmap closes
        if self.page is not None:
            self.page.release()
        self.page = self.mm = self.view = None
        self.next_nano = -1
        self.limit = 0

    # -- the native backend: the C core (mmipc.journal._native.CursorCore) reads; Python is its slow path --
    #
    # The native Cursor is a subclass of CursorCore, and `read`, `poll` and `take` are its C methods
    # themselves: a read costs no Python frame. The `_c_*` fields and methods are the core's. While
    # the core is attached it owns `pos`, `last_nano` and the peeked frame. On what it does not do
    # (a page's end, a missing page, damage, a checksum mismatch, no page yet) the C method calls
    # `_read_from_core` (or `_poll_from_core`, `_take_from_core`): `_python` takes pos and last_nano
    # back, detaches the core, runs the Python method (the reference, which knows the files and
    # raises the errors) and attaches the core again at Python's position. A frame Python peeked is
    # dropped from Python's state there and peeked again by the core: committed frames never change.

    @property
    def core(self) -> Any:
        """The C core reading this journal: the cursor itself with the native backend, else None."""
        return self if _NATIVE else None

    def _read_from_core(self) -> Frame | None:
        return self._python(_python_read)  # type: ignore[no-any-return]

    def _poll_from_core(self) -> int:
        return self._python(_python_poll)  # type: ignore[no-any-return]

    def _take_from_core(self) -> Frame:
        return self._python(_python_poll_take)  # type: ignore[no-any-return]

    def _python(self, method: Any) -> Any:
        """`method` with the core detached. A read of this cursor from inside it (a signal
        handler's, or a finalizer's, run between two bytecodes of the slow path) is refused: it
        went on from Python's half-updated position, and the same frame came out twice."""
        if self.in_python:
            _raise_reentered(self.jid)
        self.in_python = True
        self._core_release()
        try:
            return method(self)
        finally:
            self.in_python = False
            self._core_attach()

    def _core_release(self) -> None:
        """Take pos and last_nano back from the core, if it is attached, and detach it."""
        pos, last_nano = self._c_pos, self._c_last_nano
        self._c_detach()
        self._c_pos = 0  # pos 0 marks a detached core
        if pos:
            self.pos, self.last_nano = pos, last_nano
            self.next_nano = -1

    def _core_attach(self) -> None:
        page = self.page
        if page is None or self.view is None:
            self._core_release()
            return
        self._core_release()  # so that pos and last_nano below are Python's (see the properties)
        header, pos, last_nano = page.header, self.pos, self.last_nano
        self._c_attach(self.view, self.page_size, header.version, header.flags, header.first_seq, pos)
        self._c_last_nano = last_nano
        self.next_nano = -1

    # -- positioning --------------------------------------------------------------------------

    def resume(self, page_no: int, offset: int, nano: int) -> None:
        """Continue at `offset` of page `page_no`, just past a frame with timestamp `nano` (a durable
        reader's committed position, checked by the caller)."""
        self.start = nano
        self.next_nano = -1
        self._enter_page(page_no, offset)
        self.last_nano = nano
        if _NATIVE:
            self._core_attach()

    def position(self, start: Start) -> bool:
        """Place the cursor at `start`; False (and wait for the journal) if it has no page yet."""
        placed = self._position(start)
        if _NATIVE:
            self._core_attach()
        return placed

    def _position(self, start: Start) -> bool:
        """`position` without handing the page to the core (the Python read path uses it)."""
        self.start = start
        self.next_nano = -1
        for attempt in range(RELIST_ATTEMPTS):
            pages = list_pages(self.jid.directory, self.jid.name)
            if not pages:
                if start == "end":  # every frame of a journal that has none yet comes after now
                    self.start = "begin"
                self.detach()
                return False
            try:
                self._place(pages, start)
                break
            except (FileNotFoundError, CorruptJournalError) as exc:
                if attempt == RELIST_ATTEMPTS - 1 or not self._removed_meanwhile(exc):
                    raise
                continue  # retention removed the oldest pages while we looked at them: list again
        self.last_nano = 0
        return True

    def _removed_meanwhile(self, exc: Exception) -> bool:
        """True if a placement failed because retention removed pages meanwhile: a listed page was
        gone, or a next page was missing while the page before it is gone too (retention removes
        the oldest pages first, so the next one was removed, not damaged)."""
        if isinstance(exc, FileNotFoundError):
            return True
        return self.page is not None and not os.path.exists(self.page.path)

    def _place(self, pages: list[int], start: Start) -> None:
        if start == "begin":
            self._enter_page(pages[0], PAGE_HEADER_SIZE)
        elif start == "end":
            self._position_end(pages)
        else:
            self._position_at(pages, start)

    def _position_end(self, pages: list[int]) -> None:
        for i in range(len(pages) - 1, -1, -1):
            self._enter_page(pages[i], PAGE_HEADER_SIZE)
            assert self.page is not None
            end, last = self.page.tail()
            if last is not None and last.msg_type == _PAGE_END:
                self._enter_page(pages[i] + 1, PAGE_HEADER_SIZE, after_marker=True)
                return
            if last is not None or i == 0:
                self.pos = end
                return

    def _position_at(self, pages: list[int], nano: int) -> None:
        lo, hi = 0, len(pages)
        while lo < hi:
            mid = (lo + hi) // 2
            first = self._first_nano(pages[mid])
            if first and first < nano:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            self._enter_page(pages[0], PAGE_HEADER_SIZE)
            return
        self._enter_page(pages[lo - 1], PAGE_HEADER_SIZE)
        assert self.page is not None
        self.pos, ended = self.page.seek(nano)
        if ended:
            self._enter_page(pages[lo - 1] + 1, PAGE_HEADER_SIZE, after_marker=True)

    def _first_nano(self, page_no: int) -> int:
        """The page's first timestamp, 0 if it has no frame yet. A page that holds only its end
        marker has first_nano == last_nano; one written before that rule has first_nano 0 and its
        last_nano set, which serves as well (no later frame of the journal is older)."""
        path = page_path(self.jid.directory, self.jid.name, page_no)
        header = page_header(path)
        if header.page_no != page_no or header.name != self.jid.name:
            found = f"page {header.page_no} of {header.name!r}"
            wanted = f"page {page_no} of {self.jid.name!r}"
            raise CorruptJournalError(path, 24, f"header names {found}, expected {wanted}")
        return header.first_nano or header.last_nano


def fast_limit(header: PageHeader) -> int:
    """The `limit` of the fast path on a page with this header: its size, or 0 (see the rules)."""
    most = header.first_seq + (header.page_size - PAGE_HEADER_SIZE) // FRAME_HEADER_SIZE
    fast = header.version >= 2 and not header.checksums and most <= SEQ_MASK
    return header.page_size if fast else 0


_python_read = Cursor._py_read


def _data(frame: Frame | None) -> memoryview | None:
    return None if frame is None else frame.data


_python_poll = Cursor._py_poll


READING = 2  # a reader's owner while it reads in Python: no thread has ident 2 (a pthread_t)


def _raise_reentered(jid: JournalId) -> NoReturn:
    raise UsageError(
        f"journal {jid} was read from inside a read of the same reader (a signal handler or a "
        "finalizer that reads?): read only from the reader's own code, or hand frames over instead"
    )


def _any_thread() -> None:
    """A cursor's `on_thread` until a reader owns it: `owner` 0 lets every thread read."""


def _python_poll_take(cursor: Cursor) -> Frame:
    if cursor._py_poll() < 0:
        raise AssertionError("take() without a peeked frame")
    return cursor._py_take()


if native is not None:  # bound once at import: the pure-Python backend keeps its own methods
    Cursor.read = native.CursorCore.read  # type: ignore[method-assign]
    Cursor.read_data = native.CursorCore.read_data  # type: ignore[method-assign]
    Cursor.poll = native.CursorCore.poll  # type: ignore[method-assign]
    Cursor.take = native.CursorCore.take  # type: ignore[method-assign]
    # While the core is attached, `pos` and `last_nano` are the core's, for every reader of them
    # (durable cursors, the lag metrics): the slots hold them only while it is detached.
    _pos_slot: Any = Cursor.__dict__["pos"]
    _last_nano_slot: Any = Cursor.__dict__["last_nano"]

    def _pos(cursor: Cursor) -> int:
        pos: int = cursor._c_pos
        return pos or _pos_slot.__get__(cursor)

    def _last_nano(cursor: Cursor) -> int:
        return cursor._c_last_nano if cursor._c_pos else _last_nano_slot.__get__(cursor)

    setattr(Cursor, "pos", property(_pos, _pos_slot.__set__))  # noqa: B010 (mypy: a slot)
    setattr(Cursor, "last_nano", property(_last_nano, _last_nano_slot.__set__))  # noqa: B010
