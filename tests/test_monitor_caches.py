"""The service's monitor keeps no entry for a counter file that is gone: neither in retention's
cache of parsed counter files (`Counters`) nor in its record of when it found a reader dead. With
readers that come and go for months, either grew for the service's lifetime. Counted, not timed:
a real in-process service with a real retention policy, real readers (killed -9 for the dead)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Procs, wait_for
from mmipc import Reader, Service, Writer
from mmipc.journal._metrics import counters_path
from mmipc.service._retention import Policy

ROUNDS = 12


def test_the_counter_file_cache_forgets_readers_that_came_and_went(tmp_path: Path, jdir: str) -> None:
    home = str(tmp_path / "home")
    with (
        Service(home, retain=Policy(max_pages=100), retain_interval=0.05) as svc,
        Writer.create(jdir, "j", page_size=64 * 1024, service=home) as writer,
    ):
        writer.write(b"x")
        cache = svc.monitor._counters._read
        for i in range(ROUNDS):
            with Reader.create(f"passing-{i}", service=home) as reader:
                reader.add_journal(jdir, "j")
                path = counters_path(home, f"passing-{i}")
                wait_for(lambda: path in cache, what="retention to read the reader's file")  # noqa: B023
                assert len(cache) == 1  # this reader's; the ones before it are forgotten
        wait_for(lambda: not cache, what="retention to forget the last reader's file")


_DOOMED = """
from mmipc import Reader
reader = Reader.create({name!r}, service={home!r})
reader.add_journal({directory!r}, "j")
print("ready", flush=True)
import time
time.sleep(600)
"""


def test_a_dead_reader_whose_counter_file_is_removed_is_forgotten(
    tmp_path: Path, jdir: str, procs: Procs
) -> None:
    home = str(tmp_path / "home")
    with (
        Service(home, retain=Policy(max_pages=100), retain_interval=0.05) as svc,
        Writer.create(jdir, "j", page_size=64 * 1024, service=home) as writer,
    ):
        writer.write(b"x")
        dead_since = svc.monitor._dead_since
        for i in range(3):
            name = f"doomed-{i}"
            child = procs.spawn_code(_DOOMED.format(name=name, home=home, directory=jdir))
            child.expect_line("ready")
            procs.kill9(child)  # its counter file stays, for DEAD_LINGER
            wait_for(lambda: name in dead_since, what="the monitor to find the reader dead")  # noqa: B023
            os.unlink(counters_path(home, name))  # removed meanwhile (by hand, `mmipc prune` ...)
            wait_for(lambda: name not in dead_since, what="the monitor to forget it")  # noqa: B023
        assert not dead_since
