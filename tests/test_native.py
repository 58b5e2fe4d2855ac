"""The extension mmipc.journal._native against real page files: what its cores write, the Python reader and
the on-disk format accept; what the Python writer and the C writer write, its cores read; every
irregular case goes SLOW without changing anything. Also the backend choice and a compiler-less
install."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal_bytes import check_index_and_times, read_page
from mmipc import CorruptJournalError, Reader, UsageError, Writer
from mmipc.journal._backend import native, select
from mmipc.journal._files import create_page, page_path
from mmipc.journal._layout import decode_frame
from mmipc.journal._page import MappedPage
from mmipc.journal._types import Frame, JournalId
from test_c_api import SMALL_PAGE, _build

if select(None)[0] != "native":  # pragma: no cover - only on machines without a compiler
    if os.environ.get("MMIPC_REQUIRE_NATIVE") == "1":
        raise AssertionError("MMIPC_REQUIRE_NATIVE=1 but mmipc.journal._native is not built")
    pytest.skip(
        "mmipc.journal._native is not built (installed without a C compiler)", allow_module_level=True
    )
from mmipc.journal import _native  # noqa: E402

NEVER = 1 << 62


class FrameV2(NamedTuple):
    """Frame with format v2's sixth field (mmipc's own Frame gains it with the Python v2 work)."""

    nano: int
    msg_type: int
    source: int
    journal: JournalId
    data: memoryview
    seq: int


SLOW = _native.SLOW


@pytest.fixture
def page(jdir: str) -> Iterator[MappedPage]:
    """Page 0 of journal "j", mapped writable (a v1 header, as the Python writer creates it)."""
    create_page(jdir, "j", 0, SMALL_PAGE)
    mapped = MappedPage.open(page_path(jdir, "j", 0), "j", 0, writable=True)
    yield mapped
    mapped.release()


def _drain(read: Callable[[], object]) -> list[Any]:
    """Frames from `read` until it returns None or SLOW."""
    frames = []
    while isinstance(frame := read(), tuple):
        frames.append(frame)
    return frames


def _make_v2(page: MappedPage, flags: int, first_seq: int) -> None:
    struct.pack_into("<HHI", page.mm, 8, 2, 4096, flags)
    struct.pack_into("<Q", page.mm, 120, first_seq)


def _writer(page: MappedPage, version: int = 1, flags: int = 0, first_seq: int = 0) -> _native.WriterCore:
    core = _native.WriterCore()
    core._c_attach(page.view, SMALL_PAGE, version, flags, first_seq, 4096, 0, first_seq, NEVER)
    return core


def _cursor(page: MappedPage, version: int = 1, flags: int = 0, first_seq: int = 0) -> _native.CursorCore:
    frame_class = Frame if version == 1 or "seq" in Frame._fields else FrameV2  # Frame has seq in v2
    core = _native.CursorCore(JournalId(os.path.dirname(page.path), "j"), frame_class)
    core._c_attach(page.view, SMALL_PAGE, version, flags, first_seq, 4096)
    return core


def test_writer_core_frames_are_v1_frames_the_python_reader_reads(page: MappedPage, jdir: str) -> None:
    core = _writer(page)
    payloads = [os.urandom(n) for n in (0, 1, 7, 8, 408, 1000)]
    nanos = [cast(int, core.write(p, msg_type=i, source=100 + i)) for i, p in enumerate(payloads)]
    assert nanos == sorted(nanos) and core._c_pos == 4096 + sum((len(p) + 39) & ~7 for p in payloads)
    offset = 4096
    for i, p in enumerate(payloads):
        info = decode_frame(page.mm, offset, SMALL_PAGE, page.path)
        assert info is not None and (info.msg_type, info.nano, info.payload_len) == (i, nanos[i], len(p))
        assert page.mm[offset + 24 : offset + 32] == bytes(8), "v1: bytes 24..31 stay zero"
        offset = info.end
    core._c_detach()
    reader = Reader.create("r", service=None)
    reader.add_journal(jdir, "j")
    got = [(f.nano, f.msg_type, f.source, bytes(f.data)) for f in iter(reader.read, None)]
    assert got == [(nanos[i], i, 100 + i, p) for i, p in enumerate(payloads)]


def test_writer_core_stores_v2_seq_and_checksum(page: MappedPage) -> None:
    _make_v2(page, flags=1, first_seq=2**32 - 2)
    core = _writer(page, version=2, flags=1, first_seq=2**32 - 2)
    payloads = [os.urandom(n) for n in (5, 0, 408, 64)]
    for p in payloads:
        core.write(p, 1, 2)
    assert core._c_next_seq == 2**32 + 2
    frames = read_page(page.path).frames
    assert [f[5] for f in frames] == [2**32 - 2, 2**32 - 1, 0, 1]  # the low 32 bits wrap
    assert [f[6] for f in frames] == [zlib.crc32(p) for p in payloads]
    cursor = _cursor(page, version=2, flags=1, first_seq=2**32 - 2)
    read = _drain(cursor.read)
    assert [(f.seq, bytes(f.data)) for f in read] == [(2**32 - 2 + i, p) for i, p in enumerate(payloads)]


def test_writer_core_goes_slow_and_writes_nothing(page: MappedPage) -> None:
    core = _writer(page)
    core.write(b"first")
    before = bytes(page.mm)
    slow_calls: list[tuple[Any, ...]] = [
        (b"x", 0xFFFF_0000, 0),  # a reserved msg_type
        (b"x", -1, 0),
        (b"x", 0, 2**32),
        (b"x", "1", 0),
        (bytes(SMALL_PAGE),),  # does not fit the page
        ("text",),  # not a buffer: the Python path raises its TypeError
        (memoryview(bytes(64))[::2],),  # not contiguous
    ]
    for args in slow_calls:
        assert core.write(*args) is SLOW
    core._c_slot_boundary = core._c_pos  # the next frame would fill a time-index slot
    assert core.write(b"x") is SLOW
    core._c_slot_boundary, core._c_limit = NEVER, 0  # limit 0: the caller's own slow state
    assert core.write(b"x") is SLOW
    assert bytes(page.mm) == before
    with pytest.raises(TypeError):
        core.write(b"x", colour=1)  # type: ignore[call-arg]
    core._c_detach()
    assert core.write(b"x") is SLOW  # detached: limit is 0


def test_writer_core_commits_a_claim_filled_in_place(page: MappedPage, jdir: str) -> None:
    core = _writer(page)
    pos = core._c_pos
    page.view[pos + 32 : pos + 32 + 11] = b"filled here"
    nano = core._c_commit(pos, 11, 9, 3)
    with pytest.raises(ValueError, match="not at the writer's position"):
        core._c_commit(pos, 11, 9, 3)
    core._c_detach()
    reader = Reader.create("r", service=None)
    reader.add_journal(jdir, "j")
    frame = reader.read()
    assert frame is not None and (frame.nano, frame.msg_type, frame.source) == (nano, 9, 3)
    assert bytes(frame.data) == b"filled here"


def test_writer_core_refuses_a_read_only_page(jdir: str) -> None:
    create_page(jdir, "j", 0, SMALL_PAGE)
    ro = MappedPage.open(page_path(jdir, "j", 0), "j", 0)
    with pytest.raises(ValueError, match="writable"):
        _native.WriterCore()._c_attach(ro.view, SMALL_PAGE, 1, 0, 0, 4096, 0, 0, NEVER)
    ro.release()


def _python_journal(jdir: str, count: int) -> list[tuple[int, int, int, bytes]]:
    written = []
    with Writer.create(jdir, "j", page_size=SMALL_PAGE, service=None) as writer:
        for i in range(count):
            payload = os.urandom(i % 200)
            written.append((writer.write(payload, msg_type=i % 3, source=i), i % 3, i, payload))
    return written


def test_cursor_core_reads_the_python_writers_page_like_the_python_cursor(jdir: str) -> None:
    written = _python_journal(jdir, 50)
    page = MappedPage.open(page_path(jdir, "j", 0), "j", 0)
    core = _cursor(page, version=page.header.version)
    got = _drain(core.read)
    assert [(f.nano, f.msg_type, f.source, bytes(f.data)) for f in got] == written
    assert all(f.journal == JournalId(jdir, "j") and type(f) is Frame for f in got)
    assert core.read() is None and core.poll() == -1
    core._c_detach()
    page.release()
    assert [bytes(f.data) for f in got] == [w[3] for w in written], "frames keep the page mapped"


def test_cursor_core_goes_slow_at_the_end_marker_and_on_bad_frames(jdir: str) -> None:
    _python_journal(jdir, 1000)  # 1000 frames of up to 200 bytes: more than one 64 KiB page
    page = MappedPage.open(page_path(jdir, "j", 0), "j", 0, writable=True)
    core = _cursor(page)
    frames = []
    while (frame := core.read()) is not SLOW:
        assert frame is not None
        frames.append(frame)
    end = core._c_pos
    assert page.mm[end + 4 : end + 8] == b"\xff\xff\xff\xff", "stopped at the end-of-page marker"
    assert core.read_batch(10) is SLOW and core.poll() == -2
    del frames
    core._c_pos, core._c_last_nano = 4096, 0
    first = core.read()
    assert isinstance(first, tuple)
    second_nano = struct.unpack_from("<q", page.mm, core._c_pos + 8)[0]
    struct.pack_into("<q", page.mm, core._c_pos + 8, first.nano - 1)  # a timestamp going back
    pos = core._c_pos
    assert core.read() is SLOW and core.poll() == -2 and core._c_pos == pos
    struct.pack_into("<q", page.mm, pos + 8, second_nano)
    struct.pack_into("<I", page.mm, pos + 20, 7777)  # payload length disagrees with the commit word
    assert core.read() is SLOW and core._c_pos == pos
    core._c_detach()
    del first
    page.release()


def test_cursor_core_verifies_checksums(page: MappedPage) -> None:
    _make_v2(page, flags=1, first_seq=0)
    writer = _writer(page, version=2, flags=1)
    for i in range(3):
        writer.write(bytes([i]) * 100)
    page.mm[4096 + 136 + 32 + 50] ^= 1  # a payload byte of the second frame
    cursor = _cursor(page, version=2, flags=1)
    first = cast(Any, cursor.read())
    assert isinstance(first, (Frame, FrameV2)) and first.seq == 0
    assert cursor.read() is SLOW and cursor.read_batch(5) is SLOW
    flagless = _cursor(page, version=2, flags=0)  # the same bytes without the CHECKSUMS flag
    assert len(flagless.read_batch(5)) == 3  # type: ignore[arg-type]
    for core in (writer, cursor, flagless):
        core._c_detach()
    del first


def test_poll_take_and_merge_read_order_ties_by_list_order(jdir: str) -> None:
    cores = []
    pages = []
    for name in ("a", "b"):
        create_page(jdir, name, 0, SMALL_PAGE)
        pages.append(MappedPage.open(page_path(jdir, name, 0), name, 0, writable=True))
    writers = [_writer(p) for p in pages]
    for nano in (10, 20, 20, 30):  # write the same timestamps to both: stamps are clamped upwards
        for w in writers:
            w._c_last_nano = nano
            w.write(str(nano).encode())
    for p in pages:
        core = _native.CursorCore(JournalId(jdir, os.path.basename(p.path)[0]), Frame)
        core._c_attach(p.view, SMALL_PAGE, 1, 0, 0, 4096)
        cores.append(core)
    nano = cores[1].poll()
    assert nano > 0 and cores[1]._c_next_nano == nano and cores[1].poll() == nano  # stays peeked
    merged = _drain(lambda: _native.merge_read(cores))
    assert [f.nano for f in merged] == sorted(f.nano for f in merged) and len(merged) == 8
    for a, b in zip(merged[::2], merged[1::2], strict=True):
        if a.nano == b.nano:
            assert (a.journal.name, b.journal.name) == ("a", "b")
    with pytest.raises(ValueError, match="no frame is peeked"):
        cores[0].take()
    assert _native.merge_read([]) is None
    with pytest.raises(TypeError):
        _native.merge_read((cores[0],))  # type: ignore[arg-type]
    for writer in writers:
        writer._c_detach()
    for cursor in cores:
        cursor._c_detach()
    del merged
    for p in pages:
        p.release()


def test_read_batch_columns_are_zero_copy_numpy_views_and_iterate_as_frames(jdir: str) -> None:
    written = _python_journal(jdir, 40)
    page = MappedPage.open(page_path(jdir, "j", 0), "j", 0)
    core = _cursor(page)
    batch = core.read_batch(25)
    assert isinstance(batch, _native.Batch) and len(batch) == 25
    nano = np.frombuffer(batch.nano, dtype=np.int64)
    assert not nano.flags.owndata and list(nano) == [w[0] for w in written[:25]]
    assert list(np.frombuffer(batch.msg_type, dtype=np.int64)) == [w[1] for w in written[:25]]
    assert list(batch.source) == [w[2] for w in written[:25]] and list(batch.seq) == [-1] * 25
    whole = np.frombuffer(batch.buffer, dtype=np.uint8)
    for i in range(25):
        start, n = batch.offset[i], batch.length[i]
        assert whole[start : start + n].tobytes() == bytes(batch.data(i)) == written[i][3]
    assert [(f.nano, bytes(f.data)) for f in batch] == [(w[0], w[3]) for w in written[:25]]
    rest = core.read_batch(100)
    assert isinstance(rest, _native.Batch) and len(rest) == 15 and core.read() is None
    empty = core.read_batch(100)
    assert isinstance(empty, _native.Batch) and len(empty) == 0 and list(empty.nano) == []
    with pytest.raises(IndexError):
        batch.data(25)
    core._c_detach()
    page.release()
    assert bytes(batch[24].data) == written[24][3], "a batch keeps its page mapped"


def test_detach_leaves_no_export_so_the_page_can_close(jdir: str) -> None:
    _python_journal(jdir, 3)
    page = MappedPage.open(page_path(jdir, "j", 0), "j", 0)
    core = _cursor(page)
    assert isinstance(core.read(), tuple)  # the frame is dropped at once
    core._c_detach()
    page.release()
    assert page.mm.closed


@given(st.binary(max_size=300), st.integers(0, 7), st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_crc32_is_zlib_crc32_at_any_alignment(data: bytes, skip: int, start: int) -> None:
    view = memoryview(data)[min(skip, len(data)) :]
    assert _native.crc32(view) == zlib.crc32(view)
    assert _native.crc32(view, start) == zlib.crc32(view, start)


def test_backend_selection() -> None:
    assert select("python") == ("python", None)
    assert select(None) == ("native", _native) == select("") == select("native")
    with pytest.raises(UsageError, match="MMIPC_BACKEND='fast' is not a backend"):
        select("fast")
    code = "import mmipc.journal._backend as b; print(b.BACKEND)"
    env = {**os.environ, "MMIPC_BACKEND": "python"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"


@pytest.mark.once  # .ci/run: in its native pass only (a pip install, whatever the backend)
def test_installs_and_imports_without_a_compiler(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    target = tmp_path / "site"
    env = {**os.environ, "CC": "false", "MMIPC_REQUIRE_NATIVE": "0"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    done = subprocess.run(
        [*cmd, "--target", str(target), str(root)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert not list(target.glob("mmipc/journal/_native*.so")), "CC=false must not have built the extension"
    assert (target / "mmipc" / "journal" / "_native" / "mmipc.h").is_file(), "mmipc.h ships with the package"
    check = "import mmipc, mmipc.journal._backend as b; print(b.BACKEND)"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "python", out.stderr


def test_cursor_core_reads_the_c_writers_v2_journal(tmp_path: Path, jdir: str) -> None:
    progs = _build(tmp_path / "c", ["-O2"])
    args = [progs["ctp_writer"], "--checksum", "--page-size", str(SMALL_PAGE), jdir, "md", "400"]
    subprocess.run(args, check=True, capture_output=True)
    got: list[tuple[int, bytes]] = []
    expected: list[tuple[int, bytes]] = []
    page_no = 0
    while os.path.exists(path := page_path(jdir, "md", page_no)):
        on_disk = read_page(path)
        expected += [(on_disk.first_seq + i, f[7]) for i, f in enumerate(on_disk.frames) if f[1] == 1]
        with open(path, "rb") as f:  # mapped directly: the Python header check reads v1 only until v2 lands
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        core = _native.CursorCore(JournalId(jdir, "md"), FrameV2)
        core._c_attach(view, SMALL_PAGE, on_disk.version, on_disk.flags, on_disk.first_seq, 4096)
        got += [(frame.seq, bytes(frame.data)) for frame in _drain(core.read)]
        core._c_detach()
        view.release()
        mm.close()
        page_no += 1
    assert page_no == 3 and got == expected and [g[0] for g in got] == list(range(400))


def test_cursor_core_takes_first_seq_stored_after_it_attached(page: MappedPage) -> None:
    """A reader may open a page prepared ahead before its writer adopts it and stores first_seq."""
    _make_v2(page, flags=0, first_seq=0)
    cursor = _cursor(page, version=2, flags=0, first_seq=0)
    assert cursor.read() is None
    struct.pack_into("<Q", page.mm, 120, 2**33 + 5)  # the writer adopts the page (switch step 1)
    writer = _writer(page, version=2, flags=0, first_seq=2**33 + 5)
    for _ in range(3):
        writer.write(b"tick")
    assert [f.seq for f in _drain(cursor.read)] == [2**33 + 5, 2**33 + 6, 2**33 + 7]
    writer._c_detach()
    cursor._c_detach()


def test_writer_core_fills_time_index_slots_itself_when_allowed(page: MappedPage, jdir: str) -> None:
    core = _native.WriterCore()
    core._c_attach(page.view, SMALL_PAGE, 1, 0, 0, 4096, 0, 0, 4096, 0)  # a fresh page: slot 0 next
    assert core.write(b"x" * 100) is SLOW, "a crossing goes SLOW unless mark_slots is set"
    core._c_mark_slots = True
    nanos: list[int] = []
    while isinstance(nano := core.write(os.urandom(100), 1), int):
        nanos.append(nano)
    assert core._c_slot_index > 950 and len(nanos) > 400  # 64-byte stride: every frame fills slots
    on_disk = read_page(page.path)
    assert len(on_disk.slots) == core._c_slot_index and on_disk.first_nano == nanos[0]
    check_index_and_times(on_disk)
    core._c_detach()
    reader = Reader.create("r", service=None)
    reader.add_journal(jdir, "j", start=nanos[300])  # the Python seek walks the slots the core filled
    frame = reader.read()
    assert frame is not None and frame.nano == nanos[300]


def _wired_cursor(jid: JournalId) -> Any:
    from mmipc.journal._cursor import Cursor

    cursor = Cursor(jid, "begin")
    cursor.position("begin")
    return cursor


def test_native_cursor_has_python_as_slow_path_reads_across_pages_and_reports_corruption(
    jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wired Cursor: the core reads; on SLOW the Python cursor (the reference) takes over with the
    core's position (page switches, missing pages, corruption errors), then hands the page back."""
    from mmipc.journal._cursor import Cursor

    slow_calls = []
    python = Cursor._python

    def counted(cursor: Cursor, method: Any) -> Any:
        slow_calls.append(1)
        return python(cursor, method)

    monkeypatch.setattr(Cursor, "_python", counted)
    written = _python_journal(jdir, 3000)
    cursor = _wired_cursor(JournalId(jdir, "j"))
    got = [(f.nano, f.msg_type, f.source, bytes(f.data)) for f in iter(cursor.read, None)]
    assert got == written and cursor.page_no > 5
    assert len(slow_calls) < 2 * cursor.page_no + 5, "the core, not the Python cursor, reads most frames"
    path = page_path(jdir, "j", 2)
    with open(path, "r+b") as f:  # a frame of page 2 now claims a longer payload than its length
        f.seek(4096 + 20)
        f.write(struct.pack("<I", 9999))
    again = _wired_cursor(JournalId(jdir, "j"))
    with pytest.raises(CorruptJournalError, match=f"{path} at offset 4096: frame length"):
        while again.read() is not None:
            pass
    with pytest.raises(CorruptJournalError):  # and it stays put: the same error again
        again.read()


