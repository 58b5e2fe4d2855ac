"""`mmipc export -o -`: refused with one line, never a file named "-"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_cli_errors import assert_clean, mmipc
from test_export import md

__all__ = ["md"]  # the fixture


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_to_dash_is_refused_and_writes_no_file(md: str, tmp_path: Path, fmt: str) -> None:
    """`-o -` wrote a file named "-" in the current directory, and said it exported there."""
    here = tmp_path / "cwd"
    here.mkdir()
    out = mmipc("export", md, "md", "-o", "-", "--format", fmt, cwd=str(here))
    assert_clean(out, 1, "-o -", "standard output", "./-")
    assert out.stdout == "" and os.listdir(here) == []
    named = mmipc("export", md, "md", "-o", "./-", "--format", fmt, cwd=str(here))
    assert named.returncode == 0 and "-" in os.listdir(here), named.stderr
