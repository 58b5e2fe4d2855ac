"""Every command has help, and a bad command fails with a message, run as real subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmipc.cli import build_parser


def commands() -> list[list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [[], *([name] for name in sub.choices)]  # type: ignore[union-attr]


@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c) or "mmipc")
def test_every_command_has_help(command: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "mmipc", *command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: mmipc" in out.stdout


def test_status_without_a_service_says_how_to_start_one(tmp_path: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "status", "--home", f"{tmp_path}/none"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "start it with `mmipc service`" in out.stderr
