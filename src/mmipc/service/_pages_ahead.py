"""Background page preparation: create page N+1 while the writer fills page N.

The service calls `prepare` when a writer reports that it started page N. A worker thread creates
page N+1 exactly as the writer would (`create_page_ahead`: temporary name, `posix_fallocate`, header,
then `link`, so the two can race safely), unless page N is gone (a stale request: see
`create_page_ahead`), and then pre-faults it: a throwaway `MAP_POPULATE` mapping puts every page of
the file in the page cache, so the writer's first touch of each page is a cheap minor fault instead
of a page-cache allocation. At its page switch the writer finds the page ready and only maps it.
Failures (a full disk, an unexpected file at the page's path, anything) are logged, counted
for `status` and left to the writer, which then meets them itself; the thread always lives on.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import threading
from collections.abc import Callable

from .._errors import MmipcError
from ..journal._files import DEFAULT_MODE, create_page_ahead, page_path
from ..journal._page import open_page_file, read_header

log = logging.getLogger("mmipc.service")
Task = tuple[str, str, int, int, int, int]  # directory, name, page number, page size, file mode, flags


class PagePreparer:
    """Prepares pages on a worker thread; `wanted(directory, name)` says if a writer still wants them."""

    def __init__(self, wanted: Callable[[str, str], bool]) -> None:
        self._wanted = wanted
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._recent: set[Task] = set()
        self.prepared = 0
        self.stale = 0
        self.failures = 0
        self.last_error = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mmipc-pages", daemon=True)
        self._thread.start()

    def prepare(
        self,
        directory: str,
        name: str,
        page_no: int,
        page_size: int,
        mode: int = DEFAULT_MODE,
        flags: int = 0,
    ) -> None:
        task = (directory, name, page_no, page_size, mode, flags)
        if task not in self._recent:
            self._recent.add(task)
            self._tasks.put(task)

    def stop(self) -> None:
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                if not self._wanted(task[0], task[1]):
                    continue  # its writer has gone: do not create files in a journal nobody writes
                path = create_page_ahead(*task)
                if path is None:
                    self.stale += 1  # asked for long ago (a stopped service): retention removed it since
                    continue
                prefault(path)
                self.prepared += 1
            except Exception as exc:  # nothing a page file holds may end this thread
                self._failed(task, exc)
            finally:
                self._recent.discard(task)

    def _failed(self, task: Task, exc: Exception) -> None:
        self.failures += 1
        what = "" if isinstance(exc, (MmipcError, OSError)) else f" ({type(exc).__name__})"
        self.last_error = f"could not prepare {page_path(*task[:3])}: {exc}{what}"
        log.warning("%s", self.last_error)


def prefault(path: str) -> None:
    """Bring every page of the file into the page cache (the mmap call releases the GIL). The file
    must be a page (no link, a valid header); its own size counts, since a page made before may
    differ from the size the writer announces now."""
    fd = open_page_file(path)  # never blocks on a FIFO planted at the page's path
    try:
        size = read_header(fd, path)[1]
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ):
            pass
    finally:
        os.close(fd)
