"""The writer: the only process that appends to a journal.

Rules (docs/format.md is the full contract):

1. One live writer per journal, enforced by `flock` on ``NAME.lock``; the kernel frees it on death.
2. A frame is published in this order: the payload, then the header fields after the commit word
   (the timestamp is taken just before them; on a version 2 page they include the frame's `seq` and,
   on a CHECKSUMS page, the payload's CRC-32), then the page's first-frame time and time-index slots
   if this frame sets them, and last the commit word, with one aligned 4-byte store. Nothing of a
   frame is visible to readers before that store. A write that fails half-way zeroes what it stored.
3. A page switch creates (or adopts) the next page and stores its `first_seq` first, then stores the
   last timestamp in the old page's header, then commits the end-of-page marker, and only then
   unmaps the old page.
4. On open, the writer resumes after the last committed frame, and numbers the next frame after it
   (or from the page's `first_seq`); inside a version 1 page it writes version 1 frames (seq and
   checksum 0) to the page's end, and numbers frames from 0 at its first version 2 page. Bytes past
   the last committed frame can only be the remains of a frame a crashed writer never committed:
   they are zeroed, and time-index slots pointing there cleared, before anything new is written, so
   no stale byte can ever pass for a commit word.
5. The clock: a frame is stamped with the monotonic clock plus an offset to the wall clock taken
   once per process (`clock_offset`, as Kungfu does), so a wall-clock step after the process started
   moves no stamp, and the frames of every journal this process writes are stamped on one clock.
   Timestamps never decrease within a journal: a stamp below the journal's last one (a writer of a
   process started after the wall clock stepped back resuming it) is clamped to that last one.
6. A forked child inherits the parent's lock with its file descriptor, so it could append too: every
   writer is marked closed in the child at fork (the parent keeps its lock and goes on writing).
7. Unmapping a full page costs milliseconds (1.8 ms for a dirty 64 MiB page here), all of it on the
   writer's core: a helper thread would only move it to a thread pinned to the same core. So the
   old page is retired in slices instead: at each time-index slot the new page starts, a slice of
   the old map (`retire_slice`: 256 KiB, more for pages over 240 MiB, so that any page is done within
   half the next one) is dropped with MADV_DONTNEED (the data stays in the page cache), and the final
   munmap, with no page tables left, is cheap.
8. A writer belongs to the thread that created it. `write`, `frame`, a claim's exit, `sync` and
   `close` called from any other thread raise `UsageError` before touching anything: two threads
   interleaving the stores of rule 2 would tear frames. The check costs one `get_ident()` call and a
   compare per write: 483 instructions (callgrind, a 408-byte write: 7,878 without it, 8,361 with
   it). A lock would cost two calls, and would still let two threads' frames interleave in an order
   neither chose: use one writer (and journal) per thread, and let readers merge them.
9. Every page is used at its own size and flags, read from its header, whoever created it. A page made ahead
   (by the service, at the size the writer announced then) is used if the frame that needs it fits;
   if not, the writer replaces it, still empty, with one of its own size before the old page's end
   marker commits. A page that the writer resumed empty and that is too small for the next frame
   ends with its marker alone, with `first_nano` and `last_nano` both set to the marker's stamp.

10. Native backend only: a thread of the writer's process keeps the next 4 MiB past the write
   position faulted in, writable (MADV_POPULATE_WRITE, Linux 5.14+), so that the writer's own first
   store into each 4 KiB page does not fault (about 1.6 us each; the service's MAP_POPULATE puts the
   file in the page cache but maps nothing writable in this process). It learns the position from
   the time-index slots, so the hot path pays nothing. `MMIPC_PRETOUCH=0` turns it off; on an older
   kernel it stops by itself. See docs/benchmarks.md, "Page faults on the writer's thread". It may
   run where the creating thread may (a pinned writer's faults then move into its own time
   slices, not off its core), or on the CPU list `MMIPC_PRETOUCH_CPUS` names (`check_pretouch_cpus`).

The hot path (`write`) allocates nothing but the slice it copies into, and takes one branch to the
slow path (`_write_slow`) when the frame does not fit, when a claim is open, after `close()`, and on
every page of version 1 or with checksums: those states set `_limit` to 0 so that the single size
check catches them all, and a page without checksums pays nothing for them.
"""

from __future__ import annotations

