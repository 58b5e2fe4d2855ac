"""A journal's files have the mode its writer asks for, each time it is opened: a writer left an
existing NAME.lock as it was, so the lock, and NAME.bells whose mode follows it, kept the mode of
the journal's first writer (a journal reopened with mode 0640 kept a 0600 list: its group's
readers could not register a bell). Now the writer that takes the lock sets its mode exactly, and
the list follows (0600 -> 0600, 0640 -> 0660, 0644 -> 0666), in both directions. Pages keep the
mode they were made with (docs/format.md, "File modes"). A Python writer on either backend, and the
C API's example writer (examples/c/ctp_writer.c)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from mmipc import Writer
from test_c_api import c_progs

__all__ = ["c_progs"]  # a fixture: the C programs, built once

MODES = [(0o600, 0o600), (0o640, 0o660), (0o644, 0o666), (0o600, 0o600)]  # the writer's, the list's


def _modes(jdir: str, name: str) -> tuple[int, int]:
    """The modes of the journal's NAME.lock and NAME.bells."""
    lock, bells = (os.stat(os.path.join(jdir, f"{name}.{kind}")).st_mode for kind in ("lock", "bells"))
    return stat.S_IMODE(lock), stat.S_IMODE(bells)


def test_a_python_writer_gives_the_lock_and_the_list_its_mode_each_time(jdir: str) -> None:
    old = os.umask(0o077)  # the modes must not depend on it
    try:
        for mode, list_mode in MODES:
            with Writer.create(jdir, "moded", mode=mode, service=None) as writer:
                writer.write(b"x")
                assert _modes(jdir, "moded") == (mode, list_mode), oct(mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(os.path.join(jdir, "moded.00000000.journal")).st_mode) == 0o600


@pytest.mark.once  # .ci/run: in its native pass only (the C API alone, whatever the backend)
def test_a_c_writer_gives_the_lock_and_the_list_its_mode_each_time(
    jdir: str, c_progs: dict[str, str]
) -> None:
    for mode, list_mode in MODES:
        done = subprocess.run(
            [c_progs["ctp_writer"], "--mode", f"{mode:o}", jdir, "moded", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert _modes(jdir, "moded") == (mode, list_mode), oct(mode)
