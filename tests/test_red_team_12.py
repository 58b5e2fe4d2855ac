"""Red team 12: the C iterator of wait="block" (`BlockIter`, `bell_block`) and the C API (mmipc.h),
attacked as a careless or hostile user would. Each test is a defect found (and fixed): it failed
before its fix. Real readers, writers, signals and C programs; no mocks.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from mmipc import Block, ClosedError, Reader, UsageError, Writer
from mmipc.journal._backend import native
from test_c_api import NATIVE, WARNINGS

NEEDS_NATIVE = pytest.mark.skipif(native is None, reason="needs the C extension")
# Where a reader asleep in frames(wait="block") is (x86-64 numbers, /proc/PID/TASK/TID/syscall):
# native, futex (202); pure Python, poll or ppoll on its FIFO (7, 271), not a futex, which there
# would be a wait for the GIL, before its re-check read.
SYSCALLS_OF_A_WAIT = {"202"} if native is not None else {"7", "271"}


class Alarm(Exception):
    pass


@pytest.fixture
def reader(jdir: str) -> Iterator[Reader]:
    with Writer.create(jdir, "j", service=None) as writer:
        writer.write(b"first")
    reader = Reader.create("red12", service=None)
    reader.add_journal(jdir, "j")
    yield reader
    reader.close()


def _sleeping(reader: Reader) -> bool:
    bell = reader._merge.bell
    return bell is not None and not bell.mm.closed and bell.mm[12:16] != bytes(4)


def _in_a_wait(tid: int) -> bool:
    with open(f"/proc/self/task/{tid}/syscall") as f:
        return f.read().split()[0] in SYSCALLS_OF_A_WAIT


# BlockIter read a `read` slot at the offset of whatever member descriptor the reader's type
# held, without checking that the type has that layout: `class X: read = Reader.read` made it read
# past a small object (SIGSEGV).
@NEEDS_NATIVE
def test_a_block_iterator_of_an_object_with_a_borrowed_read_slot_is_an_error_not_a_crash() -> None:
    code = """if True:
        from mmipc import Reader
        class Idle:
            def start(self): pass
            def empty(self): return False
            def nothing(self, rung): pass
            def found(self, gap): pass
        class Impostor:
            read = Reader.__dict__["read"]
        it = type(Reader.create("impostor", service=None).frames())(Impostor(), Idle())
        try:
            next(it)
        except TypeError as e:
            print("refused:", e)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "Impostor" in done.stdout


# An int timeout too large for a float raised OverflowError (from math.isnan) instead of meaning
# "for ever", as inf does; Block's spin and max_nap raised it too instead of their UsageError.
def test_an_int_timeout_too_large_for_a_float_waits_for_ever_like_inf(reader: Reader) -> None:
    assert bytes(next(reader.frames(timeout=10**400)).data) == b"first"
    for knobs in ({"spin": 10**400}, {"max_nap": 10**400}):
        with pytest.raises(UsageError, match="finite number"):
            Block(**knobs)


def test_an_int_timeout_too_large_for_a_float_ends_no_polled_iteration_early(reader: Reader) -> None:
    frames = reader.frames(timeout=10**400, wait="spin")
    assert bytes(next(frames).data) == b"first"


# A signal handler that closed the reader while it slept in frames(wait="block"): the pure-Python
# backend raised TypeError ("argument must be read-write bytes-like object, not mmap.mmap", from
# Bell.awake on the closed bell) after an OSError (EBADF: the FIFO's closed descriptor); the native
# backend raises ClosedError, which both now do.
@pytest.mark.skipif(platform.machine() != "x86_64", reason="knows x86-64's system call numbers")
def test_a_handler_that_closes_the_reader_while_it_sleeps_ends_the_iteration_with_closed_error(
    reader: Reader,
) -> None:
    frames = reader.frames(timeout=120, wait=Block(spin=0, max_nap=None))
    assert bytes(next(frames).data) == b"first"
    main = threading.main_thread()

    def close(signum: int, frame: object) -> None:
        reader.close()

    def ring_when_asleep() -> None:
        wait_for(lambda: _sleeping(reader) and _in_a_wait(main.native_id or 0), what="the reader to sleep")
        signal.pthread_kill(main.ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, close)
    thread = threading.Thread(target=ring_when_asleep)
    thread.start()
    try:
        with pytest.raises(ClosedError, match="red12 is closed"):
            next(frames)
    finally:
        thread.join()
        signal.signal(signal.SIGUSR1, previous)
    assert next(frames, None) is None  # ended, as a generator is after an exception


