"""What the service measures: a journal's tail and rates, and how far each reader is behind it.

Rules:

* Everything here reads page files read-only and may find anything on disk: a journal it cannot
  read gives None or an "error" field, never an exception out of `Monitor`.
* A journal's position in bytes is ``page_no * page_size + offset``; rates are differences of
  positions sampled every SAMPLE_INTERVAL, over the last RATE_WINDOW seconds.
* Sequence numbers (format v2: bytes 120..127 of the page header hold the page's `first_seq`, bytes
  24..27 of a frame header the low 32 bits of its seq) give exact frame counts. On a version-1 page
  there are none: frames are counted by walking, at most WALK_CAP frames per sample, and the lag is
  given in nanoseconds and bytes only.
* A reader's lag in ns is the newest frame's timestamp minus that of the last frame it read (of the
  next one, if it read none yet). Lag is never negative: a position published a moment before the
  journal's tail was read, or after, is clamped to zero; a reader at the tail has no lag and is not
  stalled.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any, NamedTuple

from ..journal._files import page_path
from ..journal._layout import FIRST_SEQ_OFFSET, PAGE_HEADER_SIZE, SEQ_FIELD, MsgType, full_seq
from ..journal._metrics import Published
from ..journal._page import MappedPage
from ._status import PageEnd, page_end, pages_of

SAMPLE_INTERVAL = 1.0
RATE_WINDOW = 5.0
WALK_CAP = 20_000


class Tail(NamedTuple):
    """Just past the last committed frame of a journal."""

    page_no: int
    end: int
    page_size: int
    last_nano: int
    next_seq: int  # the seq the next frame will get; -1 on a version-1 page

    @property
    def position(self) -> int:
        return self.page_no * self.page_size + self.end


def _open(directory: str, name: str, page_no: int) -> MappedPage | None:
    try:
        return MappedPage.open(page_path(directory, name, page_no), name, page_no)
    except FileNotFoundError:
        return None


def seq_at(page: MappedPage, offset: int) -> int:
    """The full seq of the frame at `offset` (or of the next frame, at the tail); -1 on a v1 page."""
    if page.header.version < 2:
        return -1
    frame = page.frame(offset)
    if frame is None or frame.msg_type == MsgType.PAGE_END:
        return -2  # the next frame's seq is the count so far: the caller finds it
    return full_seq(live_first_seq(page), frame.seq)


def live_first_seq(page: MappedPage) -> int:
    """The page's first_seq as stored now (the writer may store it after this page was opened)."""
    return int(SEQ_FIELD.unpack_from(page.mm, FIRST_SEQ_OFFSET)[0])


def journal_tail(directory: str, name: str) -> Tail | None:
    """The journal's tail, or None if it has no page yet (or its last page vanished meanwhile).

    An empty last page is the current one if the page before it ended (its end marker is written),
    else it was only prepared ahead and the tail is in the page before it.
    """
    pages = pages_of(directory, name)  # one listing of the directory per status or tick
    if not pages:
        return None
    tail = _page_tail(directory, name, pages[-1])
    if tail is None or tail[1] is not None or len(pages) < 2 or pages[-2] != pages[-1] - 1:
        return tail[0] if tail is not None else None
    before = _page_tail(directory, name, pages[-2])
    if before is None or before[1] is None or before[1] == MsgType.PAGE_END:
        nano = before[0].last_nano if before is not None else 0
        return tail[0]._replace(last_nano=nano)
    return before[0]


def _page_tail(directory: str, name: str, page_no: int) -> tuple[Tail, int | None] | None:
    """The tail within one page and the type of its last frame (None if it has none); from the
    status pass's read of the page (`page_end`), which the journal's report shares."""
    read = page_end(directory, name, page_no)
    if read is None:
        return None
    last = read.last
    if last is None:
        return Tail(page_no, read.end, read.page_size, 0, _end_seq(read)), None
    if last.msg_type == MsgType.PAGE_END:
        return Tail(page_no, last.offset, read.page_size, last.nano, -1), last.msg_type
    return Tail(page_no, read.end, read.page_size, last.nano, _end_seq(read)), last.msg_type


def _end_seq(read: PageEnd) -> int:
    """The seq the page's next frame gets ; -1 on a v1 page."""
    if read.version < 2:
        return -1
    if read.last is None:
        return read.first_seq
    return full_seq(read.first_seq, read.last.seq) + 1


