"""mmipc.analysis: journals written by real writer processes, read back through numpy, Arrow, Parquet.

Every field of every CTP frame is compared with what a `Reader` hands out for the same frame, so the
page scan (strided views, gathers, merges) is checked against the reference reader.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from typing import Any

import numpy as np
import pytest

from conftest import Child, Procs
from mmipc import CorruptJournalError, Reader, UsageError
from mmipc.ctp import LAYOUTS, to_dict

pa = pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="the analysis extra (pyarrow) is not installed")
analysis = pytest.importorskip("mmipc.analysis")
import ctp_fields  # noqa: E402  (tests/procs, on sys.path through conftest)

MD = ctp_fields.MD_MSG


def write_journal(procs: Procs, jdir: str, name: str, layout: str, count: int, *extra: str) -> None:
    child = procs.spawn("ctp_writer.py", jdir, name, layout, str(count), *extra)
    child.expect_line(f"wrote {count}")
    procs.finish(child)


def reader_frames(jdir: str, names: list[str]) -> list[Any]:
    """(journal, nano, source, fields) of every tick, in Reader's order: the reference."""
    out = []
    with Reader.create(f"ref-{os.getpid()}", service=None) as reader:
        for name in names:
            reader.add_journal(jdir, name)
        while (frame := reader.read()) is not None:
            if frame.msg_type == MD:
                cls = LAYOUTS["ctp" if len(frame.data) == 408 else "ctp-v6.6.1"]
                out.append((frame.journal.name, frame.nano, frame.source, to_dict(frame.as_struct(cls))))
    return out


def numpy_rows(array: Any, names: list[str]) -> list[Any]:
    rows = []
    for row in array:
        fields = {}
        for name in array.dtype.names[3:]:
            value = row[name]
            fields[name] = value.decode() if isinstance(value, bytes) else value.item()
        rows.append((names[row["journal"]], int(row["nano"].astype("i8")), int(row["source"]), fields))
    return rows


def arrow_rows(table: Any) -> list[Any]:
    rows = []
    for record in table.to_pylist():
        nano = pa.scalar(record.pop("nano"), pa.timestamp("ns")).value
        rows.append((record.pop("journal"), nano, record.pop("source"), record))
    return rows


def assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"row {i} differs"


@pytest.mark.parametrize("layout", ["ctp", "ctp-v6.6.1"])
@pytest.mark.parametrize("mixed", [False, True], ids=["one-type", "mixed"])
def test_every_ctp_field_round_trips_through_numpy_arrow_and_parquet(
    procs: Procs, jdir: str, tmp_path: Any, layout: str, mixed: bool
) -> None:
    write_journal(procs, jdir, "md", layout, 400, *(["--mixed"] if mixed else []))  # about 3 pages
    want = reader_frames(jdir, ["md"])
    assert len(want) == 400 and want[-1][3]["InstrumentID"] == "IF2612"
    assert_same(numpy_rows(analysis.to_numpy(jdir, "md"), ["md"]), want)
    table = analysis.to_arrow(jdir, "md", msg_type=MD)
    assert table.schema.field("nano").type == pa.timestamp("ns")
    assert pa.types.is_dictionary(table.schema.field("InstrumentID").type)  # 4 values in 400 rows
    cls: Any = LAYOUTS[layout]
    assert table.schema.names == ["nano", "journal", "source", *(f[0] for f in cls._fields_)]  # no padding
    assert_same(arrow_rows(table), want)
    out = str(tmp_path / "md.parquet")
    pq.write_table(table, out)
    assert_same(arrow_rows(pq.read_table(out)), want)


def test_a_strided_run_is_a_view_of_the_page_not_a_walk(procs: Procs, jdir: str) -> None:
    from mmipc.analysis._scan import scan_page
    from mmipc.journal._files import page_path
    from mmipc.journal._page import MappedPage

    write_journal(procs, jdir, "md", "ctp", 100)
    page = MappedPage.open(page_path(jdir, "md", 0), "md", 0)
    try:
        offsets, types, nanos, lengths, ended = scan_page(page, page.page_size)
        assert len(offsets) == 100 and not ended and (np.diff(offsets) == 440).all()
        assert (types == MD).all() and (lengths == 440).all() and (np.diff(nanos) >= 0).all()
    finally:
        page.release()


