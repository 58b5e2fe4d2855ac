"""When to prepare a writer's next page: at once for a busy journal, at half of the page for a quiet one.

Rules:

* A prepared page is allocated in full (`posix_fallocate`), so preparing page N+1 as soon as page N
  starts doubles the disk footprint of every idle journal (two full pages).
* A journal is busy when its previous page was created less than BUSY_PAGE_SECONDS before the
  writer started the current one: then page N+1 is prepared at once, as before, and the page switch
  stays cheap.
* A journal whose previous page cannot be read (removed by retention, damaged) has no history:
  its next page is prepared at once, as before.
* Otherwise (the journal's first page, or a quiet journal) the preparation waits until the current
  page is half full, which the monitor checks every SAMPLE_INTERVAL through one slot of the page's
  time index (slot INDEX_SLOTS/2 is filled once a frame starts past the page's middle). A quiet
  journal needs far longer than that interval to fill its second half; one that suddenly turns busy
  may reach its end first, and then its writer creates the page itself, as without a service.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from ..journal._files import page_path
from ..journal._layout import INDEX_OFFSET, INDEX_SLOT, INDEX_SLOTS
from ..journal._page import page_header
from ._pages_ahead import PagePreparer

BUSY_PAGE_SECONDS = 60.0
HALF_SLOT_OFFSET = INDEX_OFFSET + 4 * (INDEX_SLOTS // 2)

Waiting = tuple[str, str, int, int]


class LazyAhead:
    """Decides when `preparer` prepares each writer's next page."""

    def __init__(self, preparer: PagePreparer) -> None:
        self._preparer = preparer
        self._waiting: dict[tuple[str, str], tuple[Waiting, dict[str, Any]]] = {}
        self._guard = threading.Lock()

    def started(self, directory: str, name: str, page_no: int, page_size: int, **extra: Any) -> None:
        """The writer of `name` started page `page_no`: prepare the next one now or at half."""
        task = (directory, name, page_no, page_size)
        if page_no > 0 and _busy(directory, name, page_no):
            with self._guard:
                self._waiting.pop((directory, name), None)
            self._preparer.prepare(directory, name, page_no + 1, page_size, **extra)
            return
        with self._guard:
            self._waiting[(directory, name)] = (task, extra)

    def check(self) -> None:
        """Prepare the next page of every waiting journal whose current page is half full (monitor)."""
        with self._guard:
            waiting = list(self._waiting.items())
        for key, ((directory, name, page_no, page_size), extra) in waiting:
            if _half_full(page_path(directory, name, page_no)):
                with self._guard:
                    if self._waiting.get(key, (None,))[0] == (directory, name, page_no, page_size):
                        del self._waiting[key]
                self._preparer.prepare(directory, name, page_no + 1, page_size, **extra)

    def forget(self, directory: str, name: str) -> None:
        with self._guard:
            self._waiting.pop((directory, name), None)


def _busy(directory: str, name: str, page_no: int) -> bool:
    try:
        created = page_header(page_path(directory, name, page_no - 1)).created_nano
    except Exception:  # the previous page is gone or unreadable: no history, so prepare at once as before
        return True
    return time.time_ns() - created < BUSY_PAGE_SECONDS * 1e9


def _half_full(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        data = os.pread(fd, INDEX_SLOT.size, HALF_SLOT_OFFSET)
    finally:
        os.close(fd)
    return len(data) == INDEX_SLOT.size and INDEX_SLOT.unpack(data)[0] != 0
