"""A retention pass lists each journal directory once (`one_listing`), not once or twice per
journal: hundreds of journals in one directory made each pass O(journals^2). The pass still never
removes a page a reader holds: a real service home, real writers, a durable reader's cursor file
holding page 0 of some journals, a live reader standing on page 1 of another, and the policy of
keeping one page. The listings are counted with an audit hook (`os.listdir`), on this thread only
(the service's own monitor thread lists too)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from conftest import wait_for
from mmipc import Reader, Service, Writer
from mmipc.journal._files import list_pages
from mmipc.service._monitor import Monitor
from mmipc.service._retention import Policy, holds, plan

PAGE = 64 * 1024
PER_PAGE = (PAGE - 4096 - 32) // 1032
JOURNALS = [f"j{i}" for i in range(24)]
_listed: list[str] = []
_watching: list[int] = []  # the thread whose listings count


def _count_listings(event: str, args: tuple[object, ...]) -> None:
    if event == "os.listdir" and _watching and threading.get_ident() == _watching[0]:
        _listed.append(os.fsdecode(args[0]) if isinstance(args[0], str | bytes) else str(args[0]))


sys.addaudithook(_count_listings)  # cannot be removed: it counts only while `_watching` says so


def test_a_retention_pass_lists_the_directory_once_and_keeps_held_pages(tmp_path: Path) -> None:
    home, jdir = str(tmp_path / "home"), str(tmp_path / "journals")
    with Service(home):
        writers = [Writer.create(jdir, name, page_size=PAGE, service=home) for name in JOURNALS]
        for writer in writers:
            for _ in range(PER_PAGE * 3 + 2):  # into page 3: pages 0..2 finished
                writer.write(bytes(1000))
        with Reader.create("durable", service=home, durable=True) as durable:
            for name in JOURNALS[:3]:
                durable.add_journal(jdir, name)
            durable.read()  # commits page 0 of j0..j2 at close
        live = Reader.create("live", service=home)
        live.add_journal(jdir, JOURNALS[3])
        for _ in range(PER_PAGE + 2):  # onto page 1 of j3
            assert live.read() is not None
        wait_for(
            lambda: [h["page_no"] for h in holds(home, jdir, JOURNALS[3])] == [1], what="j3's page 1 held"
        )
        monitor = Monitor(home, lambda: [(jdir, name) for name in JOURNALS], Policy(max_pages=1))
        _listed.clear()
        _watching[:] = [threading.get_ident()]
        try:
            monitor.retain_all()
        finally:
            _watching.clear()
        assert _listed.count(jdir) <= 1, f"{_listed.count(jdir)} listings in one pass"
        listings = {kind: _listed.count(os.path.join(home, kind)) for kind in ("cursors", "readers")}
        # the pass's one listing of each, and apply's fresh one before it removes each page
        assert listings == {"cursors": 1 + monitor.pages_removed, "readers": 1 + monitor.pages_removed}
        _listed.clear()
        _watching[:] = [threading.get_ident()]
        try:
            monitor.retain_all()  # nothing left to remove
        finally:
            _watching.clear()
        listings = {kind: _listed.count(os.path.join(home, kind)) for kind in ("cursors", "readers")}
        assert listings == {"cursors": 1, "readers": 1}, "one listing of each per pass"
        for name in JOURNALS[:3]:
            assert list_pages(jdir, name)[0] == 0, f"{name}: page 0 is held by the durable reader"
        assert list_pages(jdir, JOURNALS[3])[0] == 1, "j3: the live reader holds page 1"
        for name in JOURNALS[4:]:
            assert list_pages(jdir, name)[0] == 3, f"{name}: every finished page goes"
            assert plan(home, jdir, name, Policy(max_pages=1), 0).remove == []  # the pass did it all
        live.close()
        for writer in writers:
            writer.close()