import _thread
import os
import re
import struct
import time
import warnings
import weakref
import zlib
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .._errors import (
    ClosedError,
    CorruptJournalError,
    FrameTooLargeError,
    JournalLockedError,
    ServiceRefusedError,
    StorageError,
    UsageError,
)
from ..service._servicehome import DEFAULT_HOME, ServiceHome, link_for
from ._backend import native
from ._bell import Ringer, bells_path
from ._files import (
    DEFAULT_MODE,
    acquire_writer_lock,
    check_directory,
    check_mode,
    check_name,
    create_page,
    list_pages,
    make_journal_directory,
    page_path,
    release_pid_lock,
    remove_stale_temporaries,
)
from ._layout import (
    COMMIT,
    DEFAULT_PAGE_SIZE,
    FIRST_NANO_OFFSET,
    FIRST_SEQ_OFFSET,
    FRAME_BODY,
    FRAME_BODY_FAST,
    FRAME_BODY_OFFSET,
    FRAME_HEADER_SIZE,
    INDEX_OFFSET,
    INDEX_SLOT,
    INDEX_SLOTS,
    LAST_NANO_OFFSET,
    MAX_MSG_TYPE,
    MAX_SOURCE,
    NANO_FIELD,
    PAGE_END_RESERVE,
    PAGE_HEADER_SIZE,
    SEQ_FIELD,
    SEQ_MASK,
    MsgType,
    PageFlags,
    align8,
    check_page_size,
    full_seq,
    index_stride,
    max_payload,
)
from ._page import MappedPage

if TYPE_CHECKING:  # imported when first used, so that `import mmipc` loads neither (nor their json)
    from ..service._link import Link
    from ._schema import Declaration

_ZERO_CHUNK = bytes(64 * 1024)
RETIRE_SLICE = 256 * 1024


