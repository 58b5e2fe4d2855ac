"""The service's status lists each journal directory once per pass (one_listing), not three times
per journal: the same report as the per-journal reads made outside a pass, which list afresh every
time. A real in-process service on a real home: journals sharing directories, names that are
prefixes of each other or contain dots and digits, several pages, a live lagging reader, and a
journal whose directory is gone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from conftest import wait_for
from mmipc import Reader, Service, Writer
from mmipc.service._status import journal_status

NAMES = ["j", "j1", "j10", "j.1", "j.00000001", "a-b_c", "j1.journal", *[f"n{i}" for i in range(30)]]
MOVING = ("last_frame_age_s", "free_bytes", "time_to_full_s", "frames_per_s", "bytes_per_s", "stalled_s")


def _still(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without the figures that move with the clock or the free space."""
    return [{k: v for k, v in row.items() if k not in MOVING} for row in rows]


def _journal_rows(svc: Service) -> list[dict[str, Any]]:
    """Each journal's row as the status makes it, read outside any pass (a listing per read)."""
    with svc._lock:
        snapshot = svc._snapshot()
    return _still([svc._journal_status(key, snapshot.writers.get(key)) for key in snapshot.journals])


def _reader_rows(svc: Service) -> list[dict[str, Any]]:
    with svc._lock:
        live = svc._snapshot().live
    return [{**r, "journals": _still(r["journals"])} for r in svc.monitor.readers(live)]


def _status_rows(svc: Service) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    status = svc.status()
    readers = [{**r, "journals": _still(r["lag"])} for r in status["readers"]]
    for r in readers:
        del r["lag"]
    return _still(status["journals"]), readers


def test_the_status_of_many_journals_is_the_same_with_one_listing_per_directory(tmp_path: Path) -> None:
    home, first, second = str(tmp_path / "home"), str(tmp_path / "first"), str(tmp_path / "second")
    with Service(home) as svc:
        for i, name in enumerate(NAMES):
            directory = first if i % 4 else second
            with Writer.create(directory, name, page_size=64 * 1024, service=home) as writer:
                for k in range(1 + 250 * (i % 3)):  # up to three pages
                    writer.write(b"%d" % k + bytes(200))
        with Writer.create(str(tmp_path / "gone"), "g", service=home) as writer:
            writer.write(b"x")
        shutil.rmtree(tmp_path / "gone")  # known, its directory removed: an error row
        with Reader.create("lagging", service=home) as reader:
            for name in NAMES[:6]:
                reader.add_journal(first if NAMES.index(name) % 4 else second, name)
            reader.read()

            def same() -> bool:
                before = _journal_rows(svc), _reader_rows(svc)
                now = _status_rows(svc)
                return before == now == (_journal_rows(svc), _reader_rows(svc))  # and nothing moved

            wait_for(same, what="the status to equal the per-journal reads")
        rows = _status_rows(svc)[0]
        assert len(rows) == len(NAMES) + 1
        assert {r["name"] for r in rows if r.get("pages", 0) >= 2} >= {"j10", "n4"}
        assert any("error" in r or r["pages"] == 0 for r in rows if r["name"] == "g")
        assert os.path.isdir(first) and journal_status(first, "j.1")["pages"] >= 1