def test_native_writer_has_python_as_slow_path_and_writes_a_journal_python_reads(
    jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wired Writer: its core appends; on SLOW the Python writer (the reference) writes that frame
    with the core's state, switching pages or raising its errors."""
    slow_calls = []
    through_python = Writer._through_python

    def counted(writer: Writer, *args: Any) -> int:
        slow_calls.append(1)
        return through_python(writer, *args)

    monkeypatch.setattr(Writer, "_through_python", counted)
    writer = Writer.create(jdir, "j", page_size=SMALL_PAGE, service=None)
    fast = writer
    written = []
    for i in range(6000):
        payload = os.urandom(i % 250)
        written.append((fast.write(payload, i % 4, i), i % 4, i, payload))
    with pytest.raises(UsageError, match="msg_type 4294901760 is outside"):
        fast.write(b"reserved type", 0xFFFF_0000)
    assert len(slow_calls) < 60, "the core, not the Python writer, must write most frames"
    writer.close()
    reader = Reader.create("r", service=None)
    reader.add_journal(jdir, "j")
    assert [(f.nano, f.msg_type, f.source, bytes(f.data)) for f in iter(reader.read, None)] == written
    pages = sorted(f for f in os.listdir(jdir) if f.endswith(".journal"))
    assert len(pages) > 10
    for name in pages:
        check_index_and_times(read_page(os.path.join(jdir, name)))
    reader.seek(written[4321][0])
    frame = reader.read()
    assert frame is not None and frame.nano == written[4321][0]


def test_no_object_leaks_per_frame(page: MappedPage) -> None:
    import gc
    import tracemalloc

    writer = _writer(page)
    cursor = _cursor(page)

    def rounds() -> None:
        writer._c_pos, writer._c_last_nano = 4096, 0
        for _ in range(300):
            writer.write(b"payload of a frame", 1, 2)
        for _ in range(3):
            cursor._c_pos, cursor._c_last_nano = 4096, 0
            _drain(cursor.read)
            cursor._c_pos, cursor._c_last_nano = 4096, 0
            batch = cursor.read_batch(1000)
            assert isinstance(batch, _native.Batch)
            [bytes(f.data) for f in batch] + [batch.data(i) for i in range(len(batch))] + [batch.nano]
            cursor._c_pos, cursor._c_last_nano = 4096, 0
            _drain(lambda: _native.merge_read([cursor]))
            cursor._c_pos, cursor._c_last_nano = 4096, 0
            views = cast(list[memoryview], list(iter(cursor.read_data, None)))
            assert len(views) == 300 and all(bytes(v) == b"payload of a frame" for v in views)
            del views
            cursor._c_pos, cursor._c_last_nano = 4096, 0
            for _ in iter(cursor.read_data, None):
                pass
            cursor.poll()

    rounds()  # warm up caches and free lists
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20):
        rounds()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes kept after 20 rounds of 1,200 frames"
    writer._c_detach()
    cursor._c_detach()