def retire_slice(page_size: int) -> int:
    """Bytes of an old page dropped per slot: RETIRE_SLICE, or more for pages so big that the slots
    of half a page (INDEX_SLOTS // 2 crossings) would not otherwise finish dropping all of it."""
    per_slot = -(-page_size // (INDEX_SLOTS // 2))
    return max(RETIRE_SLICE, (per_slot + 4095) & ~4095)


_NEVER = 1 << 62
# The clock (rule 5): the wall clock is read once per process, to anchor the monotonic clock.
# Tests replace `_time_ns` in a child process to step the wall clock; nothing else reads it.
_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_get_ident = _thread.get_ident  # _thread, not threading: `import mmipc` stays light
_anchor: list[int] = []


def clock_offset() -> int:
    """Wall minus monotonic time, taken at this process's first call (Kungfu's anchored clock)."""
    if not _anchor:
        _anchor.append(_time_ns() - _monotonic_ns())
    return _anchor[0]


_pack_body = FRAME_BODY_FAST.pack_into
_pack_commit = COMMIT.pack_into
_NATIVE = native is not None
if TYPE_CHECKING:
    from ._native import WriterCore as _WriterBase
else:  # the native Writer is a WriterCore: `write` is the C method itself (see "the native backend")
    _WriterBase = object if native is None else native.WriterCore


class Writer(_WriterBase):
    """Appends frames to one journal. Create it with `Writer.create(directory, name)`.

    Example: ``with Writer.create("/data/md", "md.ctp") as w: w.write(tick, msg_type=101)``
    """

    __slots__ = (
        "directory",
        "name",
        "_new_page_size",
        "_mode",
        "_lock_fd",
        "_page",
        "_page_no",
        "_mm",
        "_pos",
        "_limit",
        "_last_nano",
        "_slot_index",
        "_slot_boundary",
        "_stride",
        "_claim",
        "_spare_claim",
        "_retiring",
        "_retired_upto",
        "_page_news",
        "_link",
        "_ringer",
        "_bells",
        "_finalizer",
        "_clock",
        "_thread",
        "_flags",
        "_seq",
        "_first_seq",
        "_v2",
        "_checksums",
        "_fast_limit",
        "__weakref__",
    )

    def __init__(
        self,
        directory: str,
        name: str,
        page_size: int | None,
        lock_fd: int,
        link: Link | None,
        mode: int = DEFAULT_MODE,
        checksum: bool = False,
    ) -> None:
        self.directory = directory
        self.name = name
        self._mode = mode  # of the files this writer (and the service for it) creates
        self._lock_fd = lock_fd
        self._link = link
        self._clock = clock_offset()
        self._thread = _get_ident()
        self._claim: FrameClaim | None = None
        self._spare_claim = FrameClaim(self)
        self._retiring: MappedPage | None = None
        self._retired_upto = 0
        self._page_news: dict[str, object] | None = None
        self._page: MappedPage | None = None
        self._limit = self._pos = self._page_no = self._last_nano = 0
        self._slot_index = self._slot_boundary = self._stride = 0
        self._flags = int(PageFlags.CHECKSUMS) if checksum else 0
        self._seq = self._first_seq = self._fast_limit = 0
        self._v2 = self._checksums = False
        if _NATIVE:
            self._c_thread = self._thread
            self._c_pretouch = True  # a thread populates pages ahead (rule 10); MMIPC_PRETOUCH=0: none
        self._open_tail(page_size)
        self._send_page_news()
        self._ringer = Ringer.open(directory, name)  # doorbells: `_bells[8]` is its readers' count
        self._bells = self._ringer.list
        if _NATIVE:  # the core rings from C after its own commits; Python after Python's
            self._c_open_bells(bells_path(directory, name))
        self._core_attach()
        self._finalizer = weakref.finalize(self, _release, lock_fd, link, directory, name)

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        name: str,
        *,
        page_size: int | None = None,
        service: ServiceHome = DEFAULT_HOME,
        schemas: dict[int, Declaration] | None = None,
        mode: int = DEFAULT_MODE,
        checksum: bool = False,
    ) -> Writer:
        """Open journal `name` in `directory` for appending, creating both if needed.

        `page_size` applies to pages created from now on (default: the journal's last page size, or
        DEFAULT_PAGE_SIZE for a new journal). `service` is the home of the service to register with
        (default: $MMIPC_HOME or the per-user home), or None to run standalone, guarded by the OS lock
        alone. Raises `JournalLockedError` if another writer is live, `ServiceUnavailableError` if no
        service answers. `schemas` declares the payload layout of msg_types ({101: DepthMarketDataV636}:
        a ctypes Structure, a numpy dtype or a name from mmipc.ctp), stored in NAME.schema.json. With
        `checksum`, the pages this writer creates from now on carry the CRC-32 of every payload, which
        readers and `mmipc check` verify (a page made before keeps its own choice).

        `mode` is the permission of the files created: 0o600 (owner only, the default), 0o640 to let
        the group read (the directory, if created, gets 0o750), or 0o644.

        Example: ``Writer.create("/data/md", "md.ctp", page_size=64 << 20, service=None)``
        """
        check_name(name)
        check_mode(mode)
        if _NATIVE:
            check_pretouch_cpus(os.environ.get("MMIPC_PRETOUCH_CPUS", ""))
        _warn_if_weakly_ordered()
        if page_size is not None:
            check_page_size(page_size)
        path = check_directory(directory)
        make_journal_directory(path, mode)
        link = link_for(service)
        lock_fd = acquire_writer_lock(path, name, mode)
        try:
            if schemas:
                from ._schema import declare_schemas

                declare_schemas(path, name, schemas, mode)
            if link is not None:
                _register(link, path, name)
            writer = cls(path, name, page_size, lock_fd, link, mode, checksum)
        except BaseException:
            _release(lock_fd, link, path, name)
            raise
        _LIVE.add(writer)
        return writer

    # -- the hot path -------------------------------------------------------------------------

    def write(self, payload: Any, msg_type: int = 0, source: int = 0) -> int:
        """Append one frame and publish it; return its timestamp (ns since the epoch).

        `payload` is any C-contiguous buffer: bytes, bytearray, memoryview, a ctypes Structure, a
        numpy record or array.

        Example: ``nano = writer.write(b"payload", msg_type=1)``
        """
        # Literals stand for FRAME_HEADER_SIZE (32), PAGE_END_RESERVE (32) and FRAME_BODY_OFFSET (4):
        # a global lookup each would cost this path a tenth of its time (asserted below the class).
        if _get_ident() != self._thread:
            raise _other_thread(self)
        kind = type(payload)
        if kind is not bytes and kind is not bytearray:
            try:
                payload = memoryview(payload).cast("B")  # len() of a ctypes/numpy view is not its size
            except TypeError:
                raise _bad_types(payload, msg_type) from None
        n = len(payload)
        pos = self._pos
        size = (n + 39) & ~7
        if pos + size + 32 > self._limit:
            return self._write_slow(payload, n, size, msg_type, source, None)
        mm = self._mm
        mm[pos + 32 : pos + 32 + n] = payload
        seq = self._seq
        nano = _monotonic_ns() + self._clock  # stamped after the copy: only the header store follows
        if nano < self._last_nano:
            nano = self._last_nano
        try:  # the msg_type check sits in this try so that a str msg_type costs the hot path nothing
            if msg_type > 0xFFFE_FFFF:
                raise struct.error("reserved msg_type")
            _pack_body(mm, pos + 4, msg_type, nano, source, n, seq)
        except (struct.error, TypeError):
            mm[pos : pos + size] = bytes(size)  # leave no stale payload past the committed end
            raise _bad_ids(msg_type, source) from None
        if pos >= self._slot_boundary:
            self._mark_index(pos, nano)
        _pack_commit(mm, pos, n + 32)
        if self._bells[8]:  # doorbells: one byte load per commit when no reader listens (_bell.py)
            self._ringer.ring()
        self._pos = pos + size
        self._last_nano = nano
        self._seq = seq + 1  # no wrap past 2**32 on a page of the fast path
        return nano

    def write_at(self, payload: Any, nano: int, msg_type: int = 0, source: int = 0) -> int:
        """Append one frame stamped `nano` instead of the clock: for replay and mirroring only.

        A live writer must use `write`, whose timestamps tell when frames were written. `nano` must not
        be older than the journal's last frame (`UsageError` otherwise): timestamps never decrease
        within a journal. The store order is `write`'s; the frame gets the journal's next `seq`.

        Example: ``mirror.write_at(bytes(frame.data), frame.nano, msg_type=frame.msg_type)``
        """
        if _get_ident() != self._thread:
            raise _other_thread(self)
        if _NATIVE:
            return self._through_python(Writer._write_at, payload, nano, msg_type, source)
        return self._write_at(payload, nano, msg_type, source)

    def _write_at(self, payload: Any, nano: int, msg_type: int, source: int) -> int:
        if isinstance(nano, bool) or not isinstance(nano, int) or not 0 < nano < 1 << 63:
            raise UsageError(  # 0 is a page header's "no frame yet" (first_nano): a seek would skip none
                f"write_at needs a timestamp in ns, an int in 1..2**63-1, not {nano!r} (journal "
                f"{self.name} in {self.directory})"
            )
        if nano < self._last_nano:
            raise UsageError(
                f"write_at needs a timestamp in ns not older than the last frame of journal {self.name} "
                f"in {self.directory} ({self._last_nano}), not {nano!r}: timestamps never decrease "
                "within a journal"
            )
        kind = type(payload)
        if kind is not bytes and kind is not bytearray:
            try:
                payload = memoryview(payload).cast("B")
            except TypeError:
                raise _bad_types(payload, msg_type) from None
        n = len(payload)
        return self._write_slow(payload, n, (n + 39) & ~7, msg_type, source, nano)

    def _write_slow(
        self, payload: Any, n: int, size: int, msg_type: int, source: int, nano: int | None
    ) -> int:
        """`write` when the frame needs a page switch, on a page of version 1, with checksums or
        where seq wraps past 2**32, with a claim open, or after `close()` (all set `_limit` to 0),
        and `write_at` (stamped `nano`)."""
        if not isinstance(msg_type, int) or msg_type > MAX_MSG_TYPE:
            raise _bad_ids(msg_type, source)
        pos = self._make_room(size)
        self._mm[pos + FRAME_HEADER_SIZE : pos + FRAME_HEADER_SIZE + n] = payload
        checksum = zlib.crc32(payload) if self._checksums else 0
        return self._publish(pos, n, msg_type, source, checksum, nano)

    def _publish(self, pos: int, n: int, msg_type: int, source: int, checksum: int, nano: int | None) -> int:
        """Stamp (now, or `nano`) and commit the frame whose payload is in place at `pos` (rule 2)."""
        mm, end = self._mm, pos + align8(n + FRAME_HEADER_SIZE)
        if nano is None:
            nano = _monotonic_ns() + self._clock
            if nano < self._last_nano:
                nano = self._last_nano
        seq = self._seq
        try:
            FRAME_BODY.pack_into(mm, pos + FRAME_BODY_OFFSET, msg_type, nano, source, n, seq, checksum)
        except (struct.error, TypeError):
            mm[pos:end] = bytes(end - pos)
            raise _bad_ids(msg_type, source) from None
        if pos >= self._slot_boundary:
            self._mark_index(pos, nano)
        COMMIT.pack_into(mm, pos, n + FRAME_HEADER_SIZE)
        if self._bells[8]:  # doorbells (_bell.py)
            self._ringer.ring()
        self._pos = end
        self._last_nano = nano
        self._seq = (seq + 1) & SEQ_MASK if self._v2 else 0  # a version 1 page numbers nothing
        return nano

    def frame(self, size: int, msg_type: int = 0, source: int = 0) -> FrameClaim:
        """Claim room for a `size`-byte payload, to fill in place; published when the block exits.

        If the block raises, nothing is published and the room is reused.

        Example: ``with writer.frame(408, msg_type=1) as buf: buf[:] = bytes(tick)``
        """
        if _get_ident() != self._thread:
            raise _other_thread(self)
        if _NATIVE:
            self._core_sync()  # attached again when the claim ends
        if not 0 <= msg_type <= MAX_MSG_TYPE or not 0 <= source <= MAX_SOURCE:
            raise _bad_ids(msg_type, source)
        if size < 0:
            raise UsageError(f"a frame claim needs a size >= 0, not {size}")
        pos = self._pos
        aligned = align8(size + FRAME_HEADER_SIZE)
        if pos + aligned + PAGE_END_RESERVE > self._limit:
            pos = self._make_room(aligned)
        assert self._page is not None
        claim = self._spare_claim
        claim.pos, claim.size, claim.msg_type, claim.source = pos, size, msg_type, source
        claim.buf = self._page.view[pos + FRAME_HEADER_SIZE : pos + FRAME_HEADER_SIZE + size]
        self._claim = claim
        self._limit = 0
        return claim

    def _end_claim(self, claim: FrameClaim, publish: bool) -> None:
        if _get_ident() != self._thread:
            raise _other_thread(self)
        checksum = zlib.crc32(claim.buf) if publish and self._checksums else 0
        claim.buf.release()
        self._claim = None
        pos, n = claim.pos, claim.size
        self._limit = self._fast_limit
        if _NATIVE and publish:
            claim.nano = self._commit_native(claim, checksum)
            return
        if _NATIVE:
            self._core_attach()
        if not publish:
            end = pos + align8(n + FRAME_HEADER_SIZE)
            self._mm[pos:end] = bytes(end - pos)  # an abandoned claim leaves no stale bytes behind
            return
        claim.nano = self._publish(pos, n, claim.msg_type, claim.source, checksum, None)

    def _mark_index(self, pos: int, nano: int) -> None:
        """Record the page's first timestamp and fill the time-index slots this frame starts."""
        mm = self._mm
        if pos == PAGE_HEADER_SIZE:
            NANO_FIELD.pack_into(mm, FIRST_NANO_OFFSET, nano)
        while self._slot_boundary <= pos:
            INDEX_SLOT.pack_into(mm, INDEX_OFFSET + 4 * self._slot_index, pos)
            self._slot_index += 1
            self._slot_boundary = self._boundary(self._slot_index)
        if pos == PAGE_HEADER_SIZE:
            return  # the page-switching write has done enough: the rest waits for the next slot
        if self._page_news is not None:
            self._send_page_news()
        if self._retiring is not None:
            self._retire_step()

    def _send_page_news(self) -> None:
        if self._page_news is not None and self._link is not None:
            self._link.notify("page", **self._page_news)
        self._page_news = None

    def _boundary(self, slot: int) -> int:
        return PAGE_HEADER_SIZE + slot * self._stride if slot < INDEX_SLOTS else _NEVER

    # -- the slow path: page switches, claims, close ------------------------------------------

    def _make_room(self, size: int) -> int:
        """The offset where a frame of `size` bytes (header included, aligned) goes, after a page
        switch if it does not fit the current page. Every page is used at its own size (its header's).
        """
        page = self._page
        if page is None:
            raise ClosedError(f"writer of journal {self.name} in {self.directory} is closed")
        if self._claim is not None:
            raise UsageError("a frame claim is open: finish its `with` block before writing again")
        if self._pos + size + PAGE_END_RESERVE <= page.page_size:
            return self._pos
        largest = max_payload(self._new_page_size)
        if size - FRAME_HEADER_SIZE > largest:
            raise FrameTooLargeError(
                f"a payload of {size - FRAME_HEADER_SIZE} bytes (padded) does not fit journal "
                f"{self.name}: the largest is {largest} bytes with {self._new_page_size}-byte pages; "
                "create the writer with a larger page_size"
            )
        self._switch_page(size)
        return self._pos

    def _switch_page(self, size: int) -> None:
        """Move to the next page (rule 3), which must have room for a `size`-byte frame."""
        assert self._page is not None
        number = self._page_no + 1
        new = self._next_page(number, size)
        old, pos = self._page, self._pos
        first_seq = full_seq(self._first_seq, self._seq) if self._v2 else 0
        if new.header.version >= 2:
            SEQ_FIELD.pack_into(new.mm, FIRST_SEQ_OFFSET, first_seq)  # step 1 ends here
        if pos == PAGE_HEADER_SIZE:  # an empty page too small for this frame: it holds only its marker
            NANO_FIELD.pack_into(old.mm, FIRST_NANO_OFFSET, self._last_nano)
        NANO_FIELD.pack_into(old.mm, LAST_NANO_OFFSET, self._last_nano)
        FRAME_BODY.pack_into(old.mm, pos + FRAME_BODY_OFFSET, MsgType.PAGE_END, self._last_nano, 0, 0, 0, 0)
        COMMIT.pack_into(old.mm, pos, FRAME_HEADER_SIZE)
        self._retire(old)
        self._attach(new, number, PAGE_HEADER_SIZE, 0, first_seq)

    def _next_page(self, number: int, size: int) -> MappedPage:
        """Page `number`, empty and with room for a `size`-byte frame: the one made ahead (by the
        service or a writer before) if it has that room, else a new one at this writer's page size,
        replacing one made ahead at a smaller size (no reader enters a page before its predecessor's
        end marker is committed, and that happens only after this)."""
        path = page_path(self.directory, self.name, number)
        try:
            new = MappedPage.open(path, self.name, number, writable=True)
        except FileNotFoundError:
            new = self._create_next(number, path, replace=False)
        if new.frame(PAGE_HEADER_SIZE) is not None:
            new.release()
            raise CorruptJournalError(path, PAGE_HEADER_SIZE, "the next page already holds frames")
        if PAGE_HEADER_SIZE + size + PAGE_END_RESERVE > new.page_size:
            new.release()
            new = self._create_next(number, path, replace=True)
        return new

    def _create_next(self, number: int, path: str, replace: bool) -> MappedPage:
        try:
            create_page(
                self.directory, self.name, number, self._new_page_size, self._mode, self._flags, replace
            )
            return MappedPage.open(path, self.name, number, writable=True)
        except StorageError:
            # Ask the service again: its one attempt may have failed (a full disk since freed), and
            # it may succeed where this process cannot (a file-size limit of this process's own).
            self._page_news = self._page_fields(self._page_no)
            self._send_page_news()
            raise

    def _page_fields(self, number: int) -> dict[str, object]:
        """The service's "page" message: this writer has started page `number`."""
        return {
            "directory": self.directory,
            "name": self.name,
            "page_no": number,
            "page_size": self._new_page_size,
            "mode": self._mode,
            "flags": self._flags,
        }

    def _retire(self, old: MappedPage) -> None:
        """Unmap the old page a slice at a time (see rule 7) rather than all at once now."""
        if self._retiring is not None:
            self._retiring.release()
        self._retiring, self._retired_upto = old, 0

    def _retire_step(self) -> None:
        page = self._retiring
        assert page is not None
        end = min(self._retired_upto + retire_slice(page.page_size), page.page_size)
        page.unmap_part(self._retired_upto, end - self._retired_upto)
        self._retired_upto = end
        if end == page.page_size:
            page.release()  # its page tables are gone already: a cheap munmap
            self._retiring = None

    def _attach(self, page: MappedPage, number: int, pos: int, filled_slots: int, seq: int) -> None:
        """Write at `pos` of `page` from now on; `seq` is the full sequence number of the next frame
        (its page's first_seq if it is the page's first), ignored on a version 1 page."""
        self._page, self._page_no, self._mm, self._pos = page, number, page.mm, pos
        self._v2, self._checksums = page.header.version >= 2, page.header.checksums
        self._first_seq = (page.header.first_seq if pos > PAGE_HEADER_SIZE else seq) if self._v2 else 0
        self._seq = seq & SEQ_MASK if self._v2 else 0
        # `write` takes its fast path only on version 2 pages without checksums whose seq does not
        # wrap past 2**32 (see `_write_slow`).
        wraps = (seq & SEQ_MASK) + (page.page_size - PAGE_HEADER_SIZE) // FRAME_HEADER_SIZE > SEQ_MASK
        self._fast_limit = page.page_size if self._v2 and not self._checksums and not wraps else 0
        self._limit = self._fast_limit
        self._stride = index_stride(page.page_size)
        self._slot_index = filled_slots
        self._slot_boundary = self._boundary(filled_slots)
        if self._link is not None:  # the service prepares page number + 1 in the background
            fields = self._page_fields(number)
            self._link.remember(("writer", self.directory, self.name, "page"), "page", **fields)
            self._page_news = fields  # sent from the next slot crossing, not the switching write

    # -- opening: resume after the last committed frame ---------------------------------------

    def _open_tail(self, page_size: int | None) -> None:
        remove_stale_temporaries(self.directory, self.name)
        pages = list_pages(self.directory, self.name)
        if not pages:
            self._new_page_size = page_size or DEFAULT_PAGE_SIZE
            create_page(self.directory, self.name, 0, self._new_page_size, self._mode, self._flags)
            pages = [0]
        for i in range(len(pages) - 1, -1, -1):
            page = MappedPage.open(page_path(self.directory, self.name, pages[i]), self.name, pages[i], True)
            end, last = page.tail()
            if last is None and i > 0:
                page.release()
                continue
            self._new_page_size = page_size or page.page_size
            self._last_nano = last.nano if last else 0
            seq = page.header.first_seq
            if last is not None and last.msg_type != MsgType.PAGE_END:
                seq = full_seq(seq, last.seq + 1)
            self._resume(page, pages[i], end, seq)
            if last is not None and last.msg_type == MsgType.PAGE_END:
                self._switch_to_existing_next()
            return

    def _resume(self, page: MappedPage, number: int, pos: int, seq: int) -> None:
        mm = page.mm
        slots = page.filled_slots()
        kept = sum(1 for slot in slots if slot < pos)
        for i in range(kept, len(slots)):
            INDEX_SLOT.pack_into(mm, INDEX_OFFSET + 4 * i, 0)
        if pos == PAGE_HEADER_SIZE:
            NANO_FIELD.pack_into(mm, FIRST_NANO_OFFSET, 0)
        for start in range(pos, page.page_size, len(_ZERO_CHUNK)):
            stop = min(start + len(_ZERO_CHUNK), page.page_size)
            if mm[start:stop] != _ZERO_CHUNK[: stop - start]:
                mm[start:stop] = _ZERO_CHUNK[: stop - start]
        self._attach(page, number, pos, kept, seq)

    def _switch_to_existing_next(self) -> None:
        """The last page ends with its marker: the next page exists by the switch order; go there."""
        assert self._page is not None
        self._page.release()
        number = self._page_no + 1
        path = create_page(self.directory, self.name, number, self._new_page_size, self._mode, self._flags)
        page = MappedPage.open(path, self.name, number, writable=True)
        self._resume(page, number, PAGE_HEADER_SIZE, page.header.first_seq)

    # -- the native backend: the C core (mmipc.journal._native.WriterCore) writes; Python is its slow path --
    #
    # The native Writer is a subclass of WriterCore, and `Writer.write` is WriterCore's C method
    # itself: a call costs no Python frame. The `_c_*` fields and methods are the core's. While the
    # core is attached it owns the position, last timestamp, seq and index-slot state; `_core_sync`
    # copies them back and detaches it before any Python code reads or changes them (a page switch,
    # a claim, write_at, close) or may unmap its page; `_core_attach` hands the (possibly new) page
    # back. On every case the C `write` does not handle (see _mmipcmodule.c) it changes nothing and
    # calls `_write_from_core` with its own arguments, so the errors and page rules stay this module's.

    def _write_from_core(self, payload: Any, msg_type: int = 0, source: int = 0) -> int:
        """What the C `write` does not do itself: another thread (its `_c_thread` check), a closed
        writer, a page switch, a slot crossing with page news to send, bad arguments."""
        if _get_ident() != self._thread:
            raise _other_thread(self)
        return self._through_python(_python_write, payload, msg_type, source)

    def _through_python(self, method: Any, *args: Any) -> int:
        self._core_sync()
        try:
            return method(self, *args)  # type: ignore[no-any-return]
        finally:
            self._core_attach()

    def _commit_native(self, claim: FrameClaim, checksum: int) -> int:
        """Publish a filled claim through the core (which stores its checksum), or Python's way."""
        self._core_attach()
        nano = self._c_commit(claim.pos, claim.size, claim.msg_type, claim.source)
        if nano is not _SLOW:
            return cast(int, nano)
        return self._through_python(
            Writer._publish, claim.pos, claim.size, claim.msg_type, claim.source, checksum, None
        )

    def _core_sync(self) -> None:
        """Take the writer's state back from the core, and detach it from the page."""
        if self._c_limit:
            self._pos, self._last_nano = self._c_pos, self._c_last_nano
            self._seq = self._c_next_seq & SEQ_MASK if self._v2 else 0
            self._slot_boundary, self._slot_index = self._c_slot_boundary, self._c_slot_index
        self._c_detach()

    def _core_attach(self) -> None:
        """Hand the current page and state to the core, unless no frame may be written now."""
        page = self._page
        if not _NATIVE:
            return
        if page is None or self._claim is not None:
            self._c_detach()
            return
        header = page.header
        seq = full_seq(self._first_seq, self._seq) if self._v2 else 0
        self._c_attach(
            page.view,
            page.page_size,
            header.version,
            header.flags,
            self._first_seq,
            self._pos,
            self._last_nano,
            seq,
            self._slot_boundary,
            self._slot_index,
        )
        self._c_clock = self._clock
        self._c_mark_slots = self._page_news is None and self._retiring is None

    # -- introspection and lifetime -----------------------------------------------------------

    @property
    def page_size(self) -> int:
        """The size of pages this writer creates.

        Example: ``max_payload(writer.page_size)``
        """
        return self._new_page_size

    @property
    def last_nano(self) -> int:
        """The timestamp of the last frame committed to the journal (0 if it is empty).

        Example: ``writer.last_nano  # 0 before the first frame``
        """
        if _NATIVE and self._c_limit:
            return int(self._c_last_nano)
        return self._last_nano

    @property
    def closed(self) -> bool:
        """True once `close()` ran.

        Example: ``if not writer.closed: writer.write(b"x")``
        """
        return self._page is None

    def sync(self) -> None:
        """Flush the current page to disk (msync); frames are visible to readers without it.

        Example: ``writer.sync()  # at the end of a trading day``
        """
        if _get_ident() != self._thread:
            raise _other_thread(self)
        if self._page is not None:
            self._page.mm.flush()

    def close(self) -> None:
        """Unmap the journal and release its lock. Safe to call twice.

        Example: ``writer.close()  # or leave the `with` block``
        """
        if self._page is None:
            return
        if _get_ident() != self._thread:
            raise _other_thread(self)
        if _NATIVE:
            self._core_sync()
        if self._claim is not None:
            self._end_claim(self._claim, publish=False)
        if _NATIVE:
            self._c_detach()
            self._c_pretouch_stop()  # before the page is unmapped
        if self._retiring is not None:
            self._retiring.release()
            self._retiring = None
        self._page.release()
        self._page = None
        self._limit = 0
        self._ringer.close()
        if _NATIVE:
            self._c_close_bells()
        self._finalizer()
        _LIVE.discard(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop this copy of the writer without touching the parent's lock."""
        if self._page is not None:
            if _NATIVE:
                self._c_detach()  # the child must not append through it either
                self._c_pretouch_stop()  # the child has no pretoucher thread: only forget it
            self._page = None
            self._limit = 0
            self._finalizer.detach()
            os.close(self._lock_fd)  # the parent's descriptor keeps the flock held

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        pos = self._c_pos if _NATIVE and self._c_limit else self._pos
        state = "closed" if self._page is None else f"page {self._page_no} offset {pos}"
        return f"<mmipc.Writer {self.name!r} in {self.directory!r}, {state}>"


_LIVE: weakref.WeakSet[Writer] = weakref.WeakSet()

_python_write = Writer.write
_CPU_LIST = re.compile(r"([0-9]+)(?:-([0-9]+))?")  # ASCII: int() takes any digits, C does not
CPU_SETSIZE = 1024  # glibc's cpu_set_t: the C core's limit on a CPU number


def check_pretouch_cpus(text: str) -> None:
    """Raise `UsageError` unless `text` (MMIPC_PRETOUCH_CPUS) is empty or a CPU list as the kernel
    prints them ("2-3,6"): the C core places the pretoucher thread there (rule 10)."""
    if not text:
        return
    ranges = [_CPU_LIST.fullmatch(part) for part in text.removesuffix("\n").split(",")]
    if all(m is not None and int(m[1]) <= int(m[2] or m[1]) < CPU_SETSIZE for m in ranges):
        return
    raise UsageError(
        f"MMIPC_PRETOUCH_CPUS must be a CPU list such as 2-3,6 (where the writer's pretoucher "
        f"thread runs), not {text!r}"
    )


if native is not None:  # bound once at import: the pure-Python backend keeps its own `write`
    _SLOW = native.SLOW
    Writer.write = native.WriterCore.write  # type: ignore[method-assign]  # its __doc__ is write's


def _forget_writers_in_child() -> None:
    for writer in list(_LIVE):
        writer._forget_after_fork()
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_writers_in_child)

