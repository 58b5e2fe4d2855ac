"""Looking inside journals: listing, summarising, verifying. The `mmipc ls/inspect/check/tail`
commands are thin wrappers over these functions.

Everything here only reads. Long walks take a `progress(done, total)` callback, with sizes in bytes
of page files walked, so a caller can show a progress bar.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .._errors import CorruptJournalError, MmipcError
from ..journal._files import PAGE_SUFFIX, list_pages, page_path
from ..journal._layout import INDEX_OFFSET, PAGE_HEADER_SIZE, FrameInfo, MsgType, PageHeader, index_stride
from ..journal._page import MappedPage
from ..journal._schema import load_schemas

Progress = Callable[[int, int], None]
_PAGE_FILE = re.compile(r"(.+)\.([0-9]{8})" + re.escape(PAGE_SUFFIX))


def list_journals(directory: str) -> list[str]:
    """The names of the journals with at least one page in `directory`, sorted."""
    try:
        entries = os.listdir(directory)
    except OSError as exc:
        raise MmipcError(f"cannot list {directory}: {exc.strerror}") from exc
    return sorted({m.group(1) for e in entries if (m := _PAGE_FILE.fullmatch(e)) and not e.startswith(".")})


def _file_size(path: str) -> int:
    """The size of a page file for progress counts, without following a link; 0 if it is gone (the
    page itself is then opened, and refused, with a clear error)."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class Summary:
    name: str
    pages: int
    bytes: int
    frames: int
    first_nano: int
    last_nano: int


def page_frames(page: MappedPage) -> Iterator[FrameInfo]:
    """Every committed data frame of a mapped page (the end-of-page marker left out)."""
    return (f for f in page.frames() if f.msg_type != MsgType.PAGE_END)


def open_page(directory: str, name: str, number: int) -> MappedPage:
    return MappedPage.open(page_path(directory, name, number), name, number)


def summarize(directory: str, name: str, progress: Progress | None = None) -> Summary:
    """Pages, bytes, frame count and first and last timestamps of a journal (walks every frame)."""
    pages = list_pages(directory, name)
    sizes = [_file_size(page_path(directory, name, n)) for n in pages]
    total = sum(sizes)
    frames = first = last = done = 0
    for number, size in zip(pages, sizes, strict=True):
        page = open_page(directory, name, number)
        try:
            for info in page_frames(page):
                frames += 1
                first = first or info.nano
                last = info.nano
        finally:
            page.release()
        done += size
        if progress:
            progress(done, total)
    return Summary(name, len(pages), total, frames, first, last)


def last_written_page(directory: str, name: str) -> int | None:
    """The last page holding a frame; pages after it are empty (prepared ahead of the writer)."""
    pages = list_pages(directory, name)
    for number in reversed(pages):
        page = open_page(directory, name, number)
        try:
            if page.frame(PAGE_HEADER_SIZE) is not None:
                return number
        finally:
            page.release()
    return pages[0] if pages else None


def nth_last_nano(directory: str, name: str, n: int) -> int | None:
    """The timestamp of the n-th frame from the end (the first if there are fewer); None if empty."""
    kept: list[int] = []
    for number in reversed(list_pages(directory, name)):
        page = open_page(directory, name, number)
        try:
            kept = [f.nano for f in page_frames(page)] + kept
        finally:
            page.release()
        if len(kept) >= n:
            break
    return kept[-n] if len(kept) >= n else (kept[0] if kept else None)


@dataclass(frozen=True)
class Problem:
    path: str
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.path} at offset {self.offset}: {self.what}"


@dataclass(frozen=True)
class CheckResult:
    pages: int
    frames: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_journal(directory: str, name: str, progress: Progress | None = None) -> CheckResult:
    """Verify a journal end to end; stop at the first problem.

    Checked: page numbering without gaps, every page header (magic, version, sizes, number, name, file
    length), every frame's lengths and room, timestamps never decreasing across the whole journal,
    every page before the last written one ending with an end-of-page marker (pages after it, made
    ahead of the writer, must be empty), first and last timestamps in the headers, and every
    time-index slot pointing at the right frame, on pages with checksums (format v2) every payload's
    CRC-32, and the schema file if there is one. Not checkable: a flipped bit in a frame's `msg_type`
    or `source`, or in a payload on a page without checksums.
    """
    pages = list_pages(directory, name)
    if not pages:
        return CheckResult(0, 0, Problem(page_path(directory, name, 0), 0, "the journal has no pages"))
    state = _CheckState(directory, name)
    total = sum(_file_size(page_path(directory, name, n)) for n in pages)
    current = _last_written_or_before_broken(directory, name, pages)
    for i, number in enumerate(pages):
        if i and number != pages[i - 1] + 1:
            missing = page_path(directory, name, pages[i - 1] + 1)
            return state.result(Problem(missing, 0, f"page {pages[i - 1] + 1} is missing"))
        problem = state.check_page(number, last=current is None or number >= current)
        if problem is not None:
            return state.result(problem)
        if progress:
            progress(state.bytes, total)
    return state.result(_schema_problem(directory, name))