def test_merged_order_equals_readers_order_with_ties(procs: Procs, jdir: str) -> None:
    base = 1_700_000_000_000_000_000
    write_journal(procs, jdir, "a", "ctp", 300, "--stamps", str(base), "10")
    write_journal(procs, jdir, "b", "ctp", 300, "--stamps", str(base), "5")  # ties with a every 10 ns
    write_journal(procs, jdir, "c", "ctp", 200, "--stamps", str(base + 3), "7", "--mixed")
    names = ["b", "a", "c"]
    want = reader_frames(jdir, names)
    assert_same(numpy_rows(analysis.to_numpy(jdir, names), names), want)
    assert_same(arrow_rows(analysis.to_arrow(jdir, names)), want)
    batches = list(analysis.iter_batches(jdir, names, batch_frames=50))
    assert all(b.num_rows <= 50 for b in batches)
    assert_same(arrow_rows(pa.Table.from_batches(batches)), want)


def test_since_and_until_select_like_a_reader(procs: Procs, jdir: str) -> None:
    base = 1_700_000_000_000_000_000
    write_journal(procs, jdir, "md", "ctp", 400, "--stamps", str(base), "1000")
    got = analysis.to_numpy(jdir, "md", since=base + 150_000, until=base + 320_000)
    nanos = got["nano"].astype("i8")
    assert nanos[0] == base + 150_000 and nanos[-1] == base + 320_000 and len(got) == 171
    assert got["Volume"][0] == ctp_fields.tick("ctp", 150).Volume


def test_a_live_journal_is_read_up_to_its_last_committed_frame(procs: Procs, jdir: str) -> None:
    child = procs.spawn("ctp_writer.py", jdir, "md", "ctp", "250", "--hold", stdin=subprocess.PIPE)
    child.expect_line("wrote 250")
    assert len(analysis.to_numpy(jdir, "md")) == 250
    tell(child, "more 100")
    child.expect_line("wrote 350")
    tell(child, "claim")  # a filled frame whose commit word is still 0
    child.expect_line("claimed")
    array = analysis.to_numpy(jdir, "md")
    assert len(array) == 350 and array["Volume"][-1] == ctp_fields.tick("ctp", 349).Volume
    assert analysis.to_arrow(jdir, "md").num_rows == 350
    assert child.proc.poll() is None  # the writer is still live


def tell(child: Child, line: str) -> None:
    assert child.proc.stdin is not None
    child.proc.stdin.write(line + "\n")
    child.proc.stdin.flush()


def test_a_timestamp_older_than_the_frame_before_is_named_with_its_offset(procs: Procs, jdir: str) -> None:
    write_journal(procs, jdir, "md", "ctp", 100)
    path = os.path.join(jdir, "md.00000000.journal")
    with open(path, "r+b") as page:
        page.seek(4096 + 440 * 60 + 8)  # nano of frame 60
        page.write((1).to_bytes(8, "little"))
    with pytest.raises(
        CorruptJournalError, match=f"{path} at offset {4096 + 440 * 60}: timestamp 1 is older"
    ):
        analysis.to_numpy(jdir, "md")


def test_a_corrupt_page_is_named_with_its_offset(procs: Procs, jdir: str) -> None:
    write_journal(procs, jdir, "md", "ctp", 100)
    path = os.path.join(jdir, "md.00000000.journal")
    with open(path, "r+b") as page:
        page.seek(4096 + 440 * 50 + 20)  # payload_len of frame 50
        page.write((1000).to_bytes(4, "little"))
    with pytest.raises(CorruptJournalError, match=f"{path} at offset {4096 + 440 * 50}"):
        analysis.to_numpy(jdir, "md")


def test_a_payload_that_fails_its_checksum_is_named_with_its_offset(jdir: str) -> None:
    from mmipc import Writer

    with Writer.create(jdir, "sums", service=None, checksum=True, page_size=64 * 1024) as writer:
        for i in range(3000):  # two pages, read in strided runs; the checksums are verified one by one
            writer.write(i.to_bytes(8, "little"), msg_type=7 if i != 60 else 8)
    assert len(analysis.to_numpy(jdir, "sums", msg_type=7, schema=np.dtype([("i", "<u8")]))) == 2999
    path = os.path.join(jdir, "sums.00000000.journal")
    with open(path, "r+b") as page:
        page.seek(4096 + 40 * 50 + 32)  # the payload of frame 50, in the middle of a run
        page.write(b"\xff")
    with pytest.raises(CorruptJournalError, match=f"{path} at offset {4096 + 40 * 50}: payload checksum"):
        analysis.to_numpy(jdir, "sums", msg_type=7, schema=np.dtype([("i", "<u8")]))
    with open(path, "r+b") as page:
        page.seek(4096 + 40 * 50 + 32)
        page.write(b"\x32")  # frame 50's payload byte back (50 little-endian)
        page.seek(4096 + 40 * 60 + 32 + 7)
        page.write(b"\xff")  # frame 60: msg_type 8, not selected
    assert len(analysis.to_numpy(jdir, "sums", msg_type=7, schema=np.dtype([("i", "<u8")]))) == 2999
    with pytest.raises(CorruptJournalError, match=f"{path} at offset {4096 + 40 * 60}: payload checksum"):
        analysis.to_numpy(jdir, "sums", msg_type=8, schema=np.dtype([("i", "<u8")]))


