"""Reading pages straight into numpy: the engine under `to_numpy`, `iter_batches` and `export`.

Rules:

* Read-only, like a cursor: pages are mapped read-only and nothing on disk is created or changed.
* Committed frames only, as a cursor sees them. The end of each journal is found first, with the
  cursor's ordering rule (a frame's commit word is loaded before anything else of it; docs/format.md,
  "Memory ordering"): every byte before that end belongs to a committed frame, or to a page that has
  ended, and committed bytes never change. So the scan below may copy whole frame headers at once,
  in any order, and never looks past that end.
* A snapshot: the end of each journal is fixed when a call starts (its last page and the offset after
  its last committed frame). Frames a live writer commits later are not read by that call.
* Every frame is checked as a cursor checks it (lengths, room in the page, timestamp order), and every
  selected frame against its schema's size and, on a page with checksums, against its CRC-32 (a frame
  not selected is never handed out: its payload is verified only if the scan walks it one by one):
  `CorruptJournalError` names the file and the offset.
* Fast path: a run of frames of one length is read as one strided numpy view over the mapped page:
  each header field it checks is copied out of it as one contiguous column (one strided loop per
  field; a copy of whole header records went field by field, one call per field and frame, and one
  opaque 32-byte copy per header is a memcpy call each), and the columns checked together, in SIMD.
  Frames whose lengths vary are walked one by one. Runs are looked at in windows that start at 64
  frames and grow 8-fold while full, so a mixed page costs O(frames), not O(frames x page), up to
  8,192 frames: the cache lines of that many headers (512 KiB) stay in the cache from the first
  field's copy to the last (windows of a whole page read each line from memory once per field).
* Mapping: each page is mapped in one call before it is read (`populate`: MADV_POPULATE_READ, the
  range to be read only), not by the first reads' page faults, one per 16 pages of 4 KiB.
* Copying out: the selected frames of a page are copied into the result once, one vectorised copy
  per column (the payload's bytes as one opaque value per row, so one memcpy each, the timestamp,
  the source, the journal),
  from a strided view of the page when the frames are evenly spaced, else gathered from a view with
  an 8-byte stride (frames are 8-aligned). The copies go `CHUNK_BYTES` of rows at a time, so that the
  four columns of a chunk are copied while its rows and frames are still in the CPU's cache.
* Memory: `to_numpy` counts the frames of every page first (an index that keeps, for a page whose
  selected frames are evenly spaced, three integers), allocates the result once, then maps one page
  at a time to fill it: its peak is the result plus one mapped page (plus 8 bytes per selected frame
  of a page with gaps). Merging several journals adds, beside the result, 8 bytes per frame (where
  each row goes; 24 while the timestamps are sorted, before the result is allocated) and one page's
  rows. `iter_arrays`, `iter_batches` and export hold one page (or batch) of rows at a time.
* Merge order is `Reader`'s: by timestamp; ties go to the journal given first; within a journal,
  append order (a stable sort on the timestamps of rows concatenated in journal order).
"""

from __future__ import annotations

import functools
import mmap
import operator
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._errors import CorruptJournalError, UsageError
from ..journal._files import check_directory, check_name, list_pages, page_path
from ..journal._layout import (
    FRAME_ALIGN,
    FRAME_HEADER_SIZE,
    MAX_MSG_TYPE,
    PAGE_END_RESERVE,
    PAGE_HEADER_SIZE,
    MsgType,
    check_checksum,
    decode_frame,
)
from ..journal._page import MappedPage, page_header
from ..journal._schema import Declaration, Struct, anonymous, load_schemas, numpy_dtype, storable, to_struct