def reader_lag(directory: str, name: str, at: Published, tail: Tail | None) -> dict[str, Any]:
    """A reader's lag behind `tail`: frames (None without seqs), ns and bytes, all >= 0."""
    if tail is None or at.page_no < 0:
        return {"lag_frames": 0 if tail is None else None, "lag_ns": 0, "lag_bytes": 0}
    lag_bytes = _bytes_between(directory, name, at, tail)
    if lag_bytes == 0:
        return {"lag_frames": 0, "lag_ns": 0, "lag_bytes": 0}
    return {
        "lag_frames": _frames_between(directory, name, at, tail),
        "lag_ns": max(0, tail.last_nano - (at.nano or _next_nano(directory, name, at))),
        "lag_bytes": lag_bytes,
    }


def _next_nano(directory: str, name: str, at: Published) -> int:
    """The timestamp of the reader's next frame (for a reader that has read none yet)."""
    page = _open(directory, name, at.page_no)
    if page is None:
        return 0
    try:
        frame = page.frame(at.offset)
        return frame.nano if frame is not None else 0
    finally:
        page.release()


def _bytes_between(directory: str, name: str, at: Published, tail: Tail) -> int:
    if at.page_no > tail.page_no or (at.page_no == tail.page_no and at.offset >= tail.end):
        return 0
    if at.page_no == tail.page_no:
        return tail.end - at.offset
    page = _open(directory, name, at.page_no)
    used = page.tail()[0] if page is not None else at.offset
    if page is not None:
        page.release()
    between = (tail.page_no - at.page_no - 1) * (tail.page_size - PAGE_HEADER_SIZE)
    return max(0, used - at.offset) + between + (tail.end - PAGE_HEADER_SIZE)


def _frames_between(directory: str, name: str, at: Published, tail: Tail) -> int | None:
    if tail.next_seq < 0:
        return None
    page = _open(directory, name, at.page_no)
    if page is None:
        return None
    try:
        seq = seq_at(page, at.offset)
    finally:
        page.release()
    if seq == -2:  # at an end marker: the next page's first frame is next
        following = _open(directory, name, at.page_no + 1)
        if following is None:
            return None
        try:
            seq = live_first_seq(following) if following.header.version >= 2 else -1
        finally:
            following.release()
    return None if seq < 0 else max(0, tail.next_seq - seq)


class Rates:
    """Frames/s and bytes/s of one journal from its recent tails."""

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, Tail, int]] = collections.deque()

    def add(self, now: float, tail: Tail, frames: int) -> None:
        self.samples.append((now, tail, frames))
        while self.samples and now - self.samples[0][0] > RATE_WINDOW + SAMPLE_INTERVAL / 2:
            self.samples.popleft()

    def rates(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return 0.0, 0.0
        (t0, tail0, f0), (t1, tail1, f1) = self.samples[0], self.samples[-1]
        span = max(t1 - t0, 1e-9)
        return max(0, f1 - f0) / span, max(0, tail1.position - tail0.position) / span


def count_frames(directory: str, name: str, start: Tail, end: Tail) -> int:
    """Data frames from `start` to `end` (exact with seqs; else walked, extrapolated past WALK_CAP)."""
    if start.next_seq >= 0 and end.next_seq >= 0:
        return max(0, end.next_seq - start.next_seq)
    walked = size = 0
    page_no, offset = start.page_no, start.end
    while (page_no, offset) < (end.page_no, end.end) and walked < WALK_CAP:
        page = _open(directory, name, page_no)
        if page is None:
            break
        try:
            for frame in page.frames(offset):
                if frame.msg_type == MsgType.PAGE_END or (page_no == end.page_no and frame.offset >= end.end):
                    break
                walked += 1
                size += frame.end - frame.offset
                if walked >= WALK_CAP:
                    break
        finally:
            page.release()
        page_no, offset = page_no + 1, PAGE_HEADER_SIZE
    if walked >= WALK_CAP and size:
        return int(walked * max(1, end.position - start.position) / size)
    return walked


def disk_usage(directory: str, name: str) -> tuple[int, int]:
    """(bytes allocated on disk, bytes free for unprivileged users) of a journal's pages."""
    used = 0
    for page_no in pages_of(directory, name):
        try:
            used += os.stat(page_path(directory, name, page_no)).st_blocks * 512
        except OSError:
            pass
    try:
        vfs = os.statvfs(directory)
        free = vfs.f_bavail * vfs.f_frsize
    except OSError:
        free = 0
    return used, free


def now_ns() -> int:
    return time.time_ns()