def test_missing_journals_and_unknown_types_are_clear_errors(procs: Procs, jdir: str) -> None:
    with pytest.raises(analysis.JournalNotFoundError, match="no journal nope in"):
        analysis.to_numpy(jdir, "nope")
    write_journal(procs, jdir, "md", "ctp", 10)
    with pytest.raises(UsageError, match="declare no schema for msg_type 5"):
        analysis.to_numpy(jdir, "md", msg_type=5)
    with pytest.raises(CorruptJournalError, match="carries 408 bytes, but its schema DepthMarketDataV661"):
        analysis.to_numpy(jdir, "md", schema="ctp-v6.6.1")


@pytest.mark.parametrize(
    "call",
    [analysis.to_numpy, analysis.to_arrow, analysis.to_pandas, analysis.iter_batches, analysis.iter_arrays],
)
def test_every_function_checks_its_selection_the_same_way(procs: Procs, jdir: str, call: Any) -> None:
    write_journal(procs, jdir, "md", "ctp", 10)
    with pytest.raises(UsageError, match=r"unknown keyword\(s\) msgtype: the selection takes msg_type"):
        call(jdir, "md", msgtype=MD)  # a typo is not silently ignored
    with pytest.raises(UsageError, match="since must be a time in ns since the epoch"):
        call(jdir, "md", since="09:30")
    with pytest.raises(UsageError, match="until must be a time in ns"):
        call(jdir, "md", until=-1)
    assert len(analysis.to_numpy(jdir, "md", since=np.int64(0))) == 10  # numpy's ints are ints


def test_nested_structs_and_fixed_arrays_become_arrow_structs_and_lists(jdir: str) -> None:
    from mmipc import Writer

    class Level(ctypes.Structure):
        _fields_ = [("price", ctypes.c_double), ("volume", ctypes.c_int32)]

    class Book(ctypes.Structure):
        _fields_ = [("symbol", ctypes.c_char * 8), ("levels", Level * 3), ("flags", ctypes.c_uint8 * 2 * 2)]

    with Writer.create(jdir, "book", service=None, schemas={3: Book}) as writer:
        for i in range(5):
            book = Book(symbol=b"ab%d" % i)
            book.levels[2].price, book.levels[2].volume, book.flags[1][0] = i + 0.5, i, i
            writer.write(book, msg_type=3)
    record = analysis.to_arrow(jdir, "book").to_pylist()[4]
    assert record["symbol"] == "ab4" and record["levels"][2] == {"price": 4.5, "volume": 4}
    assert record["flags"] == [[0, 0], [4, 0]]
    assert analysis.to_numpy(jdir, "book")["levels"]["price"][4, 2] == 4.5


def test_to_pandas_has_timestamps_and_categories(procs: Procs, jdir: str) -> None:
    pytest.importorskip("pandas", reason="the analysis extra (pandas) is not installed")
    write_journal(procs, jdir, "md", "ctp", 50)
    frame = analysis.to_pandas(jdir, "md")
    assert str(frame["nano"].dtype) == "datetime64[ns]" and frame["InstrumentID"].dtype == "category"
    assert list(frame["InstrumentID"][:4]) == ["rb2601", "au2602", "cu2601", "IF2612"]


def test_to_polars_when_polars_is_installed(procs: Procs, jdir: str) -> None:
    pytest.importorskip("polars", reason="polars is not installed (it is not part of the analysis extra)")
    write_journal(procs, jdir, "md", "ctp", 20)
    frame = analysis.to_polars(jdir, "md")
    assert frame.height == 20 and str(frame.schema["nano"]) == "Datetime(time_unit='ns', time_zone=None)"
    assert frame["InstrumentID"].to_list()[:4] == ["rb2601", "au2602", "cu2601", "IF2612"]
    assert frame["Volume"].to_list() == [ctp_fields.tick("ctp", i).Volume for i in range(20)]


