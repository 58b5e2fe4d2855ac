"""Declared layouts through the real command line: `write --schema` declares them, and `read`, `tail`
and `inspect` decode them by default (nested structs, fixed arrays, char fields as text), with
`--struct` as the override."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from typing import Any

import pytest

from conftest import Child, Procs, wait_for
from mmipc import Writer
from mmipc.ctp import DepthMarketDataV636
from mmipc.journal._schema import load_schemas, to_struct


class Level(ctypes.Structure):
    _fields_ = [("price", ctypes.c_double), ("volume", ctypes.c_int32)]


class Book(ctypes.Structure):
    _fields_ = [("symbol", ctypes.c_char * 8), ("levels", Level * 2), ("grid", ctypes.c_int16 * 3 * 2)]


class Trade(ctypes.Structure):
    _fields_ = [("trade_id", ctypes.c_char * 12), ("qty", ctypes.c_uint32)]


def mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300)


def shown(output: str) -> list[str]:
    """The frame lines `mmipc read` printed (each ends with its latency)."""
    return [line for line in output.splitlines() if line.endswith(" us") and not line.startswith("summary")]


def write_book_journal(jdir: str) -> None:
    """A tick (101, declared "ctp"), a book (7, declared Book) and an opaque frame (9, undeclared)."""
    book = Book(symbol=b"au2602")
    book.levels[1].price, book.levels[1].volume, book.grid[1][2] = 612.5, 4, -3
    with Writer.create(jdir, "md", service=None, schemas={101: "ctp", 7: Book}) as writer:
        writer.write(
            DepthMarketDataV636(InstrumentID=b"rb2601", LastPrice=3712.5, UpdateTime=b"09:30:00"), 101
        )
        writer.write(book, 7)
        writer.write(b"opaque", 9)


def test_read_decodes_declared_types_and_struct_overrides(jdir: str) -> None:
    write_book_journal(jdir)
    read = ["read", jdir, "md", "--since", "0", "--count", "3", "--standalone", "--timeout", "30"]
    out = mmipc(*read)
    assert out.returncode == 0, out.stderr
    tick, book, opaque = shown(out.stdout)
    assert tick.startswith("rb2601") and "last=3712.5" in tick
    assert book.startswith(
        "symbol=au2602 levels=[{'price': 0.0, 'volume': 0}, {'price': 612.5, 'volume': 4}]"
    )
    assert "grid=[[0, 0, 0], [0, 0, -3]]" in book
    assert opaque.startswith("md") and "type 9" in opaque and "6 bytes" in opaque
    forced = mmipc(*read, "--struct", "ctp-v6.6.1")
    assert forced.returncode == 0, forced.stderr
    lines = shown(forced.stdout)
    assert "408 bytes" in lines[0] and "type 7" in lines[1]  # no frame is a v6.6.1 tick: none decoded


def test_inspect_decodes_declared_types_and_struct_overrides(jdir: str) -> None:
    write_book_journal(jdir)
    out = mmipc("inspect", jdir, "md")
    assert out.returncode == 0, out.stderr
    rows = out.stdout.split("PAYLOAD\n")[1].splitlines()
    assert "rb2601" in rows[0] and "last=3712.5" in rows[0]
    assert "symbol=au2602 levels=[" in rows[1]
    assert rows[2].endswith("6f 70 61 71 75 65")  # undeclared: its bytes
    records = json.loads(mmipc("inspect", jdir, "md", "--json").stdout)["frames"]
    assert records[0]["payload"]["InstrumentID"] == "rb2601"
    assert records[1]["payload"]["levels"][1] == {"price": 612.5, "volume": 4}
    assert records[1]["payload"]["grid"] == [[0, 0, 0], [0, 0, -3]]
    assert records[2]["payload"] == b"opaque".hex()
    forced = json.loads(mmipc("inspect", jdir, "md", "--json", "--struct", "ctp-v6.6.1").stdout)["frames"]
    assert isinstance(forced[0]["payload"], str) and isinstance(forced[1]["payload"], str)  # hex


def test_a_following_tail_decodes_a_type_declared_after_it_started(jdir: str, procs: Procs) -> None:
    """A declaration is forever, but a journal can declare a new msg_type later (a restarted writer):
    a command that follows the journal must not keep the schema file it read first."""
    write_book_journal(jdir)
    tail = Child([sys.executable, "-m", "mmipc", "tail", jdir, "md", "-n", "3"])
    procs.started.append(tail)
    shown = [tail.expect_line("20") for _ in range(3)]  # lines start with the date
    assert "symbol=au2602" in shown[1] and "len=6" in shown[2]
    with Writer.create(jdir, "md", service=None, schemas={8: Trade}) as writer:
        writer.write(Trade(trade_id=b"T-000042", qty=7), 8)
    line = tail.expect_line("20")
    assert "type=8" in line and "trade_id=T-000042 qty=7" in line, line


def test_write_declares_its_frames_and_the_schema_flag_declares_more(jdir: str, tmp_path: Any) -> None:
    layout = tmp_path / "trade.json"
    layout.write_text(json.dumps({"name": "Trade", "size": 16, "fields": [
        {"name": "trade_id", "offset": 0, "type": "char", "size": 12},
        {"name": "qty", "offset": 12, "type": "u4"},
    ]}))  # fmt: skip
    args = ["write", jdir, "md", "--count", "4", "--rate", "0", "--standalone", "--struct", "ctp-v6.6.1"]
    out = mmipc(*args, "--schema", f"8={layout}", "--schema", "9=ctp")
    assert out.returncode == 0, out.stderr
    declared = load_schemas(jdir, "md")
    assert declared[101].name == "DepthMarketDataV661" and declared[9].name == "DepthMarketDataV636"
    assert declared[8] == to_struct(Trade) and [f.name for f in declared[199].fields] == ["count"]
    shown = mmipc("tail", jdir, "md", "--no-follow", "-n", "1").stdout
    assert "type=199" in shown and "count=4" in shown  # the end frame, decoded
    exported = mmipc("export", jdir, "md", "--msg-type", "101", "-o", str(tmp_path / "md.parquet"))
    assert exported.returncode == 0 and "exported 4 frame(s)" in exported.stdout, exported.stderr


@pytest.mark.once  # .ci/run: native pass only (the flags are refused before any journal is opened)
def test_bad_schema_flags_say_what_is_wrong_in_one_line(jdir: str, tmp_path: Any) -> None:
    (tmp_path / "bad.json").write_text('{"name": "X", "size": 4, "fields": [{"name": "a"}]}')
    cases = [
        (["--schema", "x=ctp"], 2, "'x=ctp' is not TYPE=LAYOUT"),
        (["--schema", "7=nope"], 2, "no layout 'nope' in mmipc.ctp"),
        (["--schema", f"7={tmp_path}/missing.json"], 2, "cannot read"),
        (["--schema", f"7={tmp_path}/bad.json"], 2, "has a field without a name and an offset"),
        (
            ["--schema", "101=ctp-v6.6.1"],
            2,
            "writes msg_type 101 as DepthMarketDataV636 (choose it with --struct)",
        ),
        (["--schema", "7=ctp", "--schema", "7=ctp-v6.6.1"], 2, "declares msg_type 7 twice"),
    ]
    for extra, code, message in cases:
        out = mmipc(
            "write", jdir, "md", "--count", "1", "--rate", "0", "--standalone", *extra
        )  # nothing made
        assert out.returncode == code and message in out.stderr, (extra, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert mmipc("write", jdir, "md", "--count", "1", "--rate", "0", "--standalone").returncode == 0
    again = mmipc(
        "write", jdir, "md", "--count", "1", "--rate", "0", "--standalone", "--struct", "ctp-v6.6.1"
    )
    assert again.returncode == 1 and "already declares msg_type 101 as DepthMarketDataV636" in again.stderr


def test_a_following_tail_reports_a_damaged_schema_once_and_goes_on_raw(jdir: str, procs: Procs) -> None:
    """The schema file damaged while `tail` follows: one line on stderr, then every frame, raw
    (types it decoded before stay decoded: a declaration is forever), instead of exiting."""
    write_book_journal(jdir)
    tail = Child([sys.executable, "-m", "mmipc", "tail", jdir, "md", "-n", "3"])
    procs.started.append(tail)
    assert "symbol=au2602" in [tail.expect_line("20") for _ in range(3)][1]
    with open(f"{jdir}/md.schema.json", "w") as damaged:
        damaged.write('{"not": "a schema')
    with Writer.create(jdir, "md", service=None) as writer:
        writer.write(Trade(trade_id=b"T-000042", qty=7), 8)
        writer.write(Trade(trade_id=b"T-000043", qty=8), 9)
        writer.write(Book(symbol=b"cu2601"), 7)
    raw = [tail.expect_line("20") for _ in range(3)]
    assert "type=8" in raw[0] and "len=16" in raw[0] and "type=9" in raw[1], raw
    assert "symbol=cu2601" in raw[2], raw
    assert tail.proc.poll() is None, tail.stderr()
    wait_for(lambda: "md.schema.json" in tail.stderr(), what="the report on stderr")  # its own pipe
    assert tail.stderr().count("md.schema.json") == 1, tail.stderr()