assert (FRAME_HEADER_SIZE, PAGE_END_RESERVE, FRAME_BODY_OFFSET, MAX_MSG_TYPE) == (32, 32, 4, 0xFFFE_FFFF)


def _register(link: Link, directory: str, name: str) -> None:
    try:
        link.request("register_writer", directory=directory, name=name)
    except ServiceRefusedError as exc:
        if exc.code == "journal_locked":
            raise JournalLockedError(
                f"{exc}; stop that writer first: a journal has exactly one writer"
            ) from None
        raise
    link.remember(("writer", directory, name), "register_writer", directory=directory, name=name)


def _release(lock_fd: int, link: Link | None, directory: str, name: str) -> None:
    """Give the journal up: the OS lock, and the service's registration (also run by the GC)."""
    release_pid_lock(lock_fd)
    if link is not None:
        link.forget(("writer", directory, name))
        link.notify("unregister_writer", directory=directory, name=name)


def _bad_types(payload: Any, msg_type: Any) -> UsageError:
    """The error for a write whose payload or msg_type has the wrong type (never on the hot path)."""
    if isinstance(payload, str):
        return UsageError("payload is a str: encode it first, e.g. writer.write(text.encode())")
    if not isinstance(msg_type, int):
        return _not_int("msg_type", msg_type)
    return UsageError(
        f"payload must be a C-contiguous bytes-like object, not {type(payload).__name__}: pass bytes, "
        "a ctypes Structure, or numpy.ascontiguousarray(array)"
    )