def test_to_numpy_keeps_a_few_integers_per_page_until_it_fills_the_result(jdir: str) -> None:
    """The memory bound (the result plus one page): to_numpy counts every page before it allocates
    the result, and what it keeps of an evenly filled page is a range, not 16 bytes per frame (with
    8-byte payloads, 24-byte rows, that index would be two thirds of the result)."""
    from mmipc import Writer
    from mmipc.analysis._api import select
    from mmipc.analysis._scan import page_indexes

    with Writer.create(jdir, "small", service=None, page_size=64 * 1024) as writer:
        for i in range(6000):  # about 4 pages of one type, then a page of two interleaved types
            writer.write(i.to_bytes(8, "little"), msg_type=7)
        for i in range(6000, 7000):
            writer.write(i.to_bytes(8, "little"), msg_type=7 if i % 3 else 8)
    query = select(jdir, "small", {"msg_type": 7, "schema": np.dtype([("i", "<u8")])})
    compact = [index.compact() for index in page_indexes(query, "small")]
    assert all(index.nanos is None for index in compact)
    assert isinstance(compact[0].offsets, range) and len(compact[0].offsets) > 1000
    assert not isinstance(compact[-1].offsets, range)  # frames of type 8 leave gaps: offsets kept
    rows = analysis.to_numpy(jdir, "small", msg_type=7, schema=np.dtype([("i", "<u8")]))
    want = [i for i in range(7000) if i < 6000 or i % 3]
    assert rows["i"].tolist() == want and (rows["journal"] == 0).all()
    assert rows.dtype.names == ("nano", "journal", "source", "i")


@pytest.mark.once  # .ci/run: native pass only (to_numpy reads pages with numpy, whatever the backend)
def test_to_numpy_peaks_at_the_result_plus_one_page(jdir: str) -> None:
    """The bound measured: the process's peak resident memory (VmHWM) grows by the result plus one
    mapped page at most. With 8-byte payloads (24-byte rows), an index of 16 bytes per frame would
    add two thirds of the result and break it."""
    import sys

    from mmipc import Writer

    frames, page_size = 1_000_000, 4 << 20
    with Writer.create(jdir, "small", service=None, page_size=page_size) as writer:
        for i in range(frames):
            writer.write(i.to_bytes(8, "little"), msg_type=7)
    measure = (
        "import sys, numpy as np\n"
        "from mmipc.analysis import to_numpy\n"
        "def status(key):\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ':'))\n"
        "before = status('VmRSS')\n"
        "rows = to_numpy(sys.argv[1], 'small', msg_type=7, schema=np.dtype([('i', '<u8')]))\n"
        "grown = status('VmHWM') - before\n"
        "assert (rows['i'] == np.arange(len(rows))).all()\n"
        "print(len(rows), rows.nbytes, grown)"
    )
    out = subprocess.run([sys.executable, "-c", measure, jdir], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, result, grown = map(int, out.stdout.split())
    assert count == frames and result == 24 * frames
    assert grown <= result + page_size + (2 << 20), f"peak grew {grown} bytes for a {result}-byte result"


def _resident_bytes(address: int) -> int:
    """The resident set (smaps Rss) of the mapping of this process that holds `address`."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            first = line.split()[0]
            if "-" in first and not first.endswith(":"):
                start, end = (int(part, 16) for part in first.split("-"))
                inside = start <= address < end
            elif inside and first == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.once  # .ci/run: native pass only (the scan maps pages itself, whatever the backend)
@pytest.mark.skipif(
    tuple(map(int, os.uname().release.split(".")[:2])) < (5, 14), reason="MADV_POPULATE_READ is Linux 5.14+"
)
def test_a_page_is_mapped_in_one_call_before_it_is_read(jdir: str) -> None:
    """`populate` maps the part of a page to be read before anything of it is read: the mapping is
    resident (smaps Rss) though no byte of it was touched. Without it, the scan and the copy of
    to_numpy each took a page fault per 16 pages of 4 KiB (about 7,000 per pass over 440 MB)."""
    from mmipc import Writer
    from mmipc.analysis._scan import populate
    from mmipc.journal._files import page_path
    from mmipc.journal._page import MappedPage

    with Writer.create(jdir, "pop", service=None, page_size=4 << 20) as writer:
        for i in range(5000):
            writer.write(i.to_bytes(8, "little") * 50, msg_type=7)  # 432-byte frames: about 2 MiB
    page = MappedPage.open(page_path(jdir, "pop", 0), "pop", 0)
    end = page.tail()[0]
    page.release()
    page = MappedPage.open(page_path(jdir, "pop", 0), "pop", 0)  # a fresh mapping: nothing read yet
    try:
        address = np.frombuffer(page.mm, np.uint8).ctypes.data  # (the view is dropped at once)
        assert _resident_bytes(address) == 0 and end > 2 << 20
        populate(page, 4096, end)
        assert _resident_bytes(address) >= (end - 4096) // 4096 * 4096
    finally:
        page.release()