# A signal that arrived after bell_block announced sleep, while its re-check read ran in C (no
# handler can run there), was handled only after the wait: a Ctrl-C waited out the nap, and with
# Block(max_nap=None) and no timeout, for ever (until a frame came). The read here is C code
# (libc's raise() through ctypes: os.kill and signal.raise_signal run the handler themselves) that
# raises the signal and returns None, as an empty re-check does. Proof that the handler ran before
# the wait, not after it: it sees the reader still announced asleep.
@NEEDS_NATIVE
def test_a_signal_arriving_during_the_recheck_is_handled_before_the_wait(reader: Reader) -> None:
    assert reader.read() is not None
    bell = reader._merge.bell
    assert bell is not None
    seen: list[bool] = []

    def alarm(signum: int, frame: object) -> None:
        seen.append(_sleeping(reader))
        raise Alarm("handled")

    previous = signal.signal(signal.SIGUSR1, alarm)
    try:
        recheck = functools.partial(_c_raise(), signal.SIGUSR1)
        with pytest.raises(Alarm, match="handled"):
            native.bell_block(bell.mm, recheck, 200_000_000)  # type: ignore[union-attr]
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == [True], "the handler ran only after the wait"
    assert not _sleeping(reader)


# A signal handler run before the wait (above) that itself sleeps on the reader's bell (a nested
# frames(), or bell_block) clears the announcement when it wakes: the outer wait must not then
# wait unannounced, which no ring would end (with no limit: for ever). It reads again instead.
@NEEDS_NATIVE
def test_a_sleep_nested_in_a_handler_before_the_wait_does_not_leave_the_wait_unannounced(
    reader: Reader,
) -> None:
    assert reader.read() is not None
    bell = reader._merge.bell
    assert bell is not None
    nested: list[object] = []

    def sleep_too(signum: int, frame: object) -> None:
        nested.append(native.bell_block(bell.mm, reader.read, 1_000_000))  # type: ignore[union-attr]

    previous = signal.signal(signal.SIGUSR1, sleep_too)
    try:
        recheck = functools.partial(_c_raise(), signal.SIGUSR1)
        got = native.bell_block(bell.mm, recheck, 200_000_000)  # type: ignore[union-attr]
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert nested[0] is False  # (the read after: `recheck` again, whose signal the handler takes)
    assert got is True, "it waited with its announcement cleared"
    assert not _sleeping(reader)


def _c_raise() -> Callable[[int], None]:
    c_raise = ctypes.CDLL(None)["raise"]
    c_raise.argtypes, c_raise.restype = [ctypes.c_int], None
    return c_raise


def _build_c(tmp_path_factory: pytest.TempPathFactory, program: str) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C API cannot be built here")
    out = tmp_path_factory.mktemp(program) / program
    source = Path(__file__).parent / "c" / f"{program}.c"
    cmd = [gcc, *WARNINGS, "-O2", f"-I{NATIVE}", "-o", str(out), str(source), str(NATIVE / "mmipc.c")]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return str(out)


@pytest.fixture(scope="module")
def null_args(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build_c(tmp_path_factory, "null_args")


@pytest.fixture(scope="module")
def merge_paths(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build_c(tmp_path_factory, "merge_paths")


# Every mmipc.h function given a NULL handle, or a NULL out-pointer (frame, nano, buf, payload),
# died of SIGSEGV; mmipc.h promises a negative code and a one-line message, never an abort.
@pytest.mark.once
def test_the_c_api_refuses_null_handles_and_pointers_with_a_usage_error(null_args: str, jdir: str) -> None:
    done = subprocess.run([null_args, jdir], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    results = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert len(results) == 24 and not [k for k, v in results.items() if v.startswith("killed")], results
    for name in ("abandon_handle", "writer_getters", "closes", "crc_data"):
        assert results.pop(name) == "0 ", name  # no error to report: nothing done
    for name, result in results.items():
        code, message = result.split(" ", 1)
        assert code == "-1" and "null" in message.lower(), (name, result)


# The C merge compared directories as strings: the same journal added as DIR and DIR/ (or DIR//.,
# DIR/../NAME, a relative spelling) was followed twice, every frame handed out twice. Python's
# Reader.add_journal refuses those (UsageError "already added"); the C merge now does too.
@pytest.mark.once
def test_the_c_merge_refuses_a_journal_already_added_under_another_spelling(
    merge_paths: str, jdir: str
) -> None:
    with Writer.create(jdir, "j", service=None) as writer:
        writer.write(b"once")
    done = subprocess.run(
        [merge_paths, jdir], capture_output=True, text=True, timeout=120, cwd=os.path.dirname(jdir)
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{jdir} 0 "
    for line in lines[1:-1]:
        assert line.split(" ", 2)[1:] == ["-1", f"journal {jdir}/j is already added"], line
    assert lines[-1] == "frames 1 rc 0"
