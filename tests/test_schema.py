"""Self-describing journals: the schema file, its declaration by the writer, and Writer.write_at."""

from __future__ import annotations

import ctypes
import json
import os
import stat
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Procs
from mmipc import CorruptJournalError, Reader, UsageError, Writer
from mmipc.ctp import DepthMarketDataV636, DepthMarketDataV661
from mmipc.ctp import numpy_dtype as ctp_dtype
from mmipc.journal._schema import (
    _decode_at,
    decode,
    load_schemas,
    numpy_dtype,
    schema_path,
    struct_from_json,
    to_struct,
)


class Level(ctypes.Structure):
    _fields_ = [("price", ctypes.c_double), ("volume", ctypes.c_int32)]


class Book(ctypes.Structure):
    _fields_ = [
        ("symbol", ctypes.c_char * 8),
        ("levels", Level * 2),
        ("grid", ctypes.c_int16 * 3 * 2),
        ("ok", ctypes.c_bool),
        ("count", ctypes.c_long),
    ]


def test_a_declared_layout_is_stored_beside_the_journal_and_read_back(jdir: str) -> None:
    with Writer.create(
        jdir, "md", service=None, schemas={101: DepthMarketDataV636, 7: Book, 8: "ctp-v6.6.1"}
    ):
        pass
    path = schema_path(jdir, "md")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    stored = load_schemas(jdir, "md")
    assert stored == {
        101: to_struct(DepthMarketDataV636),
        7: to_struct(Book),
        8: to_struct(DepthMarketDataV661),
    }
    assert numpy_dtype(stored[101]) == ctp_dtype(DepthMarketDataV636)  # same names, offsets and size
    assert json.load(open(path))["types"]["7"]["fields"][2] == {
        "name": "grid",
        "offset": 40,
        "type": "i2",
        "shape": [2, 3],
    }


def test_decode_shows_text_lists_and_nested_structs_without_numpy() -> None:
    book = Book(symbol=b"rb2601", ok=True, count=-3)
    book.levels[1].price, book.grid[1][2] = 3712.5, 9
    got = decode(to_struct(Book), bytes(book))
    assert got["symbol"] == "rb2601" and got["levels"][1] == {"price": 3712.5, "volume": 0}
    assert got["grid"] == [[0, 0, 0], [0, 0, 9]] and got["ok"] is True and got["count"] == -3


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([Book, DepthMarketDataV636, DepthMarketDataV661]), st.data())
def test_the_compiled_decoder_agrees_with_the_field_by_field_one(cls: Any, data: Any) -> None:
    """decode() unpacks a whole payload at once; _decode_at, one field at a time, is the reference."""
    layout = to_struct(cls)
    payload = data.draw(st.binary(min_size=layout.size, max_size=layout.size))
    assert repr(decode(layout, payload)) == repr(_decode_at(layout, payload, 0))  # repr: NaN == NaN
    assert list(decode(layout, payload)) == [f[0] for f in cls._fields_]  # the layout's order


def test_a_layout_with_overlapping_fields_is_decoded_field_by_field() -> None:
    raw = {"name": "U", "size": 8, "fields": [
        {"name": "whole", "offset": 0, "type": "u8"},
        {"name": "low", "offset": 0, "type": "u4"},
        {"name": "tag", "offset": 4, "type": "char", "size": 4},
    ]}  # fmt: skip
    layout = struct_from_json(raw, "test")
    assert decode(layout, b"\x01\0\0\0ab\0\0") == {"whole": 0x6261_0000_0001, "low": 1, "tag": "ab"}


def test_a_numpy_dtype_declares_the_same_layout_as_its_ctypes_twin() -> None:
    assert to_struct(ctp_dtype(DepthMarketDataV661)).fields == to_struct(DepthMarketDataV661).fields
    nested = np.dtype([("a", "<u4"), ("b", [("x", "<f8")], (2,)), ("c", "S3")])
    assert numpy_dtype(to_struct(nested)) == nested


def test_redeclaring_a_type_with_another_layout_is_refused(jdir: str) -> None:
    with Writer.create(jdir, "md", service=None, schemas={101: "ctp"}):
        pass
    with Writer.create(jdir, "md", service=None, schemas={101: DepthMarketDataV636, 102: Book}):
        pass  # the same layout again is fine, and a new type is added
    with pytest.raises(UsageError, match="already declares msg_type 101 as DepthMarketDataV636"):
        Writer.create(jdir, "md", service=None, schemas={101: "ctp-v6.6.1"})
    assert sorted(load_schemas(jdir, "md")) == [101, 102]


@pytest.mark.parametrize(
    "bad",
    [
        type("Bits", (ctypes.Structure,), {"_fields_": [("a", ctypes.c_int, 3)]}),
        type("Ptr", (ctypes.Structure,), {"_fields_": [("p", ctypes.c_void_p)]}),
        type("Big", (ctypes.BigEndianStructure,), {"_fields_": [("a", ctypes.c_int)]}),
        np.dtype("<f8"),
        "no-such-layout",
        42,
    ],
    ids=["bitfield", "pointer", "big-endian", "plain-dtype", "unknown-name", "int"],
)
def test_layouts_a_schema_cannot_describe_are_refused(jdir: str, bad: object) -> None:
    with pytest.raises(UsageError):
        Writer.create(jdir, "md", service=None, schemas={1: bad})
    assert not os.path.exists(schema_path(jdir, "md"))


