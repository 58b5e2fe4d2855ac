"""`mmipc service` options checked at start-up: one line and exit 2, never a service that fails later."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_cli_errors import assert_clean, mmipc


@pytest.mark.parametrize("kind", ["/dev/null", "file", "under-a-file", "read-only"])
def test_an_archive_that_cannot_take_pages_is_refused_at_start(tmp_path: Path, kind: str) -> None:
    """`--archive /dev/null` (or a file, or an unwritable path) was accepted, then every retention
    pass failed ("cannot use archive directory"), counted in the status and nowhere else."""
    a_file = tmp_path / "file"
    a_file.write_text("not a directory\n")
    archive = {
        "/dev/null": "/dev/null",
        "file": str(a_file),
        "under-a-file": str(a_file / "archive"),
        "read-only": "/proc/self/archive",  # not even root creates a directory there
    }[kind]
    home = str(tmp_path / "home")
    out = mmipc("service", "--home", home, "--retain-pages", "2", "--archive", archive)
    assert_clean(out, 2, "--archive", archive)
    assert not os.path.exists(os.path.join(home, "service.sock"))