HEADER_COLUMNS = ("nano", "journal", "source")
PAYLOAD_PREFIX = "payload_"  # before a payload field named like a column of HEADER_COLUMNS
_HEADER_FIELDS = {  # the frame header's fields the scan reads: (format, offset) (docs/format.md)
    "length": ("<u4", 0),
    "msg_type": ("<u4", 4),
    "nano": ("<i8", 8),
    "payload_len": ("<u4", 20),
    "checksum": ("<u4", 28),
}
_PAGE_END = int(MsgType.PAGE_END)
_CHECKSUM_AT = 28  # the checksum's offset in a frame header (docs/format.md)
_SHORT_RUN = 4  # a vectorised run shorter than this is not worth its overhead ...
_WALK = 32  # ... so walk this many frames one by one before trying again
_FIRST_WINDOW = 64  # frames a run looks at first; grows 8-fold while runs fill it
_MAX_WINDOW = 1 << 13  # frames: their header lines (512 KiB) stay in the cache for every field
NO_LIMIT = (1 << 63) - 1
ROW_HEAD = 16  # bytes of nano, journal and source before the payload in a row
CHUNK_BYTES = 1 << 20  # rows copied at a time: the columns of a chunk are copied while it is in cache
MADV_POPULATE_READ = 22  # Linux 5.14+ (<linux/mman.h>; Python's mmap module has no name for it)


class JournalNotFoundError(UsageError):
    """A journal asked for has no page in its directory."""