def test_a_dropped_frame_is_refilled_but_nothing_a_caller_holds_changes(jdir: str) -> None:
    """The cursor refills the Frame (its ints, its payload view) the caller dropped: what the caller
    still holds (the frame, its view, an int, a buffer export, a released view) never changes."""
    payloads = [bytes([i]) * (10 + i) for i in range(12)]
    with Writer.create(jdir, "j", service=None) as writer:
        nanos = [writer.write(p, 1000 + i, 2**31 + i) for i, p in enumerate(payloads)]
    expected = [(nanos[i], 1000 + i, 2**31 + i, payloads[i]) for i in range(12)]

    def check(f: Frame, i: int) -> None:
        assert (f.nano, f.msg_type, f.source, bytes(f.data), f.seq) == (*expected[i], i)
        assert hash(f.data) == hash(payloads[i]) and len(f.data) == len(payloads[i])

    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "j", "begin")
        read = cast(Callable[[], Frame], reader.read)
        whole = read()
        view = read().data
        ints = (f := read()).nano, f.source, f.seq
        del f
        exported = np.frombuffer(read().data, np.uint8)
        (released := read()).data.release()
        del released
        hash(read().data)  # a read-only view caches its hash: a refilled view must not keep it
        refilled = [read() for _ in range(3)]  # the first refills the frame of the hashed view
        for i in range(9, 12):
            check(read(), i)  # each dropped before the next read: refilled
        check(whole, 0)
        assert bytes(view) == payloads[1]
        assert ints == (nanos[2], 2**31 + 2, 2)
        assert exported.tobytes() == payloads[3]
        for i, f in enumerate(refilled, 6):
            check(f, i)


