"""A lock file whose recorded pid was crafted (or damaged) gives a one-line error naming the file."""

from __future__ import annotations

import os

import pytest

from conftest import Procs
from mmipc import JournalLockedError, Writer
from test_cli_errors import assert_clean, mmipc

CRAFTED = "12\nTraceback (most recent call last):\n  File 'x'\n\x1b[31mMmipcError: forged\n" * 3


def test_a_crafted_writer_lock_file_gives_one_line_naming_it(procs: Procs, jdir: str) -> None:
    """The holder's recorded "pid" was printed as found: newlines and all, a multi-line error."""
    os.makedirs(jdir, exist_ok=True)
    path = os.path.join(jdir, "j.lock")
    holder = procs.spawn_code(
        "import fcntl, os, signal\n"
        f"fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        f"os.write(fd, {CRAFTED.encode()!r})\n"
        "print('locked', flush=True)\n"
        "signal.pause()\n"
    )
    holder.expect_line("locked")
    with pytest.raises(JournalLockedError) as raised:
        Writer.create(jdir, "j", service=None)
    message = str(raised.value)
    assert "\n" not in message and "\x1b" not in message and path in message, message
    assert "pid unknown" in message, message
    out = mmipc("write", jdir, "j", "--count", "1", "--standalone")
    assert_clean(out, 1, path)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