def test_a_damaged_or_linked_schema_file_is_a_corruption_error(jdir: str, tmp_path: object) -> None:
    path = schema_path(jdir, "md")
    with open(path, "w") as file:
        field = {"name": "x", "offset": 2, "type": "f8"}
        json.dump({"version": 1, "types": {"5": {"size": 4, "fields": [field]}}}, file)
    with pytest.raises(CorruptJournalError, match="field x lies outside the 4-byte struct"):
        load_schemas(jdir, "md")
    for bad, problem in [
        ({"size": 8, "fields": [field, {**field, "offset": 0}]}, "repeated field name"),
        ({"size": 8, "fields": [{**field, "type": "f16"}]}, "unknown type 'f16'"),
        ({"size": 0, "fields": []}, "invalid size 0"),
    ]:
        with open(path, "w") as file:
            json.dump({"version": 1, "types": {"5": bad}}, file)
        with pytest.raises(CorruptJournalError, match=problem):
            load_schemas(jdir, "md")
    with open(path, "w") as file:
        file.write('{"version": 1, "types": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CorruptJournalError, match="bad schema file"):
        load_schemas(jdir, "md")
    os.unlink(path)
    os.symlink(f"{tmp_path}/elsewhere.json", path)
    with pytest.raises(CorruptJournalError, match="symbolic link"):
        load_schemas(jdir, "md")


def test_write_at_stamps_given_times_and_refuses_to_go_back(jdir: str) -> None:
    with Writer.create(jdir, "md", service=None, page_size=64 * 1024) as writer:
        stamps = [1_000 + 10 * (i // 3) for i in range(600)]  # ties included, several pages
        for i, nano in enumerate(stamps):
            assert writer.write_at(i.to_bytes(4, "little") * 40, nano, msg_type=2, source=i) == nano
        with pytest.raises(UsageError, match="not older than the last frame of journal md"):
            writer.write_at(b"late", stamps[-1] - 1)
        with pytest.raises(UsageError):
            writer.write_at(b"x", True)
        writer.write(b"now")  # the clock is later than every stamp: write goes on as usual
    with Reader.create("write-at", service=None) as reader:
        reader.add_journal(jdir, "md", start=1_000 + 10 * 150)  # found through the time index
        first = reader.read()
        assert first is not None and first.nano == 2_500 and first.source == 450
        reader.seek(0)
        frames = list(iter(reader.read, None))
    assert [f.nano for f in frames[:-1]] == stamps and [f.source for f in frames[:-1]] == list(range(600))


def test_tail_decodes_declared_types_by_default(jdir: str) -> None:
    import subprocess
    import sys

    with Writer.create(jdir, "md", service=None, schemas={101: "ctp", 7: Book}) as writer:
        writer.write(
            DepthMarketDataV636(InstrumentID=b"rb2601", LastPrice=3712.5, UpdateTime=b"09:30:00"), 101
        )
        writer.write(Book(symbol=b"au2602", count=4), 7)
        writer.write(b"opaque", 9)

    def tail(*extra: str) -> list[str]:
        args = [sys.executable, "-m", "mmipc", "tail", jdir, "md", "--no-follow", *extra]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    ctp, book, opaque = tail()
    assert "rb2601" in ctp and "last=3712.5" in ctp
    assert "symbol=au2602" in book and "count=4" in book
    assert "len=6" in opaque and "6f 70 61 71 75 65" in opaque
    records = [json.loads(line) for line in tail("--json")]
    assert records[1]["payload"]["levels"][0] == {"price": 0.0, "volume": 0}
    assert records[2]["payload"] == b"opaque".hex()


def test_mmipc_analysis_without_numpy_names_the_extra(tmp_path: object) -> None:
    import subprocess
    import sys

    blocked = "import sys; sys.modules['numpy'] = None; import mmipc.analysis"
    out = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "pip install 'mmipc[analysis]'" in out.stderr
    export = (
        "import sys; sys.modules['numpy'] = None; from mmipc.cli import main; "
        f"sys.exit(main(['export', {str(tmp_path)!r}, 'md', '-o', 'x.parquet']))"
    )
    out = subprocess.run([sys.executable, "-c", export], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("mmipc export: mmipc.analysis needs numpy")
    assert "Traceback" not in out.stderr


def test_a_schema_write_cut_short_leaves_the_old_file(jdir: str, procs: Procs) -> None:
    """A file size limit (RLIMIT_FSIZE, as a full disk would) cuts the new schema file's write short:
    the declaration fails with StorageError and the old file stays whole, never a truncated one
    renamed over it (the schema module's own copy wrote once and renamed whatever it got)."""
    with Writer.create(jdir, "md", service=None, schemas={101: "ctp"}):
        pass
    before = open(schema_path(jdir, "md"), "rb").read()
    child = procs.spawn_code(
        "import os, resource, signal\n"
        "from mmipc import StorageError\n"
        "from mmipc.journal._schema import declare_schemas\n"
        "from mmipc.ctp import DepthMarketDataV661\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, {len(before) + 100}))\n"
        "try:\n"
        f"    declare_schemas({jdir!r}, 'md', {{102: DepthMarketDataV661}})\n"
        "    print('declared', flush=True)\n"
        "except StorageError as exc:\n"
        "    print('refused', exc, flush=True)\n"
    )
    assert child.finish().startswith("refused cannot write schema file"), child.stderr()
    assert open(schema_path(jdir, "md"), "rb").read() == before
    assert sorted(load_schemas(jdir, "md")) == [101]
    assert sorted(os.listdir(jdir)) == ["md.00000000.journal", "md.bells", "md.lock", "md.schema.json"]