def test_a_nano_the_caller_keeps_never_changes_one_it_dropped_is_refilled(jdir: str) -> None:
    """write() refills the int it returned last if the caller dropped it: kept ones stay as written."""
    with Writer.create(jdir, "j", service=None) as writer:
        kept = []
        for i in range(200):
            nano = writer.write(b"x", 1)
            if i % 3 == 0:
                kept.append(nano)
            del nano
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "j", "begin")
        read = [f.nano for f in iter(reader.read, None)]
    assert kept == read[::3]


@pytest.mark.skipif(native is None, reason="the Reader runs on the native backend")
def test_read_data_refills_the_view_the_caller_dropped_never_one_it_holds(jdir: str) -> None:
    """read_data() points the payload view the caller dropped at the next payload (no new object);
    a view the caller holds, exported, released or hashed keeps its payload and its hash."""
    payloads = [bytes([i]) * (10 + i) for i in range(12)]
    with Writer.create(jdir, "j", service=None) as writer:
        for p in payloads:
            writer.write(p, 1)
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "j", "begin")
        read_data = cast(Callable[[], memoryview], reader.read_data)
        first, second = read_data(), read_data()
        address = id(first)
        del first
        decoy = memoryview(b"takes the memory of a freed view")  # so that a new view gets another id
        third = read_data()
        assert id(third) == address and bytes(third) == payloads[2], "the dropped view is refilled"
        exported = np.frombuffer(read_data(), np.uint8)  # payload 3, exported: never refilled
        read_data().release()  # payload 4
        hashed = read_data()
        assert hash(hashed) == hash(payloads[5])
        del hashed
        rest = [read_data() for _ in range(6)]  # payload 6 refills the view that was hashed
        assert [(bytes(v), hash(v)) for v in rest] == [(p, hash(p)) for p in payloads[6:]]
        assert bytes(second) == payloads[1] and bytes(third) == payloads[2]
        assert exported.tobytes() == payloads[3] and bytes(decoy).startswith(b"takes")
        assert read_data() is None


@pytest.mark.skipif(native is None, reason="the Reader runs on the native backend")
def test_read_data_of_one_journal_is_the_c_method_and_of_several_the_merge(jdir: str) -> None:
    """No Python frame per call with one journal (the bench's throughput rests on it)."""
    for name in ("a", "b"):
        with Writer.create(jdir, name, service=None) as writer:
            writer.write(name.encode(), 1)
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "a")
        assert type(reader.read_data).__name__ == "builtin_function_or_method"
        reader.add_journal(jdir, "b")
        assert type(reader.read_data).__name__ == "function"
        reader.remove_journal(jdir, "a")
        assert type(reader.read_data).__name__ == "builtin_function_or_method"
        data = reader.read_data()
        assert data is not None and bytes(data) == b"b"
