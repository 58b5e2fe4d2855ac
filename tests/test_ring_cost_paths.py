"""The writer's per-frame checks that issue 16 made cheap still do their job: the native core writes
with no bell list (before `open_bells`, after `close_bells`: its count points at a word that stays
0, never at NULL), the owner thread's writes stay in C (the core compares the thread pointer
itself) while another thread's are refused, and the benchmark scripts of the ring's cost run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mmipc import Reader, UsageError, Writer
from mmipc.journal._backend import native
from mmipc.journal._bell import bells_path
from mmipc.journal._files import create_page, page_path
from mmipc.journal._layout import decode_frame
from mmipc.journal._page import MappedPage

BENCH = Path(__file__).parent.parent / "benchmarks"
PAGE = 1 << 20
needs_native = pytest.mark.skipif(native is None, reason="the native core only")


def read_all(directory: str, name: str) -> list[bytes]:
    with Reader.create("check", service=None) as reader:
        reader.add_journal(directory, name)
        return [bytes(f.data) for f in iter(reader.read, None)]


@needs_native
def test_a_core_writes_before_its_bells_open_and_after_they_close(jdir: str) -> None:
    assert native is not None
    create_page(jdir, "j", 0, PAGE)
    page = MappedPage.open(page_path(jdir, "j", 0), "j", 0, writable=True)
    core = native.WriterCore()
    core._c_attach(page.view, PAGE, 1, 0, 0, 4096, 0, 0, 1 << 62)
    core.write(b"no list yet")  # a NULL count pointer here was a crash without its NULL test
    core._c_open_bells(bells_path(jdir, "j"))
    core.write(b"list open")
    core._c_close_bells()
    core.write(b"list closed")
    offset, got = 4096, []
    while (info := decode_frame(page.mm, offset, PAGE, page.path)) is not None:
        got.append(bytes(page.mm[offset + 32 : offset + 32 + info.payload_len]))
        offset += (info.payload_len + 39) & ~7
    core._c_detach()
    page.release()
    assert got == [b"no list yet", b"list open", b"list closed"]


class CountingWriter(Writer):
    """A Writer that counts the writes its C core hands back to Python (`_write_from_core`)."""

    handed_back = 0

    def _write_from_core(self, payload: Any, msg_type: int = 0, source: int = 0) -> int:
        CountingWriter.handed_back += 1
        return super()._write_from_core(payload, msg_type, source)


@needs_native
def test_the_owner_thread_s_writes_stay_in_c_and_another_thread_s_are_refused(jdir: str) -> None:
    writer = CountingWriter.create(jdir, "owner", service=None, page_size=PAGE)
    CountingWriter.handed_back = 0
    for i in range(1000):
        writer.write(i.to_bytes(4, "little"))
    assert CountingWriter.handed_back == 0  # the thread check let every one of them through in C
    refused: list[UsageError] = []

    def other() -> None:
        try:
            writer.write(b"not mine")
        except UsageError as exc:
            refused.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=60)
    assert len(refused) == 1 and CountingWriter.handed_back == 1
    writer.close()
    assert read_all(jdir, "owner") == [i.to_bytes(4, "little") for i in range(1000)]


@pytest.mark.once  # .ci/run: in its native pass only (benchmark scripts)
def test_ring_cost_script_prints_every_case(tmp_path: Path) -> None:
    args = ["--writes", "50", "--rounds", "1", "--paced", "2", "--gap-ms", "1"]
    run = subprocess.run(
        [sys.executable, str(BENCH / "ring_cost.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    rows = run.stdout.splitlines()[2:]
    labels = ["alone", "1 awake", "10 awake", "1 awake, merging", "10 awake, merging", "10 block"]
    assert [row[:20].strip() for row in rows] == labels
    assert all(float(v) > 0 for row in rows for v in row[20:].split())


@pytest.mark.once  # .ci/run: in its native pass only (benchmark scripts)
def test_ring_ops_keepup_mode_writes_every_frame_and_stops_its_readers(jdir: str) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / "native" / "ring_ops.py"), "2", "200", "keepup", jdir],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert run.returncode == 0, run.stderr
    assert len(read_all(jdir, "ring")) == 201