def _not_int(label: str, value: Any) -> UsageError:
    return UsageError(f"{label} must be an int, not {type(value).__name__} {value!r}")


def _other_thread(writer: Writer) -> UsageError:
    return UsageError(
        f"writer of journal {writer.name} belongs to the thread that created it (ident {writer._thread}), "
        f"not thread {_get_ident()}: create one writer per journal in the thread that writes"
    )


def _bad_ids(msg_type: int, source: int) -> UsageError:
    if not isinstance(msg_type, int) or not isinstance(source, int):
        return _not_int(*(("msg_type", msg_type) if not isinstance(msg_type, int) else ("source", source)))
    if not 0 <= msg_type <= MAX_MSG_TYPE:
        return UsageError(f"msg_type {msg_type} is outside 0..{MAX_MSG_TYPE} (the rest is reserved)")
    return UsageError(f"source {source} is outside 0..{MAX_SOURCE}")


def _warn_if_weakly_ordered() -> None:
    if native is not None:  # the C core stores the commit word with release order
        return
    machine = os.uname().machine  # not `platform`: importing it costs 1 ms of `import mmipc`
    if machine.lower() not in ("x86_64", "amd64"):
        warnings.warn(
            f"mmipc's commit protocol is proven for x86-64 only; on {machine} readers may "
            "see a frame's commit word before its payload (docs/format.md, 'Memory ordering')",
            RuntimeWarning,
            stacklevel=3,
        )


class FrameClaim:
    """Room for one frame, claimed by `Writer.frame`; publish it by leaving the `with` block.

    Example: ``with writer.frame(408, msg_type=101) as buf: buf[:] = bytes(tick)``
    """

    __slots__ = ("_writer", "pos", "size", "msg_type", "source", "buf", "nano")

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self.pos = self.size = self.msg_type = self.source = self.nano = 0
        self.buf = memoryview(b"")

    def __enter__(self) -> memoryview:
        return self.buf

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer._end_claim(self, publish=exc_type is None)
