"""A status pass reads each journal's last pages once: its row's last frame (`_status._last_nano`)
and its tail (`_lag.journal_tail`, for the monitor's figures) opened and read the same page each.
They share the one read within a pass (`_status.page_end`), with the same report as reads made
outside a pass. A real service home with journals of no page, one page, many pages with the writer
still on its last one, and a last page torn by a writer killed with -9 inside a frame. Page opens
are counted with an audit hook (`open`), on this thread only (the monitor's thread reads too)."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import Procs, wait_for
from mmipc import Reader, Service, Writer
from mmipc.journal._files import list_pages

PAGE = 64 * 1024
MOVING = ("last_frame_age_s", "free_bytes", "time_to_full_s", "frames_per_s", "bytes_per_s", "stalled_s")
_opened: Counter[str] = Counter()
_watching: list[int] = []


def _count_opens(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _watching and threading.get_ident() == _watching[0] and isinstance(args[0], str):
        if args[0].endswith(".journal"):
            _opened[args[0]] += 1


sys.addaudithook(_count_opens)  # cannot be removed: it counts only while `_watching` says so


def _still(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in MOVING} for row in rows]


def _rows_outside_a_pass(svc: Service) -> list[dict[str, Any]]:
    with svc._lock:
        snapshot = svc._snapshot()
    return _still([svc._journal_status(key, snapshot.writers.get(key)) for key in snapshot.journals])


def _torn(procs: Procs, jdir: str, home: str) -> None:
    """Journal 'torn': five frames, then a writer killed with -9 inside its sixth."""
    child = procs.spawn_code(
        "import time\n"
        "from mmipc import Writer\n"
        f"w = Writer.create({jdir!r}, 'torn', page_size={PAGE}, service={home!r})\n"
        "for i in range(5):\n"
        "    w.write(bytes(100))\n"
        "with w.frame(100) as buf:\n"
        "    buf[:50] = b'x' * 50\n"
        "    print('inside', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child.expect_line("inside")
    child.kill9()


def test_a_status_reads_each_last_page_once_with_the_same_report(tmp_path: Path, procs: Procs) -> None:
    home, jdir = str(tmp_path / "home"), str(tmp_path / "journals")
    with Service(home) as svc:
        with Writer.create(jdir, "one", page_size=PAGE, service=home) as one:
            for _ in range(3):
                one.write(bytes(100))
        many = Writer.create(jdir, "many", page_size=PAGE, service=home)
        for _ in range(200):  # about three pages and a half; the writer stays on its last
            many.write(bytes(1000))
        _torn(procs, jdir, home)
        with Reader.create("early", service=home) as reader:
            reader.add_journal(jdir, "none")  # known, no page yet
            assert len(list_pages(jdir, "many")) >= 4 and list_pages(jdir, "none") == []
            wait_for(lambda: svc.monitor.ticks >= 2, what="the monitor to sample the journals")

            def same() -> bool:
                _opened.clear()
                _watching[:] = [threading.get_ident()]
                try:
                    status = svc.status()
                finally:
                    _watching.clear()
                return _rows_outside_a_pass(svc) == _still(status["journals"]) == _rows_outside_a_pass(svc)

            wait_for(same, what="the status to equal the per-journal reads")
            twice = {os.path.basename(path): n for path, n in _opened.items() if n > 1}
            assert not twice, f"pages opened more than once in one status: {twice}"
            rows = {row["name"]: row for row in svc.status()["journals"]}
        assert rows["none"]["pages"] == 0 and rows["none"]["last_nano"] == 0
        assert rows["one"]["pages"] == 1 and rows["one"]["last_nano"] > 0
        assert rows["many"]["pages"] >= 4 and rows["many"]["last_nano"] > rows["one"]["last_nano"]
        assert rows["torn"]["next_seq"] == 5 and "error" not in rows["torn"]
        assert all(r["last_nano"] == 0 or r["last_frame_age_s"] is not None for r in rows.values())
        many.close()
