"""Wrong types at the API get a UsageError that names the parameter, and `import mmipc` stays light."""

from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

import mmipc
from mmipc import Reader, UsageError, Writer


def test_a_str_payload_is_told_to_encode(jdir: str) -> None:
    with Writer.create(jdir, "j", service=None) as writer, pytest.raises(UsageError, match="encode it"):
        writer.write("hello")


def test_a_non_contiguous_array_is_told_how_to_fix_it(jdir: str) -> None:
    column = np.zeros((4, 4))[:, 1]
    with Writer.create(jdir, "j", service=None) as writer:
        with pytest.raises(UsageError, match="ascontiguousarray"):
            writer.write(column)
        writer.write(np.ascontiguousarray(column))  # the hint works


@pytest.mark.parametrize("msg_type", ["1", 1.0, None])
def test_a_msg_type_that_is_not_an_int_is_named(jdir: str, msg_type: object) -> None:
    with Writer.create(jdir, "j", service=None) as writer:
        with pytest.raises(UsageError, match="msg_type must be an int"):
            writer.write(b"x", msg_type=msg_type)  # type: ignore[arg-type]
        writer.write(b"y", msg_type=1)
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "j")
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"y"]  # nothing half-written


def test_a_reserved_msg_type_is_still_refused(jdir: str) -> None:
    with Writer.create(jdir, "j", service=None) as writer, pytest.raises(UsageError, match="reserved"):
        writer.write(b"x", msg_type=0xFFFF_0000)


def test_a_page_size_that_is_not_an_int_is_named(jdir: str) -> None:
    with pytest.raises(UsageError, match="page_size must be an int"):
        Writer.create(jdir, "j", page_size="1M", service=None)  # type: ignore[arg-type]


def test_seek_takes_ns_a_datetime_or_iso_text(jdir: str) -> None:
    with Writer.create(jdir, "j", service=None) as writer:
        nanos = [writer.write(bytes([i])) for i in range(3)]
    seconds, ns = divmod(nanos[1], 1_000_000_000)
    middle = datetime.fromtimestamp(seconds).replace(microsecond=ns // 1000)  # at or before frame 1
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "j")
        for when in (nanos[1], middle, middle.isoformat(), str(nanos[1])):
            reader.seek(when)
            assert [f.nano for f in iter(reader.read, None)][-2:] == nanos[1:]
        reader.seek("2000-01-01")
        assert len(list(iter(reader.read, None))) == 3
        with pytest.raises(UsageError, match="seek 'yesterday' is not a time"):
            reader.seek("yesterday")
        with pytest.raises(UsageError, match="seek must be"):
            reader.seek(1.5)  # type: ignore[arg-type]


def test_add_journal_start_takes_iso_text(jdir: str) -> None:
    with Writer.create(jdir, "j", service=None) as writer:
        writer.write(b"x")
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "j", start="2000-01-01 00:00:00")  # type: ignore[arg-type]
        assert reader.read() is not None


def test_reader_read_is_documented() -> None:
    doc = pydoc.render_doc(Reader, renderer=pydoc.TextDoc())
    assert "read() -> Frame | None: the next frame" in doc and "read = reader.read" in doc
    assert "timestamp order" in (inspect.getdoc(Reader.__dict__["read"]) or "")


HEAVY = [
    "mmipc.service._service",
    "mmipc.service._link",
    "mmipc.cli",
    "subprocess",
    "logging",
    "json",
    "dataclasses",
]


def test_import_mmipc_loads_no_service_cli_or_heavy_module() -> None:
    code = "import sys; import mmipc; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "mmipc.journal._writer" in loaded and not loaded & set(HEAVY)


def test_lazy_names_still_resolve() -> None:
    assert mmipc.Service.__name__ == "Service" and callable(mmipc.service_status)
    assert {"Service", "service_status"} <= set(dir(mmipc))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mmipc.nope  # noqa: B018
