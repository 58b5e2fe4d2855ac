"""Pages made ahead by the service never resurrect a page that retention removed.

A service that was stopped while its writer went on reads the writer's old `page` reports when it
resumes. If retention removed those pages in the meantime, making page N+1 again for a report of page
N would leave an empty, never-finished page behind the journal's head: a hole that no reader crosses
and that retention never removes (the torture harness found it, seed 3644570239).
"""

from __future__ import annotations

import os
import time
from typing import Any

import mmipc
from conftest import ServiceProcess, wait_for
from mmipc.journal._files import list_pages, page_path
from mmipc.service._retention import Policy, prune
from mmipc.tools import check_journal

PAGE = 64 * 1024


def _status() -> dict[str, Any]:
    return mmipc.service_status()["service"]  # type: ignore[no-any-return]


def test_a_stale_page_report_does_not_recreate_a_removed_page(jdir: str, service: ServiceProcess) -> None:
    writer = mmipc.Writer.create(jdir, "md", page_size=PAGE)
    try:
        while len(list_pages(jdir, "md")) < 8:
            writer.write(b"x" * 1000, 1)
        head = max(list_pages(jdir, "md"))  # the writer's page (or one made ahead): never removed
        _, removed = prune(service.home, jdir, "md", Policy(max_pages=2), time.time_ns())
        assert removed, "retention removed nothing"
        assert not os.path.exists(page_path(jdir, "md", 2)), list_pages(jdir, "md")
        before = _status()
        # The writer's report of page 1 (the real message), as a service stopped since then reads it.
        stale = writer._page_fields(1)  # noqa: SLF001
        writer._link.notify("page", **stale)  # type: ignore[union-attr]  # noqa: SLF001
        ghost = page_path(jdir, "md", 2)

        def handled() -> bool:  # dropped as stale, or (the defect) made again
            return bool(_status()["pages_stale"] > before["pages_stale"] or os.path.exists(ghost))

        wait_for(handled, what="the service to handle the report")
        assert not os.path.exists(ghost), "page 2 was made again after retention removed it"
        remaining = list_pages(jdir, "md")
        assert remaining == list(range(remaining[0], remaining[-1] + 1)), remaining
        assert head in remaining
    finally:
        writer.close()
    assert check_journal(jdir, "md").ok