class LayoutMismatchError(CorruptJournalError, UsageError):
    """A selected frame's payload is not the size of the layout read with: the page is intact (a
    writer wrote it so, or the layout given is the wrong one), so it names the frame and how to read
    around it, not "move the damaged page aside". A `CorruptJournalError` for callers that catch
    that."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        self.path, self.offset, self.problem = path, offset, problem
        UsageError.__init__(
            self,
            f"{path} at offset {offset}: {problem}: the layout does not fit this frame (the page "
            "itself is intact); give the layout its frames follow, or a time range without them",
        )


@dataclass(frozen=True)
class Query:
    """What to read: which journals, which msg_type with which layout, which time range."""

    directory: str
    names: tuple[str, ...]
    msg_type: int
    layout: Struct
    since: int
    until: int
    ends: tuple[tuple[int, int], ...] | None = None  # per journal, `snapshot`'s end, once `pinned`
    known: tuple[tuple[PageIndex, ...], ...] | None = None  # per journal, its pages, once `count_rows`

    @property
    def journals(self) -> list[str]:
        return [f"{self.directory}/{n}" for n in self.names]


def make_query(
    directory: str | os.PathLike[str],
    names: str | Sequence[str],
    msg_type: int | None,
    since: int | None,
    until: int | None,
    schema: Declaration | None,
) -> Query:
    """Check the arguments and find the payload layout; raise `UsageError` naming what is wrong."""
    path = check_directory(directory, "directory")
    chosen = _names(names)
    if not chosen:
        raise UsageError("give at least one journal name")
    for name in chosen:
        check_name(name)
        if not list_pages(path, name):
            raise JournalNotFoundError(f"no journal {name} in {path} (no page file {name}.*.journal)")
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"a journal is named twice in {list(chosen)}")
    declared = {name: load_schemas(path, name) for name in chosen}
    msg_type = _pick_msg_type(msg_type, declared, schema)
    layout = storable(to_struct(schema)) if schema is not None else _declared_layout(msg_type, declared, path)
    low, high = _nano(since, "since", 0), _nano(until, "until", NO_LIMIT)
    if low > high:
        raise UsageError(f"since ({low}) is after until ({high}): the range selects nothing")
    return Query(path, chosen, msg_type, layout, low, high)


def pinned(query: Query) -> Query:
    """The query with the end of each journal fixed now: every later pass over it reads the same
    frames, also on a live journal (an export counts its rows first, then writes them)."""
    return replace(query, ends=tuple(snapshot(query.directory, name) for name in query.names))


def _names(names: Any) -> tuple[str, ...]:
    """One journal name, or several (any iterable of str)."""
    try:
        chosen = (names,) if isinstance(names, str) else tuple(names)
    except TypeError:
        chosen = (names,)
    if not all(isinstance(name, str) for name in chosen):
        raise UsageError(f"journal names must be a str or a list of str, not {names!r}")
    return chosen


def _nano(value: Any, what: str, default: int) -> int:
    """`since` or `until`: an int (numpy's too) of ns since the epoch."""
    if value is None:
        return default
    try:
        nano = operator.index(value) if not isinstance(value, bool) else -1
    except TypeError:
        nano = -1
    if not 0 <= nano <= NO_LIMIT:
        raise UsageError(f"{what} must be a time in ns since the epoch (an int >= 0), not {value!r}")
    return nano


def _pick_msg_type(msg_type: int | None, declared: dict[str, dict[int, Struct]], schema: Any) -> int:
    if msg_type is not None:
        try:  # an int, numpy's too (a value taken from an array)
            chosen = operator.index(msg_type) if not isinstance(msg_type, bool) else -1
        except TypeError:
            chosen = -1
        if not 0 <= chosen <= MAX_MSG_TYPE:
            raise UsageError(f"msg_type must be an int in 0..{MAX_MSG_TYPE}, not {msg_type!r}")
        return chosen
    types = sorted({t for layouts in declared.values() for t in layouts})
    if len(types) == 1:
        return types[0]
    raise UsageError(f"pass msg_type=: the journals declare {types or 'no schema'}")


def _declared_layout(msg_type: int, declared: dict[str, dict[int, Struct]], directory: str) -> Struct:
    found = {name: layouts[msg_type] for name, layouts in declared.items() if msg_type in layouts}
    if len(found) < len(declared):
        missing = sorted(set(declared) - set(found))
        raise UsageError(
            f"journal(s) {missing} in {directory} declare no schema for msg_type {msg_type}: "
            "pass schema= (a ctypes Structure, a numpy dtype or a name from mmipc.ctp)"
        )
    if len({anonymous(layout) for layout in found.values()}) > 1:  # struct names do not count
        raise UsageError(f"the journals declare different layouts for msg_type {msg_type}")
    return next(iter(found.values()))


# -- dtypes ----------------------------------------------------------------------------------------


def output_dtype(layout: Struct) -> Any:
    """Rows as returned: nano (datetime64[ns]) at 0, journal (index into the names) at 8, source at
    12, then the payload fields at 16 + their offset in the payload. Keeping the payload's own layout
    lets a row be filled with one copy of the payload's bytes; its padding has no field name, so it
    is never a column."""
    payload = numpy_dtype(layout)
    return np.dtype(
        {
            "names": [*HEADER_COLUMNS, *payload_columns(layout)],
            "formats": ["M8[ns]", "<u2", "<u4", *(payload.fields[n][0] for n in payload.names)],
            "offsets": [0, 8, 12, *(ROW_HEAD + payload.fields[n][1] for n in payload.names)],
            "itemsize": ROW_HEAD + layout.size,
        }
    )


def payload_columns(layout: Struct) -> list[str]:
    """The column of each payload field: its name, but a field named like a column mmipc adds itself
    (`HEADER_COLUMNS`) gets `PAYLOAD_PREFIX` before it (again while that is taken: `payload_nano`,
    else `payload_payload_nano`)."""
    taken = set(HEADER_COLUMNS) | {field.name for field in layout.fields}
    columns = []
    for field in layout.fields:
        column = field.name
        if column in HEADER_COLUMNS:
            while column in taken:
                column = PAYLOAD_PREFIX + column
            taken.add(column)
        columns.append(column)
    return columns


# -- one journal: its pages, scanned -------------------------------------------------------------


@dataclass
class PageIndex:
    """The selected frames of one page: their offsets (an int64 array, or a `range` once `compact`
    finds them evenly spaced) and their timestamps (None once `compact` dropped them)."""

    page_no: int
    path: str
    offsets: Any
    nanos: Any

    def compact(self) -> PageIndex:
        """The same frames in a few integers when they are evenly spaced, without timestamps: what
        `to_numpy` keeps of every page of one journal until it fills the result."""
        step = spacing(self.offsets)
        if step is None:
            return PageIndex(self.page_no, self.path, self.offsets, None)
        first = int(self.offsets[0]) if len(self.offsets) else 0
        return PageIndex(self.page_no, self.path, range(first, first + step * len(self.offsets), step), None)


def spacing(offsets: Any) -> int | None:
    """The distance between consecutive `offsets` if it is always the same (None if not; 1 for fewer
    than two, so that any count of frames makes a valid range)."""
    if isinstance(offsets, range):
        return offsets.step
    if len(offsets) < 2:
        return 1
    steps = np.diff(offsets)
    return int(steps[0]) if (steps == steps[0]).all() else None


def snapshot(directory: str, name: str) -> tuple[int, int]:
    """The last page holding a committed frame, and the offset after that frame: the end of a read."""
    pages = list_pages(directory, name)
    for i in range(len(pages) - 1, -1, -1):
        page = MappedPage.open(page_path(directory, name, pages[i]), name, pages[i])
        try:
            end, last = page.tail()
        finally:
            page.release()
        if last is not None or i == 0:
            return pages[i], end
    raise JournalNotFoundError(f"no journal {name} in {directory}")


def page_indexes(query: Query, name: str) -> Iterator[PageIndex]:
    """The selected frames of each page of journal `name`, in order, up to its end at call time (or
    at its `pinned` end). A page `count_rows` found evenly filled is not scanned again."""
    ends = query.ends
    last_page, last_end = snapshot(query.directory, name) if ends is None else ends[query.names.index(name)]
    if query.known is not None:
        for index in query.known[query.names.index(name)]:
            if index.offsets is None:  # a page with gaps: its offsets were not kept
                index = _index_page(
                    query, name, index.page_no, last_end if index.page_no == last_page else None
                )[0]
            yield index
        return
    number = _first_page(query, name, list_pages(query.directory, name))
    last_nano = 0
    while number <= last_page:
        index, last_nano, ended = _index_page(
            query, name, number, last_end if number == last_page else None, last_nano
        )
        yield index
        if not ended or last_nano > query.until:
            return
        number += 1


def _index_page(
    query: Query, name: str, number: int, stop: int | None, last_nano: int = 0
) -> tuple[PageIndex, int, bool]:
    """Scan page `number` of journal `name` up to `stop` (all of it if None; its frames must not be
    older than `last_nano`): its selected frames, the timestamp of its last frame (`last_nano` if it
    has none) and whether it has ended."""
    path = page_path(query.directory, name, number)
    try:
        page = MappedPage.open(path, name, number)
    except FileNotFoundError:
        raise CorruptJournalError(path, 0, "the page before it ends, but this page is missing") from None
    try:
        stop = page.page_size if stop is None else stop
        populate(page, 0, stop)
        offsets, types, nanos, lengths, ended = scan_page(page, stop)
        last_nano = _check_order(page.path, offsets, nanos, last_nano)
        index = _select(query, page, offsets, types, nanos, lengths)
    finally:
        page.release()
    return PageIndex(number, path, *index), last_nano, ended


def _first_page(query: Query, name: str, pages: list[int]) -> int:
    """The page to start at for `since`: skip the pages whose successor starts before it."""
    chosen = 0
    while chosen + 1 < len(pages):
        first = page_header(page_path(query.directory, name, pages[chosen + 1])).first_nano
        if first == 0 or first > query.since:
            break
        chosen += 1
    return pages[chosen]


def scan_page(page: MappedPage, stop: int) -> tuple[Any, Any, Any, Any, bool]:
    """Offsets, msg_types, timestamps and lengths of the committed data frames before `stop`, and
    whether the page's end-of-page marker was reached."""
    parts: list[tuple[Any, ...]] = []
    pos, walk, window = PAGE_HEADER_SIZE, 0, _FIRST_WINDOW
    while pos < stop:
        if walk:
            info = page.frame(pos)
            if info is None:
                break
            if info.msg_type == _PAGE_END:
                return (*_joined(parts), True)
            parts.append(([pos], [info.msg_type], [info.nano], [info.length]))
            pos, walk = info.end, walk - 1
            continue
        run, pos = _run(page, pos, stop, window)
        if run is None:
            walk = 1  # the frame here is not a plain data frame: let the walk decide what it is
            continue
        parts.append(run)
        # A run that filled its window probably goes on: look further next time. One that did not
        # is in a mixed stretch: walk a little, then look at a small window again.
        window = min(window * 8, _MAX_WINDOW) if len(run[0]) == window else _FIRST_WINDOW
        walk = _WALK if len(run[0]) < _SHORT_RUN else 0
    return (*_joined(parts), False)


def _run(page: MappedPage, pos: int, stop: int, window: int) -> tuple[tuple[Any, ...] | None, int]:
    """The frames from `pos` on (at most `window`) that share the first one's length, read as one
    strided view."""
    first = decode_frame(page.mm, pos, page.page_size, page.path)
    if first is None or first.msg_type == _PAGE_END:
        return None, pos
    stride = first.end - pos
    count = min((page.page_size - PAGE_END_RESERVE - pos) // stride, -(-(stop - pos) // stride), window)
    n = _first(_field(page, pos, stride, count, "length") != first.length, count)
    types = _field(page, pos, stride, n, "msg_type")
    n = _first(types == _PAGE_END, n)
    bad = _field(page, pos, stride, n, "payload_len") != first.payload_len
    if not page.header.checksums:
        bad |= _field(page, pos, stride, n, "checksum") != 0  # (checksums are verified once selected)
    if bad.any():
        at = pos + stride * int(bad.argmax())
        decode_frame(page.mm, at, page.page_size, page.path, page.header.checksums)  # raises its error
        raise CorruptJournalError(page.path, at, "frame header disagrees with its length")
    offsets = np.arange(pos, pos + stride * n, stride, dtype=np.int64)
    run = (offsets, types[:n], _field(page, pos, stride, n, "nano"), np.full(n, first.length, np.uint32))
    return run, pos + stride * n


def _field(page: MappedPage, pos: int, stride: int, count: int, name: str) -> Any:
    """One header field of the `count` frames from `pos`, `stride` bytes apart, copied contiguous: a
    strided copy of one field is one tight loop, and numpy compares contiguous columns with SIMD (a
    copy of whole header records went field by field, one call per field and frame)."""
    kind, at = _HEADER_FIELDS[name]
    return np.array(np.ndarray((count,), kind, buffer=page.mm, offset=pos + at, strides=(stride,)))


def _first(found: Any, default: int) -> int:
    """The index of the first True of `found`, or `default` if none."""
    i = int(found.argmax()) if len(found) else 0
    return i if len(found) and found[i] else default


def _joined(parts: list[tuple[Any, ...]]) -> tuple[Any, Any, Any, Any]:
    if not parts:
        return (np.empty(0, np.int64), np.empty(0, np.uint32), np.empty(0, np.int64), np.empty(0, np.uint32))
    kinds = (np.int64, np.uint32, np.int64, np.uint32)
    return tuple(np.concatenate([np.asarray(p[i], kinds[i]) for p in parts]) for i in range(4))  # type: ignore[return-value]


def _check_order(path: str, offsets: Any, nanos: Any, last_nano: int) -> int:
    if not len(nanos):
        return last_nano
    i = 0 if nanos[0] < last_nano else _first(nanos[1:] < nanos[:-1], -2) + 1  # (no copy of nanos)
    if i >= 0:
        before = last_nano if i == 0 else int(nanos[i - 1])
        raise CorruptJournalError(
            path,
            int(offsets[i]),
            f"timestamp {int(nanos[i])} is older than the frame before it ({before})",
        )
    return int(nanos[-1])


def _select(
    query: Query, page: MappedPage, offsets: Any, types: Any, nanos: Any, lengths: Any
) -> tuple[Any, Any]:
    keep = (types == query.msg_type) & (nanos >= query.since) & (nanos <= query.until)
    if not keep.all():  # (most pages of a journal of one msg_type keep every frame: no copies then)
        offsets, nanos, lengths = offsets[keep], nanos[keep], lengths[keep]
    wrong = lengths != FRAME_HEADER_SIZE + query.layout.size
    if wrong.any():
        i = int(wrong.argmax())
        raise LayoutMismatchError(
            page.path,
            int(offsets[i]),
            f"a frame of msg_type {query.msg_type} carries {int(lengths[i]) - FRAME_HEADER_SIZE} bytes, but "
            f"its schema {query.layout.name} is {query.layout.size} bytes",
        )
    if page.header.checksums:
        verify_checksums(page, offsets, lengths)
    return offsets, nanos


def verify_checksums(page: MappedPage, offsets: Any, lengths: Any) -> None:
    """Check the payload of every frame at `offsets` (of frame lengths `lengths`) against its CRC-32:
    the stored checksums gathered at once, one zlib.crc32 per payload."""
    slots = (page.page_size - PAGE_HEADER_SIZE - FRAME_HEADER_SIZE) // FRAME_ALIGN + 1
    stored = np.ndarray(
        (slots,), "<u4", buffer=page.mm, offset=PAGE_HEADER_SIZE + _CHECKSUM_AT, strides=(FRAME_ALIGN,)
    )[(offsets - PAGE_HEADER_SIZE) // FRAME_ALIGN]
    view, crc32, ends = page.view, zlib.crc32, (offsets + lengths).tolist()
    for offset, end, checksum in zip(offsets.tolist(), ends, stored.tolist(), strict=True):
        if crc32(view[offset + FRAME_HEADER_SIZE : end]) != checksum:
            check_checksum(page.mm, offset, end - offset, checksum, page.path)  # raises, naming it


# -- rows: copying the selected frames out of a page ---------------------------------------------


def fill_rows(rows: Any, page: MappedPage, offsets: Any, journal: int) -> None:
    """Copy the frames at `offsets` (an array or a range) of a mapped page into the contiguous `rows`:
    per row, the payload's bytes in one piece, then the timestamp, the source and the journal."""
    count, size = len(offsets), rows.dtype.itemsize
    if not count:
        return
    frames = _frame_records(size - ROW_HEAD)
    populate(page, int(offsets[0]), int(offsets[-1]) + frames.itemsize)
    step = spacing(offsets)
    if step is not None:
        view = np.ndarray((count,), frames, buffer=page.mm, offset=int(offsets[0]), strides=(step,))
    else:
        slots = (page.page_size - PAGE_HEADER_SIZE - frames.itemsize) // FRAME_ALIGN + 1
        every = np.ndarray((slots,), frames, buffer=page.mm, offset=PAGE_HEADER_SIZE, strides=(FRAME_ALIGN,))
        where = (np.asarray(offsets) - PAGE_HEADER_SIZE) // FRAME_ALIGN
    as_bytes = rows.view(np.uint8).reshape(count, size)
    payloads, nanos, sources = _payloads(rows, frames), rows["nano"].view(np.int64), rows["source"]
    journals = as_bytes[:, 8:12].view("<u4")[:, 0]  # the journal (u2) and the 2 bytes of padding after it
    chunk = max(1, CHUNK_BYTES // size)
    for start in range(0, count, chunk):
        end = min(start + chunk, count)
        source = view[start:end] if step is not None else every[where[start:end]]
        payloads[start:end] = source["payload"]
        nanos[start:end] = source["nano"]
        sources[start:end] = source["source"]
        journals[start:end] = journal


@functools.lru_cache(maxsize=16)
def _frame_records(payload_size: int) -> Any:
    """A frame as numpy sees it: its timestamp, its source and its payload's bytes."""
    return np.dtype(
        {
            "names": ["nano", "source", "payload"],
            "formats": ["<i8", "<u4", np.dtype((np.void, payload_size)) if payload_size else ("u1", (0,))],
            "offsets": [8, 16, FRAME_HEADER_SIZE],
            "itemsize": FRAME_HEADER_SIZE + payload_size,
        }
    )


def _payloads(rows: Any, frames: Any) -> Any:
    """The payload bytes of the contiguous `rows`, one opaque value per row (as in `frames`): numpy
    copies an opaque value with one memcpy, a row of uint8 with a loop per row around it."""
    kind, size = frames.fields["payload"][0], rows.dtype.itemsize
    return np.ndarray((len(rows),), kind, buffer=rows, offset=ROW_HEAD, strides=(size,))


def populate(page: MappedPage, start: int, stop: int) -> None:
    """Map the bytes `start`..`stop` of a page (already in the page cache) in one call: a first read
    of a fresh mapping otherwise takes a fault per 16 pages of 4 KiB (the kernel's fault-around),
    about 7,000 for 440 MB. A no-op on a kernel without MADV_POPULATE_READ (before Linux 5.14)."""
    first = start - start % mmap.PAGESIZE
    try:
        page.mm.madvise(MADV_POPULATE_READ, first, min(stop, page.page_size) - first)
    except OSError:
        pass


def read_rows(name: str, index: PageIndex, journal: int, into: Any) -> None:
    """Map the page of `index` again and copy its selected frames into `into`."""
    page = MappedPage.open(index.path, name, index.page_no)
    try:
        fill_rows(into, page, index.offsets, journal)
    finally:
        page.release()


def journal_rows(query: Query, j: int) -> Iterator[Any]:
    """The selected rows of journal number `j` of the query, one array per page (constant memory)."""
    name, out = query.names[j], output_dtype(query.layout)
    for index in page_indexes(query, name):
        if len(index.offsets):
            rows = np.empty(len(index.offsets), out)
            read_rows(name, index, j, rows)
            yield rows


def merged_rows(query: Query) -> Iterator[Any]:
    """Rows of every journal of the query in Reader's merge order, a window at a time.

    A window holds every buffered row older than the watermark: the oldest of the journals' newest
    buffered timestamps. No row still unread can be older than it, nor tie with it from an earlier
    journal, so sorting each window (stably, rows in journal order) gives the global order.
    """
    streams = [journal_rows(query, j) for j in range(len(query.names))]
    if len(streams) == 1:
        yield from streams[0]
        return
    buffers: list[list[Any]] = [[] for _ in streams]
    live = set(range(len(streams)))
    while live or any(buffers):
        for j in sorted(live):
            if not buffers[j] and not _pull(streams[j], buffers[j]):
                live.discard(j)
        mark = min((int(buffers[j][-1]["nano"][-1].view("i8")) for j in live), default=None)
        window = [rows for buffer in buffers if (rows := _take_before(buffer, mark)) is not None]
        if window:
            rows = np.concatenate(window)
            yield rows[np.argsort(rows["nano"], kind="stable")]
            continue
        for j in sorted(live):  # every buffered row ties with the watermark: read further
            if int(buffers[j][-1]["nano"][-1].view("i8")) == mark and not _pull(streams[j], buffers[j]):
                live.discard(j)


def _pull(stream: Iterator[Any], buffer: list[Any]) -> bool:
    for rows in stream:
        buffer.append(rows)
        return True
    return False


def _take_before(buffer: list[Any], mark: int | None) -> Any:
    """Remove and return the rows of `buffer` older than `mark` (all of them if None)."""
    taken = []
    while buffer:
        rows = buffer[0]
        cut = len(rows) if mark is None else int(np.searchsorted(rows["nano"].view("i8"), mark, side="left"))
        if cut:
            taken.append(rows[:cut])
        if cut < len(rows):
            buffer[0] = rows[cut:]
            break
        buffer.pop(0)
    return np.concatenate(taken) if taken else None


def time_span(query: Query) -> tuple[int, int]:
    """The first and last timestamps the query can return, bounded by what is committed now (for a
    progress bar, and for an export's metadata); (0, 0) when the journals hold no frame."""
    firsts, lasts = [], []
    for j, name in enumerate(query.names):
        pages = list_pages(query.directory, name)
        first = page_header(page_path(query.directory, name, pages[0])).first_nano if pages else 0
        number = snapshot(query.directory, name)[0] if query.ends is None else query.ends[j][0]
        page = MappedPage.open(page_path(query.directory, name, number), name, number)
        try:
            last = page.tail()[1]
        finally:
            page.release()
        if first and last is not None:
            firsts.append(first)
            lasts.append(last.nano)
    if not firsts:
        return 0, 0
    return max(min(firsts), query.since), min(max(lasts), query.until)


def count_rows(query: Query) -> tuple[Query, int, int, int]:
    """The number of rows the query selects, and the first and last of their timestamps ((0, 0, 0)
    when none): of a `pinned` query, exactly the rows a later pass reads. One page at a time.

    Returned with the query that a later pass reads with (`Query.known`): the pages found evenly
    filled are kept as a range each (three integers) and not scanned again; a page with gaps is
    scanned again, since its offsets (8 bytes per frame) would make an export's memory grow."""
    frames, first, last = 0, NO_LIMIT, 0
    known = []
    for name in query.names:
        pages = []
        for index in page_indexes(replace(query, known=None), name):
            if len(index.nanos):
                frames += len(index.nanos)
                first, last = min(first, int(index.nanos[0])), max(last, int(index.nanos[-1]))
            kept = index.compact()
            pages.append(kept if isinstance(kept.offsets, range) else replace(kept, offsets=None))
        known.append(tuple(pages))
    found = replace(query, known=tuple(known)) if query.ends is not None else query
    return (found, frames, first, last) if frames else (found, 0, 0, 0)
