"""Both backends on one journal: frames written by one are read by the other, in real processes;
`Reader.read_batch` with the backend this suite runs under (.ci/run runs it under both); and
`mmipc.backend` says which one a process runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import mmipc
from mmipc import Reader, UsageError, Writer
from mmipc.journal._backend import select

SMALL_PAGE = 64 * 1024
HAVE_NATIVE = select(None)[0] == "native"

WRITE = """
import json, os, sys, mmipc
assert mmipc.backend == sys.argv[3], mmipc.backend
out = []
with mmipc.Writer.create(sys.argv[1], sys.argv[2], page_size=65536, service=None, checksum=True) as w:
    for i in range(3000):
        payload = os.urandom(i % 300)
        out.append([w.write(payload, msg_type=i % 7, source=i), payload.hex()])
    with w.frame(5, msg_type=9) as buf:
        buf[:] = b"claim"
    out.append([w.last_nano, b"claim".hex()])
print(json.dumps(out))
"""

READ = """
import json, sys, mmipc
assert mmipc.backend == sys.argv[3], mmipc.backend
r = mmipc.Reader.create("cross", service=None)
r.add_journal(sys.argv[1], sys.argv[2])
print(json.dumps([[f.nano, f.seq, bytes(f.data).hex()] for f in iter(r.read, None)]))
"""


def _run(code: str, backend: str, *args: str) -> object:
    env = {**os.environ, "MMIPC_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", code, *args, backend], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not HAVE_NATIVE, reason="mmipc.journal._native is not built")
@pytest.mark.parametrize(("writer", "reader"), [("native", "python"), ("python", "native")])
def test_a_journal_written_by_one_backend_is_read_by_the_other(writer: str, reader: str, jdir: str) -> None:
    written = _run(WRITE, writer, jdir, "j")
    read = _run(READ, reader, jdir, "j")
    assert isinstance(written, list) and isinstance(read, list)
    assert [(r[0], r[2]) for r in read] == [tuple(w) for w in written]
    assert [r[1] for r in read] == list(range(len(written))), "seq continues across pages"
    assert len(os.listdir(jdir)) > 10


def _journal(jdir: str, name: str, count: int) -> list[tuple[int, int, int, bytes]]:
    written = []
    with Writer.create(jdir, name, page_size=SMALL_PAGE, service=None) as writer:
        for i in range(count):
            payload = os.urandom(i % 200)
            written.append((writer.write(payload, msg_type=i % 3, source=i), i % 3, i, payload))
    return written


def test_read_batch_columns_are_numpy_views_and_batches_cover_the_journal_in_order(jdir: str) -> None:
    written = _journal(jdir, "j", 3000)
    reader = Reader.create("batch", service=None)
    reader.add_journal(jdir, "j")
    got: list[tuple[int, int, int, bytes]] = []
    seqs: list[int] = []
    while True:
        batch = reader.read_batch(64)
        if len(batch) == 0:
            break
        assert len(batch) <= 64
        nano = np.frombuffer(batch.nano, dtype=np.int64)
        assert not nano.flags.owndata, "the column is viewed, not copied"
        msg_type = np.frombuffer(batch.msg_type, dtype=np.int64)
        source = np.frombuffer(batch.source, dtype=np.int64)
        offset, length = batch.offset, batch.length
        whole = np.frombuffer(batch.buffer, dtype=np.uint8)
        for i in range(len(batch)):
            data = bytes(batch.data(i))
            assert whole[offset[i] : offset[i] + length[i]].tobytes() == data
            got.append((int(nano[i]), int(msg_type[i]), int(source[i]), data))
        assert [(f.nano, bytes(f.data)) for f in batch] == [(g[0], g[3]) for g in got[-len(batch) :]]
        seqs += list(batch.seq)
        if len(got) == 1000:  # read() and read_batch() mix
            frame = reader.read()
            assert frame is not None
            got.append((frame.nano, frame.msg_type, frame.source, bytes(frame.data)))
            seqs.append(frame.seq)
    assert got == written and seqs == list(range(3000))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="read_batch needs a limit >= 1"):
            reader.read_batch(bad)  # type: ignore[arg-type]


def test_read_batch_of_a_merge_is_in_timestamp_order(jdir: str) -> None:
    a, b = _journal(jdir, "a", 700), _journal(jdir, "b", 700)
    reader = Reader.create("merged", service=None)
    reader.add_journal(jdir, "a")
    reader.add_journal(jdir, "b")
    nanos: list[int] = []
    while len(batch := reader.read_batch(100)):
        nanos += list(np.frombuffer(batch.nano, dtype=np.int64))
    assert nanos == sorted(w[0] for w in a + b)


def test_mmipc_backend_names_the_backend_of_the_process() -> None:
    assert mmipc.backend == select(os.environ.get("MMIPC_BACKEND"))[0]
    env = {**os.environ, "MMIPC_BACKEND": "python"}
    code = "import mmipc; print(mmipc.backend)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"
    version = subprocess.run(
        [sys.executable, "-m", "mmipc", "--version"], env=env, capture_output=True, text=True, check=True
    )
    assert version.stdout.strip().endswith("(backend python)")


def test_checksums_are_verified_by_the_reader_of_either_backend(jdir: str) -> None:
    with Writer.create(jdir, "c", page_size=SMALL_PAGE, service=None, checksum=True) as writer:
        for i in range(3):
            writer.write(bytes([i]) * 100)
    path = os.path.join(jdir, sorted(f for f in os.listdir(jdir) if f.endswith(".journal"))[0])
    with open(path, "r+b") as f:
        f.seek(4096 + 136 + 32 + 50)  # a payload byte of the second frame
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    reader = Reader.create("crc", service=None)
    reader.add_journal(jdir, "c")
    assert reader.read() is not None
    with pytest.raises(mmipc.CorruptJournalError, match="checksum"):
        reader.read()


def test_every_backend_stamps_with_the_monotonic_clock_plus_the_process_offset(jdir: str) -> None:
    """Writer rule 5 on both backends: the C core adds the offset Python anchored, not its own."""
    from mmipc.journal._writer import clock_offset

    with Writer.create(jdir, "clock", service=None) as writer:
        for payload in (b"", b"x" * 408, b"y" * 5000):
            before = time.monotonic_ns() + clock_offset()
            nano = writer.write(payload)
            after = time.monotonic_ns() + clock_offset()
            assert before <= nano <= after
            with writer.frame(8) as buf:
                buf[:] = bytes(8)
            assert after <= writer.last_nano <= time.monotonic_ns() + clock_offset()


@pytest.mark.skipif(mmipc.backend != "native", reason="the native backend's binding")
def test_native_hot_paths_are_the_c_methods_themselves_with_the_reference_docs(jdir: str) -> None:
    """`writer.write` and a one-journal `reader.read` call C directly (no Python frame per call,
    issue 10's in-process costs), and `help()` shows the reference's documentation."""
    import inspect

    from mmipc.journal import _native, _writer

    with (
        Writer.create(jdir, "j", page_size=SMALL_PAGE, service=None) as w,
        Reader.create("r", service=None) as r,
    ):
        r.add_journal(jdir, "j")
        assert (
            type(w.write).__name__ == "builtin_function_or_method" and getattr(w.write, "__self__", None) is w
        )
        assert type(r.read).__name__ == "builtin_function_or_method"
        assert Writer.write is _native.WriterCore.__dict__["write"]
        assert inspect.getdoc(Writer.write) == inspect.getdoc(_writer._python_write)
        for i in range(3000):  # page switches and slot crossings go through Python and come back
            w.write(i.to_bytes(4, "little"), msg_type=1, source=i)
        assert [int.from_bytes(f.data, "little") for f in iter(r.read, None)] == list(range(3000))


@pytest.mark.skipif(mmipc.backend != "native", reason="the native backend's C thread check")
def test_a_native_write_from_another_thread_raises_and_writes_nothing(jdir: str) -> None:
    import threading

    errors: list[BaseException] = []
    with Writer.create(jdir, "j", page_size=SMALL_PAGE, service=None) as w:
        w.write(b"mine")

        def other() -> None:
            try:
                w.write(b"theirs", 1)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=60)
        w.write(b"mine again")
    assert (
        len(errors) == 1 and isinstance(errors[0], UsageError) and "belongs to the thread" in str(errors[0])
    )
    with Reader.create("r", service=None) as r:
        r.add_journal(jdir, "j")
        assert [bytes(f.data) for f in iter(r.read, None)] == [b"mine", b"mine again"]
