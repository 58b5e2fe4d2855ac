"""What the service reports about one journal, read from its files (read-only).

Rules:

* Whatever the files hold (a directory turned into a file or a symlink loop, a page that cannot be
  read), the report says so in its "error" field: nothing found on disk may raise out of here.
* One pass over many journals (a status, a monitor tick) lists each journal directory once
  (`one_listing`, `pages_of`): each journal's report and sample listed its directory three times,
  and hundreds of journals sharing a directory made a status O(journals^2) (300 journals: 2.6
  billion instructions a status, nine tenths of them listing). A pass sees one listing of each
  directory, taken at its first use; outside a pass every call lists afresh, as `list_pages` does.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

from .._errors import MmipcError
from ..journal._files import PAGE_SUFFIX, list_pages, page_path
from ..journal._page import MappedPage

_PAGE = re.compile(r"(.+)\.([0-9]{8})" + re.escape(PAGE_SUFFIX), re.DOTALL)  # list_pages' names, any journal
_pass = threading.local()  # `listed`: this thread's pass, directory -> journal name -> page numbers


@contextlib.contextmanager
def one_listing() -> Iterator[None]:
    """Within, on this thread, `pages_of` lists each directory once (nested: the outer pass's)."""
    if getattr(_pass, "listed", None) is not None:
        yield
        return
    _pass.listed = {}
    try:
        yield
    finally:
        _pass.listed = None


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
        page = MappedPage.open(page_path(directory, name, number), name, number)
        try:
            _, last = page.tail()
        finally:
            page.release()
        if last is not None:
            return last.nano
    return 0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
