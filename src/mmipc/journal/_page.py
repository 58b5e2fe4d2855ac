"""One page file, mapped: header validation, walking committed frames, finding the tail, seeking.

A reader maps pages read-only and never writes to them; the writer maps its current page read-write.
Every walk here reads a frame's commit word before anything else of the frame and stops at the first
word that is still 0 (see docs/format.md, "Memory ordering").
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Iterator

from .._errors import CorruptJournalError, StorageError
from ._files import DESCRIPTOR_ERRNOS, descriptors_checked, descriptors_error
from ._layout import (
    INDEX_OFFSET,
    INDEX_SLOT,
    INDEX_TABLE,
    PAGE_HEADER_SIZE,
    FrameInfo,
    MsgType,
    PageHeader,
    decode_frame,
    decode_page_header,
)


class MappedPage:
    """A page file mapped into memory, with its validated header."""

    __slots__ = ("path", "header", "mm", "view", "page_size")

    def __init__(self, path: str, mm: mmap.mmap, header: PageHeader) -> None:
        self.path = path
        self.mm = mm
        self.view = memoryview(mm)
        self.header = header
        self.page_size = header.page_size

    @classmethod
    def open(cls, path: str, name: str, page_no: int, writable: bool = False) -> MappedPage:
        """Map page `page_no` of journal `name`; raise `CorruptJournalError` if it is not that page."""
        fd = open_page_file(path, writable)
        try:
            return cls._map(fd, path, name, page_no, writable)
        finally:
            os.close(fd)

    @classmethod
    def _map(cls, fd: int, path: str, name: str, page_no: int, writable: bool) -> MappedPage:
        header, size = read_header(fd, path)
        if size != header.page_size:
            raise CorruptJournalError(
                path, size, f"file is {size} bytes but its header says {header.page_size} (truncated)"
            )
        if header.page_no != page_no or header.name != name:
            raise CorruptJournalError(
                path,
                24,
                f"header names page {header.page_no} of {header.name!r}, expected page {page_no} of {name!r}",
            )
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        with descriptors_checked(f"cannot map page {path}"):  # the map keeps a dup of `fd`
            mm = mmap.mmap(fd, size, access=access)
        return cls(path, mm, header)

    def unmap_part(self, start: int, length: int) -> None:
        """Drop the page-table entries of a part of the map; the data stays in the page cache."""
        self.mm.madvise(mmap.MADV_DONTNEED, start, length)

    def release(self) -> None:
        """Unmap now, or as soon as the last frame view a caller still holds is dropped."""
        self.view.release()
        try:
            self.mm.close()
        except BufferError:
            pass  # a caller still holds a frame's memoryview; the map dies with it

    def frame(self, offset: int) -> FrameInfo | None:
        return decode_frame(self.mm, offset, self.page_size, self.path, self.header.checksums)

    def frames(self, start: int = PAGE_HEADER_SIZE) -> Iterator[FrameInfo]:
        """Committed frames from `start` on, ending with the end-of-page marker if there is one."""
        offset = start
        while (info := self.frame(offset)) is not None:
            yield info
            if info.msg_type == MsgType.PAGE_END:
                return
            offset = info.end

    def filled_slots(self) -> tuple[int, ...]:
        slots: tuple[int, ...] = INDEX_TABLE.unpack_from(self.mm, INDEX_OFFSET)
        try:
            return slots[: slots.index(0)]
        except ValueError:
            return slots

    def tail(self) -> tuple[int, FrameInfo | None]:
        """The offset just past the last committed frame, and that frame (None on an empty page)."""
        slots = self.filled_slots()
        start = PAGE_HEADER_SIZE
        for i in range(len(slots) - 1, -1, -1):
            if self._slot_frame(i, slots[i]) is not None:
                start = slots[i]
                break
        last = None
        for frame in self.frames(start):
            last = frame
        return (last.end if last else start), last

    def seek(self, nano: int) -> tuple[int, bool]:
        """The offset of the first frame with a timestamp >= `nano`, or of the end of what is committed.

        The flag is True when the page's end-of-page marker is reached first (continue on the next page).
        """
        slots = self.filled_slots()
        lo, hi = 0, len(slots)
        while lo < hi:
            mid = (lo + hi) // 2
            info = self._slot_frame(mid, slots[mid])
            if info is None or info.nano >= nano:
                hi = mid
            else:
                lo = mid + 1
        offset = slots[lo - 1] if lo else PAGE_HEADER_SIZE
        for info in self.frames(offset):
            if info.msg_type == MsgType.PAGE_END:
                return info.offset, True
            if info.nano >= nano:
                return info.offset, False
            offset = info.end
        return offset, False

    def _slot_frame(self, index: int, offset: int) -> FrameInfo | None:
        """The frame a time-index slot points at, or None if it is not (or no longer) committed.

        The slot is read again after the frame: a writer resuming after a crash clears stale slots
        before it overwrites anything, so an unchanged slot proves the frame read was the real one.
        """
        if offset < PAGE_HEADER_SIZE or offset >= self.page_size:
            raise CorruptJournalError(self.path, INDEX_OFFSET + 4 * index, "time index slot is out of range")
        info = self.frame(offset)
        if INDEX_SLOT.unpack_from(self.mm, INDEX_OFFSET + 4 * index)[0] != offset:
            return None
        return info


def open_page_file(path: str, writable: bool = False) -> int:
    """Open a page file: never through a symbolic link, never blocking (a FIFO planted where a page
    belongs would block a plain open until someone writes to it), and only a regular file.
    FileNotFoundError passes through: the callers decide whether a missing page is normal (not
    created yet) or corrupt."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptJournalError(
                path,
                0,
                "the page is a symbolic link; mmipc does not follow links "
                "to pages (link the journal's directory instead)",
            ) from None
        if exc.errno == errno.ENXIO:  # a socket, or a device with no driver
            raise CorruptJournalError(path, 0, "not a regular file (a socket or device)") from None
        if exc.errno in DESCRIPTOR_ERRNOS:
            raise descriptors_error(f"cannot open page {path}", exc) from exc
        raise StorageError(f"cannot open page {path}: {exc.strerror}") from exc
    try:
        info = require_regular_file(fd, path)
        if writable and info.st_uid != os.geteuid():
            raise StorageError(
                f"refusing to write page {path}: it is owned by uid {info.st_uid}, not by this user "
                f"(uid {os.geteuid()})"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def require_regular_file(fd: int, path: str) -> os.stat_result:
    """The `fstat` of `fd`; `CorruptJournalError` naming `path` if it is not a regular file."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise CorruptJournalError(path, 0, f"not a regular file (a {_file_kind(info.st_mode)})")
    return info


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket")]
    kinds += [(stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")]
    return next((kind for test, kind in kinds if test(mode)), "special file")


def page_header(path: str) -> PageHeader:
    """The validated header of the page file at `path`, without mapping the page."""
    fd = open_page_file(path)
    try:
        return read_header(fd, path)[0]
    finally:
        os.close(fd)


def read_header(fd: int, path: str) -> tuple[PageHeader, int]:
    """The validated header of the open page file `fd`, and the file's size."""
    info = require_regular_file(fd, path)
    if info.st_size < PAGE_HEADER_SIZE:
        raise CorruptJournalError(path, info.st_size, "file is shorter than a page header (truncated)")
    return decode_page_header(os.pread(fd, PAGE_HEADER_SIZE, 0), path), info.st_size
