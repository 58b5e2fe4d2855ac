"""What the service reports about one journal, read from its files (read-only).

Rules:

* Whatever the files hold (a directory turned into a file or a symlink loop, a page that cannot be
  read), the report says so in its "error" field: nothing found on disk may raise out of here.
* One pass over many journals (a status, a monitor tick) lists each journal directory once
  (`one_listing`, `pages_of`): each journal's report and sample listed its directory three times,
  and hundreds of journals sharing a directory made a status O(journals^2) (300 journals: 2.6
  billion instructions a status, nine tenths of them listing). A pass sees one listing of each
  directory, taken at its first use; outside a pass every call lists afresh, as `list_pages` does.
* Within a pass retention reads its readers' holds once too (`pass_memo`, `_retention.holds`).
* Within a pass each page's end is read once too (`page_end`): a journal's report (its last frame's
  time) and its tail (`_lag.journal_tail`, for the monitor's figures) each opened and read the
  journal's last page, and the one before it when the last is empty. An error reading it is
  remembered with it and raised to each caller, as each read raised it before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from .._errors import MmipcError
from ..journal._files import PAGE_SUFFIX, list_pages, page_path
from ..journal._layout import FIRST_SEQ_OFFSET, SEQ_FIELD, FrameInfo
from ..journal._page import MappedPage

_PAGE = re.compile(r"(.+)\.([0-9]{8})" + re.escape(PAGE_SUFFIX), re.DOTALL)  # list_pages' names, any journal
_pass = threading.local()  # this thread's pass: `listed` (directory -> journal -> page numbers), `ends`
_ReadError = (MmipcError, OSError, ValueError)  # what reading a page may raise: kept for the pass


@contextlib.contextmanager
def one_listing() -> Iterator[None]:
    """Within, on this thread, `pages_of` lists each directory once (nested: the outer pass's)."""
    if getattr(_pass, "listed", None) is not None:
        yield
        return
    _pass.listed, _pass.ends, _pass.memo = {}, {}, {}
    try:
        yield
    finally:
        _pass.listed = _pass.ends = _pass.memo = None


def pass_memo() -> dict[Any, Any] | None:
    """This thread's pass's memo (within `one_listing`), for what else a pass reads once; None
    outside a pass."""
    memo: dict[Any, Any] | None = getattr(_pass, "memo", None)
    return memo


def pages_of(directory: str, name: str) -> list[int]:
    """`list_pages(directory, name)`, from this pass's listing of `directory` within `one_listing`.
    A directory that cannot be listed is not remembered: `list_pages` says why, for each journal."""
    listed: dict[str, dict[str, list[int]]] | None = getattr(_pass, "listed", None)
    if listed is None:
        return list_pages(directory, name)
    journals = listed.get(directory)
    if journals is None:
        try:
            journals = listed[directory] = _pages_by_journal(os.listdir(directory))
        except OSError:
            return list_pages(directory, name)
    return list(journals.get(name, ()))


def _pages_by_journal(entries: list[str]) -> dict[str, list[int]]:
    """Each journal's page numbers, ascending, among a directory's `entries`: the name is all
    before the fixed ``.NNNNNNNN.journal``, so an entry is any journal's exactly if it is this one's."""
    journals: dict[str, list[int]] = {}
    for entry in entries:
        match = _PAGE.fullmatch(entry)
        if match:
            journals.setdefault(match.group(1), []).append(int(match.group(2)))
    for pages in journals.values():
        pages.sort()
    return journals


class PageEnd(NamedTuple):
    """A page's end as one read found it: just past its last committed frame, that frame (None on
    an empty page), and what a tail needs of the page (`first_seq` as stored at that read: the
    writer may store it after the page was made)."""

    end: int
    last: FrameInfo | None
    page_size: int
    version: int
    first_seq: int


def page_end(directory: str, name: str, page_no: int) -> PageEnd | None:
    """Page `page_no`'s end, None if the page is not there; within `one_listing`, this pass's read."""
    ends: dict[tuple[str, str, int], PageEnd | None | Exception] | None = getattr(_pass, "ends", None)
    if ends is None:
        return _read_end(directory, name, page_no)
    key = (directory, name, page_no)
    if key not in ends:
        try:
            ends[key] = _read_end(directory, name, page_no)
        except _ReadError as exc:
            ends[key] = exc
    found = ends[key]
    if isinstance(found, Exception):
        raise found
    return found


def _read_end(directory: str, name: str, page_no: int) -> PageEnd | None:
    try:
        page = MappedPage.open(page_path(directory, name, page_no), name, page_no)
    except FileNotFoundError:
        return None
    try:
        end, last = page.tail()
        first_seq = int(SEQ_FIELD.unpack_from(page.mm, FIRST_SEQ_OFFSET)[0])
        return PageEnd(end, last, page.page_size, page.header.version, first_seq)
    finally:
        page.release()


def journal_status(directory: str, name: str) -> dict[str, Any]:
    """Pages on disk, bytes, and the last frame's timestamp (0 if none) of a journal."""
    info: dict[str, Any] = {"directory": directory, "name": name, "pages": 0, "bytes": 0, "last_nano": 0}
    try:
        pages = pages_of(directory, name)
        info["pages"] = len(pages)
        info["bytes"] = sum(_size(page_path(directory, name, no)) for no in pages)
        info["last_nano"] = _last_nano(directory, name, pages)
    except (MmipcError, OSError, ValueError) as exc:
        info["error"] = str(exc)
    return info


def _last_nano(directory: str, name: str, pages: list[int]) -> int:
    """The last frame's timestamp in the last two pages (the last one may be empty); 0 if none."""
    for number in reversed(pages[-2:]):
        read = page_end(directory, name, number)
        if read is None:  # removed since the listing: as when it was opened here, an error
            path = page_path(directory, name, number)
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if read.last is not None:
            return read.last.nano
    return 0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
