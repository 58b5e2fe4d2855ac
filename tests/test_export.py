"""`mmipc export`: real command processes writing Parquet, Arrow, CSV and .npy from real journals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from conftest import Procs

pa = pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="the analysis extra (pyarrow) is not installed")
analysis = pytest.importorskip("mmipc.analysis")
import ctp_fields  # noqa: E402

from mmipc.journal import _backend as backend  # noqa: E402


def mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def md(procs: Procs, jdir: str) -> str:
    child = procs.spawn("ctp_writer.py", jdir, "md", "ctp-v6.6.1", "300", "--mixed")
    child.expect_line("wrote 300")
    procs.finish(child)
    return jdir


def test_parquet_holds_every_row_and_records_where_it_came_from(md: str, tmp_path: Any) -> None:
    out = str(tmp_path / "md.parquet")
    done = mmipc("export", md, "md", "-o", out)
    assert done.returncode == 0 and "exported 300 frame(s) of msg_type 101" in done.stdout, done.stderr
    assert pq.read_table(out).equals(analysis.to_arrow(md, "md"))
    meta = json.loads(pq.read_metadata(out).metadata[b"mmipc"])
    nanos = analysis.to_numpy(md, "md")["nano"].astype("i8")
    assert meta["journals"] == ["md"] and meta["directory"] == md and meta["msg_type"] == 101
    assert meta["frames"] == 300 and (meta["first_nano"], meta["last_nano"]) == (nanos[0], nanos[-1])
    assert meta["schema"]["name"] == "DepthMarketDataV661" and meta["schema"]["size"] == 584


def test_arrow_csv_and_npy_hold_the_same_rows(md: str, tmp_path: Any) -> None:
    want = analysis.to_numpy(md, "md")
    for fmt in ("arrow", "csv", "npy"):
        done = mmipc(
            "export", md, "md", "--format", fmt, "-o", str(tmp_path / f"md.{fmt}"), "--msg-type", "101"
        )
        assert done.returncode == 0, done.stderr
    table = pa.ipc.open_file(str(tmp_path / "md.arrow")).read_all()
    assert table.column("InstrumentID").to_pylist() == [v.decode() for v in want["InstrumentID"]]
    assert json.loads(table.schema.metadata[b"mmipc"])["journals"] == ["md"]
    import pyarrow.csv as csv

    rows = csv.read_csv(str(tmp_path / "md.csv"))
    assert rows.column("BidPrice1").to_pylist() == want["BidPrice1"].tolist()
    assert rows.column("ExchangeInstID").to_pylist() == [v.decode() for v in want["ExchangeInstID"]]
    assert json.load(open(tmp_path / "md.csv.meta.json"))["mmipc"]["frames"] == 300
    assert (np.load(str(tmp_path / "md.npy")) == want).all()


def test_export_is_chunked_and_honours_since_and_until(md: str, tmp_path: Any) -> None:
    nanos = analysis.to_numpy(md, "md")["nano"].astype("i8")
    out = str(tmp_path / "part.npy")
    done = mmipc("export", md, "md", "-o", out, "--since", str(nanos[100]), "--until", str(nanos[199]))
    assert done.returncode == 0 and "exported 100 frame(s)" in done.stdout, done.stderr
    assert (np.load(out)["nano"].astype("i8") == nanos[100:200]).all()
    from mmipc.analysis._export import export
    from mmipc.analysis._scan import make_query

    query = make_query(md, ["md"], None, None, None, None)
    assert export(query, str(tmp_path / "small.parquet"), "parquet", batch_frames=7).frames == 300
    meta = pq.ParquetFile(str(tmp_path / "small.parquet")).metadata
    assert all(meta.row_group(i).num_rows <= 7 for i in range(meta.num_row_groups))  # one batch at a time


def test_export_refuses_to_overwrite_without_force(md: str, tmp_path: Any) -> None:
    out = tmp_path / "md.parquet"
    out.write_text("precious")
    refused = mmipc("export", md, "md", "-o", str(out))
    assert refused.returncode == 1 and f"{out} exists: pass --force" in refused.stderr
    assert out.read_text() == "precious"
    assert mmipc("export", md, "md", "-o", str(out), "--force").returncode == 0
    assert pq.read_table(str(out)).num_rows == 300


def test_bad_input_gives_one_line_and_no_output(md: str, tmp_path: Any) -> None:
    missing = mmipc("export", md, "nope", "-o", str(tmp_path / "x.parquet"))
    assert missing.returncode == 1 and missing.stderr.startswith("mmipc export: no journal nope in")
    unknown = mmipc("export", md, "md", "-o", str(tmp_path / "x.txt"))
    assert unknown.returncode == 1 and "cannot tell the format" in unknown.stderr
    page = os.path.join(md, "md.00000001.journal")
    with open(page, "r+b") as file:
        file.seek(4096 + 4)
        file.write(b"\xff\xff\xff\xff")  # msg_type of page 1's first frame: the end-of-page marker
    corrupt = mmipc("export", md, "md", "-o", str(tmp_path / "x.parquet"))
    assert corrupt.returncode == 1 and f"corrupt journal page {page} at offset 4096" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr and os.listdir(tmp_path) == ["journals"]


def test_ticks_written_are_the_ticks_exported(md: str) -> None:
    got = analysis.to_numpy(md, "md")
    for seq in (0, 151, 299):
        tick: Any = ctp_fields.tick("ctp-v6.6.1", seq)
        assert got["BandingLowerPrice"][seq] == tick.BandingLowerPrice and got["Volume"][seq] == tick.Volume


def test_the_benchmark_script_runs_and_agrees_with_itself(tmp_path: Any) -> None:
    """benchmarks/analysis_bench.py on a small journal: every child runs, and the Reader loop's array
    equals to_numpy's (the script checks it). No figure is asserted."""
    pytest.importorskip("pandas", reason="the analysis extra (pandas) is not installed")
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "analysis_bench.py")
    out = str(tmp_path / "bench.json")
    done = subprocess.run(
        [sys.executable, script, "--frames", "600", "--rounds", "1", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.load(open(out))["results"]
    measured = ["floor", "to_numpy[python]", "reader_loop[python]", "export_parquet", "pandas_parquet"]
    if backend.native is not None:
        measured += ["to_numpy[native]", "reader_loop[native]"]
    assert all(results[k]["frames"] == 600 for k in measured)
    assert "| python |" in done.stdout and "| `mmipc export --format parquet` | 600 |" in done.stdout
    assert results["floor"]["result_mb"] == results["to_numpy[python]"]["result_mb"]
    assert "Floor (" in done.stdout


def test_export_shows_a_progress_bar_on_a_terminal_only(md: str, tmp_path: Any) -> None:
    import pty

    controller, terminal = pty.openpty()
    args = [sys.executable, "-m", "mmipc", "export", md, "md", "-o", str(tmp_path / "md.parquet")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert proc.wait(timeout=120) == 0
    assert b"export parquet [" in shown and b"100%" in shown
    piped = mmipc("export", md, "md", "-o", str(tmp_path / "again.parquet"))
    assert piped.returncode == 0 and piped.stderr == ""


def test_arrow_and_parquet_schemas_record_the_frame_count_and_time_range(md: str, tmp_path: Any) -> None:
    """The Arrow schema is written before the rows: the count and the range are counted first."""
    nanos = analysis.to_numpy(md, "md", since=1)["nano"].astype("i8")
    parquet, arrow = str(tmp_path / "md.parquet"), str(tmp_path / "md.arrow")
    assert mmipc("export", md, "md", "-o", parquet, "--since", str(nanos[10])).returncode == 0
    assert mmipc("export", md, "md", "-o", arrow, "--until", str(nanos[-11])).returncode == 0
    for schema, want in (
        (pq.read_table(parquet).schema, (290, nanos[10], nanos[-1])),
        (pq.read_schema(parquet), (290, nanos[10], nanos[-1])),
        (pa.ipc.open_file(arrow).schema, (290, nanos[0], nanos[-11])),
    ):
        meta = json.loads(schema.metadata[b"mmipc"])
        assert (meta["frames"], meta["first_nano"], meta["last_nano"]) == want, meta


def test_payload_fields_named_like_mmipc_columns_are_exported_with_a_prefix(jdir: str, tmp_path: Any) -> None:
    import ctypes

    from mmipc import Writer

    class Clash(ctypes.Structure):
        _fields_ = [("nano", ctypes.c_int64), ("journal", ctypes.c_char * 8), ("source", ctypes.c_uint32)]

    with Writer.create(jdir, "clash", service=None, schemas={7: Clash}) as writer:
        for i in range(5):
            writer.write(Clash(nano=-i, journal=b"exch%d" % i, source=1000 + i), 7)
    out = str(tmp_path / "clash.parquet")
    done = mmipc("export", jdir, "clash", "-o", out)
    assert done.returncode == 0 and "exported 5 frame(s)" in done.stdout, done.stderr
    table = pq.read_table(out)
    assert table.column_names == [
        "nano",
        "journal",
        "source",
        "payload_nano",
        "payload_journal",
        "payload_source",
    ]
    assert table.column("payload_nano").to_pylist() == [0, -1, -2, -3, -4]
    assert table.column("payload_journal").to_pylist() == [f"exch{i}" for i in range(5)]
    assert table.column("journal").to_pylist() == ["clash"] * 5
    assert json.loads(table.schema.metadata[b"mmipc"])["renamed"]["nano"] == "payload_nano"
    rows = analysis.to_numpy(jdir, "clash")
    assert rows["payload_source"].tolist() == [1000, 1001, 1002, 1003, 1004] and set(rows["source"]) == {0}


def test_export_never_replaces_a_journal_file_even_with_force(md: str, tmp_path: Any) -> None:
    """A page, lock, schema or bells file of any journal (this one's, or another's elsewhere): one line,
    and the file and its frames are untouched."""
    other = tmp_path / "other"
    other.mkdir()
    from mmipc import Writer

    with Writer.create(str(other), "fills", service=None) as writer:
        writer.write(b"a fill", 3)
    targets = [
        other / "fills.00000000.journal",
        other / "fills.lock",
        other / "fills.bells",
        other / "fills.00000007.journal",  # a page not made yet
        tmp_path / "md.schema.json",
        os.path.join(md, "md.00000000.journal"),
    ]
    for target in targets:
        before = open(target, "rb").read() if os.path.exists(target) else None
        for fmt in ("parquet", "npy"):
            done = mmipc("export", md, "md", "--format", fmt, "-o", str(target), "--force")
            assert done.returncode == 1 and "an export never replaces a journal's files" in done.stderr, (
                target,
                done.stderr,
            )
            assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
            after = open(target, "rb").read() if os.path.exists(target) else None
            assert after == before, target
    from mmipc import Reader

    with Reader.create("check", service=None) as reader:
        reader.add_journal(str(other), "fills")
        frame = reader.read()
        assert frame is not None and bytes(frame.data) == b"a fill"
    assert len(analysis.to_numpy(md, "md")) == 300


@pytest.mark.once  # .ci/run: native pass only (the scan reads pages with numpy, whatever the backend)
def test_export_scans_an_evenly_filled_page_once(jdir: str, tmp_path: Any, monkeypatch: Any) -> None:
    """Export counts its rows before it writes them: the count keeps each evenly filled page as a
    range, so the pass that writes reads its frames without scanning its headers again; a page with
    gaps (frames of another msg_type between) is scanned again, its offsets not kept."""
    from mmipc import Writer
    from mmipc.analysis import _scan
    from mmipc.analysis._export import export
    from mmipc.analysis._scan import make_query

    with Writer.create(jdir, "two", service=None, page_size=64 * 1024) as writer:
        for i in range(4000):  # 2.6 pages of msg_type 7 alone, then two interleaved types
            writer.write(i.to_bytes(8, "little") * 4, msg_type=7 if i < 2500 or i % 4 else 8)
    scanned: list[int] = []
    real = _scan.scan_page

    def counted(page: Any, stop: int) -> Any:  # the real scan, counted
        scanned.append(page.header.page_no)
        return real(page, stop)

    monkeypatch.setattr(_scan, "scan_page", counted)
    query = make_query(jdir, ["two"], 7, None, None, np.dtype([("i", "<u8"), ("rest", "<u8", (3,))]))
    done = export(query, str(tmp_path / "two.npy"), "npy")
    want = [i for i in range(4000) if i < 2500 or i % 4]
    assert done.frames == len(want) and np.load(str(tmp_path / "two.npy"))["i"].tolist() == want
    pages = sorted(set(scanned))  # pages 0 and 1 hold msg_type 7 alone; the last one, both types
    assert len(pages) >= 4 and scanned.count(0) == scanned.count(1) == 1 and scanned.count(pages[-1]) == 2, (
        scanned
    )