def _schema_problem(directory: str, name: str) -> Problem | None:
    """What is wrong with the journal's schema file, if it has one: tools that decode payloads stop on it."""
    try:
        load_schemas(directory, name)
    except CorruptJournalError as exc:
        return Problem(exc.path, exc.offset, exc.problem)
    return None


def _last_written_or_before_broken(directory: str, name: str, pages: list[int]) -> int | None:
    """`last_written_page`, except that a page that cannot be read ends the search at the page before
    it: the walk in page order then reports that page, with the count of what was checked before it."""
    for number in reversed(pages):
        try:
            page = open_page(directory, name, number)
        except CorruptJournalError:
            return number - 1 if number > pages[0] else None
        try:
            if page.frame(PAGE_HEADER_SIZE) is not None:
                return number
        except CorruptJournalError:
            return number - 1 if number > pages[0] else None
        finally:
            page.release()
    return pages[0]


class _CheckState:
    def __init__(self, directory: str, name: str) -> None:
        self.directory, self.name = directory, name
        self.pages = self.frames = self.bytes = self.last_nano = 0
        self.ended_previous = True

    def result(self, problem: Problem | None) -> CheckResult:
        return CheckResult(self.pages, self.frames, problem)

    def check_page(self, number: int, last: bool) -> Problem | None:
        path = page_path(self.directory, self.name, number)
        try:
            page = open_page(self.directory, self.name, number)
        except CorruptJournalError as exc:
            return Problem(exc.path, exc.offset, exc.problem)
        try:
            problem = self._walk(page, path, last)
        except CorruptJournalError as exc:
            problem = Problem(exc.path, exc.offset, exc.problem)
        finally:
            self.bytes += page.page_size
            page.release()
        self.pages += problem is None  # "checked N pages before it" counts whole pages only
        return problem

    def _walk(self, page: MappedPage, path: str, last: bool) -> Problem | None:
        starts: list[FrameInfo] = []
        marker = None
        for info in page.frames():
            if info.msg_type == MsgType.PAGE_END:
                marker = info
                break
            if info.nano < self.last_nano:
                return Problem(
                    path,
                    info.offset,
                    f"timestamp {info.nano} is older than the one before ({self.last_nano})",
                )
            self.last_nano = info.nano
            starts.append(info)
            self.frames += 1  # counted as it passes: a problem later in the page reports it
        if marker is None and not last:
            end = starts[-1].end if starts else PAGE_HEADER_SIZE
            return Problem(path, end, "the page ends without its end-of-page marker, but a later page exists")
        return _check_header(page.header, path, starts, marker) or _check_index(page, path, starts, last)


def _check_header(
    header: PageHeader, path: str, starts: list[FrameInfo], marker: FrameInfo | None
) -> Problem | None:
    if starts and header.first_nano != starts[0].nano:
        return Problem(path, 32, f"first_nano {header.first_nano} is not the first frame's {starts[0].nano}")
    if marker is not None and header.last_nano != marker.nano:
        return Problem(path, 40, f"last_nano {header.last_nano} is not the marker's {marker.nano}")
    return None


def _check_index(page: MappedPage, path: str, starts: list[FrameInfo], last: bool) -> Problem | None:
    stride = index_stride(page.page_size)
    offsets = [f.offset for f in starts]
    position = 0
    for k, slot in enumerate(page.filled_slots()):
        boundary = PAGE_HEADER_SIZE + k * stride
        while position < len(offsets) and offsets[position] < boundary:
            position += 1
        if position >= len(offsets):
            if last:
                return None  # a live writer sets the slot of the frame it is writing before its commit
            return Problem(path, INDEX_OFFSET + 4 * k, f"time index slot {k} points past the last frame")
        if slot != offsets[position]:
            return Problem(
                path, INDEX_OFFSET + 4 * k, f"time index slot {k} holds {slot}, not {offsets[position]}"
            )
    return None
