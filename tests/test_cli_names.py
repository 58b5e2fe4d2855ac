"""Every `mmipc` command that takes a journal name refuses a name no journal can have with the same
one line (InvalidNameError, exit 2). `check` and `inspect` said "no journal ../x in DIR", as if it
might exist elsewhere. Real `python -m mmipc` processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

BAD = "../x"
MESSAGE = f"invalid journal name {BAD!r}: use 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'"


def _mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "command", [["check"], ["check", "--json"], ["inspect"], ["prune", "--before", "2020-01-01"]]
)
def test_a_bad_journal_name_is_the_same_clear_error_in_every_command(jdir: str, command: list[str]) -> None:
    out = _mmipc(*command, jdir, BAD)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr == f"mmipc {command[0]}: {MESSAGE}\n" and out.stdout == ""
