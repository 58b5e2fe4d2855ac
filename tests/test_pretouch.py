"""Pages faulted before the writer needs them (issue 10, item 3; _writer.py rule 10): with the native
backend, a thread of the writer's process keeps the pages ahead of the write position populated
writable, so that the writer's own thread takes no page fault in steady state. Counted with
getrusage(RUSAGE_THREAD) minor faults, not timed: every assertion is a count."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

import mmipc
from conftest import wait_for
from mmipc import Reader, Writer

pytestmark = pytest.mark.skipif(mmipc.backend != "native", reason="the pretoucher is the native backend's")
PAYLOAD = bytes(408)
FRAMES_2MIB = (2 << 20) // 440  # 408 B payloads take 440 B frames
AHEAD = 4 << 20  # mmipc.c's PRETOUCH_AHEAD
KERNEL = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
HAS_POPULATE_WRITE = KERNEL >= (5, 14)

COUNT_FAULTS = """
import resource, sys
from mmipc import Writer
from conftest import wait_for
def faults():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
with Writer.create(sys.argv[1], "j", page_size=16 << 20, service=None) as w:
    for _ in range(100):
        w.write(bytes(408))
    if w._c_pretouched >= 0 and sys.argv[2] == "on":
        wait_for(lambda: w._c_pretouched >= (4 << 20), what="the pretoucher to get 4 MiB ahead")
    before = faults()
    for _ in range((2 << 20) // 440):
        w.write(bytes(408))
    print(faults() - before, w._c_pretouched)
"""


def _thread_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def _faults_in_child(jdir: str, pretouch: str) -> tuple[int, int]:
    env = {**os.environ, "MMIPC_PRETOUCH": "1" if pretouch == "on" else "0"}
    env["PYTHONPATH"] = os.path.dirname(__file__) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", COUNT_FAULTS, jdir, pretouch],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    faults, pretouched = done.stdout.split()
    return int(faults), int(pretouched)


def test_writing_2_mib_after_warm_up_takes_no_page_fault_on_the_writers_thread(tmp_path: object) -> None:
    on, pretouched = _faults_in_child(str(tmp_path) + "/on", "on")
    if not HAS_POPULATE_WRITE:
        assert pretouched == -1, "an older kernel: the pretoucher stops by itself"
        pytest.skip("this kernel lacks MADV_POPULATE_WRITE (Linux 5.14+): the writer faults as before")
    assert pretouched >= AHEAD
    off, none = _faults_in_child(str(tmp_path) + "/off", "off")
    assert none == 0, "MMIPC_PRETOUCH=0 starts no pretoucher"
    assert off >= 100, f"without the pretoucher 2 MiB of new pages fault ({off} faults): the count can fail"
    # Not zero: writeback may clean a populated page before the writer reaches it, and a shared
    # file mapping write-protects a cleaned page again (one fault, no disk read). Seen: 0 to 25.
    assert on * 10 <= off, f"{on} faults on the writer's thread for 2 MiB populated ahead ({off} without)"


def test_the_pretoucher_follows_the_writer_to_its_next_page(jdir: str) -> None:
    with Writer.create(jdir, "j", page_size=8 << 20, service=None) as w:
        while w._c_pos < 4096 + 64 * 1024 or w._page_no == 0:  # into page 1, past its first frames
            w.write(PAYLOAD)
        if not HAS_POPULATE_WRITE:
            pytest.skip("this kernel lacks MADV_POPULATE_WRITE (Linux 5.14+)")
        done_in_page_0 = 8 << 20
        wait_for(lambda: w._c_pretouched >= done_in_page_0 + AHEAD, what="the pretoucher in page 1")
        before = _thread_faults()
        for _ in range(FRAMES_2MIB):
            w.write(PAYLOAD)
        assert _thread_faults() - before <= 8
    with Reader.create("r", service=None) as r:  # what was written is all there, in order
        r.add_journal(jdir, "j")
        assert sum(1 for _ in iter(r.read, None)) > FRAMES_2MIB


def test_a_closed_writer_stops_its_pretoucher_and_unmaps_its_page(jdir: str) -> None:
    import threading

    threads = threading.active_count()
    w = Writer.create(jdir, "j", page_size=8 << 20, service=None)
    w.write(PAYLOAD)
    page = w._page
    assert page is not None
    w.close()
    assert page.mm.closed, "the pretoucher's view of the page was dropped before the unmap"
    assert threading.active_count() == threads  # (the pretoucher is a C thread: never counted here)


PLACED = """
import os, sys, tempfile
os.sched_setaffinity(0, {int(sys.argv[1])})  # the writer's thread, pinned before it creates
from mmipc import Writer
with Writer.create(tempfile.mkdtemp(dir=sys.argv[2]), "j", service=None) as w:
    w.write(bytes(64))
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/status") as f:
            fields = dict(line.split(":\\t", 1) for line in f.read().splitlines() if ":\\t" in line)
        if fields["Name"] == "mmipc-pretouch":
            print(fields["Cpus_allowed_list"])
"""


def _cpus(text: str) -> set[int]:
    """A CPU list as the kernel prints it ("0-2,5") as a set."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pretoucher_cpus(tmp_path: object, writer_cpu: int, **env: str) -> set[int]:
    done = subprocess.run(
        [sys.executable, "-c", PLACED, str(writer_cpu), str(tmp_path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert len(lines) == 1, f"one thread named mmipc-pretouch, not {done.stdout!r}"
    return _cpus(lines[0])


def _two_cpus() -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: a pinned writer leaves its pretoucher nowhere else to go")
    return cpus


def test_the_pretoucher_keeps_the_cpus_of_the_writer_that_starts_it(tmp_path: object) -> None:
    cpu = min(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k != "MMIPC_PRETOUCH_CPUS"}
    assert pretoucher_cpus(tmp_path, cpu, **env) == {cpu}, "as any thread the writer's thread made"


def test_mmipc_pretouch_cpus_moves_the_pretoucher_off_a_pinned_writers_cpu(tmp_path: object) -> None:
    cpus = _two_cpus()
    placed = pretoucher_cpus(tmp_path, cpus[0], MMIPC_PRETOUCH_CPUS=",".join(map(str, cpus[1:])))
    assert placed == set(cpus[1:]), placed


@pytest.mark.parametrize("bad", ["x", "1-0", "0,", " 1", "99999", "1--2"])
def test_a_bad_mmipc_pretouch_cpus_is_a_usage_error_in_one_line(jdir: str, bad: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mmipc", "write", "--standalone", jdir, "j"],
        input="x\n",
        env={**os.environ, "MMIPC_PRETOUCH_CPUS": bad},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "MMIPC_PRETOUCH_CPUS must be a CPU list" in done.stderr and repr(bad) in done.stderr
