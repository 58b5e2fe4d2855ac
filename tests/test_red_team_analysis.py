"""Breaks of the self-describing journals and `mmipc.analysis` found by a hostile tester (red team),
each kept as a test that failed before its fix.

Real processes, real files: journals are written by real writers, schema files are written (or
damaged) on disk as a careless or hostile user would, and the commands run as `python -m mmipc`
child processes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmipc import Writer

pa = pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow) is not installed")
analysis = pytest.importorskip("mmipc.analysis")

BASE = 1_700_000_000_000_000_000
FORMATS = ("parquet", "arrow", "csv", "npy")


def mmipc(*args: str, fsize: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run one command; `fsize` caps the size of the files it may grow (RLIMIT_FSIZE)."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "mmipc", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        preexec_fn=limit,
    )


def declared(jdir: str, schema: Any, payloads: list[bytes], msg_type: int = 5) -> None:
    """A journal `md` whose writer declares `schema` for `msg_type` and writes `payloads`."""
    with Writer.create(jdir, "md", service=None, schemas={msg_type: schema}) as writer:
        for i, payload in enumerate(payloads):
            writer.write_at(payload, BASE + i, msg_type=msg_type)


def planted(jdir: str, layout: dict[str, Any], payloads: list[bytes], msg_type: int = 5) -> None:
    """A journal `md` of `payloads` whose schema file, written by hand, declares `layout`."""
    with Writer.create(jdir, "md", service=None) as writer:
        for i, payload in enumerate(payloads):
            writer.write_at(payload, BASE + i, msg_type=msg_type)
    document = {"version": 1, "types": {str(msg_type): layout}}
    Path(jdir, "md.schema.json").write_text(json.dumps(document))


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert "internal error" not in line and "Traceback" not in line, line
    return line


# -- export ------------------------------------------------------------------------------------------


def test_npy_export_of_a_layout_with_non_latin1_field_names(jdir: str, tmp_path: Path) -> None:
    """A numpy dtype with Chinese field names (a CTP user's own struct) exported to Parquet, Arrow and
    CSV, but `--format npy` stopped with "internal error: UnicodeEncodeError": the .npy header was
    encoded as Latin-1, which .npy format 2.0 requires; format 3.0 is UTF-8."""
    layout = np.dtype([("价格", "<f8"), ("数量", "<i4")])
    declared(jdir, layout, [np.array([(3700.5, 7)], layout).tobytes()])
    out = str(tmp_path / "md.npy")
    done = mmipc("export", jdir, "md", "-o", out)
    assert done.returncode == 0, done.stderr
    rows = np.load(out)
    assert rows["价格"].tolist() == [3700.5] and rows["数量"].tolist() == [7]


def test_npy_export_of_overlapping_fields_is_refused_before_writing(jdir: str, tmp_path: Path) -> None:
    """A layout whose fields overlap (a C union, declared as a numpy dtype) exports to Parquet, Arrow
    and CSV, but `--format npy` stopped with "internal error: ValueError: dtype.descr is not defined":
    .npy cannot describe such a dtype. It is a usage error, said before any file is made."""
    layout = np.dtype({"names": ["price", "raw"], "formats": ["<f8", "<u8"], "offsets": [0, 0], "itemsize": 8})
    declared(jdir, layout, [np.array([(1.5, 0)], layout).tobytes()])
    out = tmp_path / "md.npy"
    line = one_line_error(mmipc("export", jdir, "md", "-o", str(out)))
    assert "overlap" in line and "parquet" in line, line
    assert sorted(os.listdir(tmp_path)) == [Path(jdir).name]
    for fmt in ("parquet", "arrow", "csv"):
        assert mmipc("export", jdir, "md", "-o", str(tmp_path / f"md.{fmt}")).returncode == 0
