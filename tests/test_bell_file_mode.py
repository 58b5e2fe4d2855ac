"""A reader's own bell (and its FIFO, for waits in an event loop) was made 0666 less the umask:
under umask 0 any local user could write into it (wake the reader for ever, clear its flags). Now
both are made 0660 exactly, whatever the umask: the reader's user, and the writers of its group,
the users a journal is shared with (docs/format.md, "File modes"). Checked with umask 0, and with
a second user (a child run as nobody): refused alone, let in as a member of the bell's group."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator

import pytest

from mmipc import Reader
from mmipc.journal._block import _fifo

BELL_MODE = 0o660


@pytest.fixture
def umask_0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def bell_and_fifo(jdir: str, umask_0: None) -> Iterator[tuple[str, str]]:
    with Reader.create("moded", service=None) as reader:
        reader.add_journal(jdir, "moded")
        bell = reader._merge.bell
        assert bell is not None, "no bell made"
        assert _fifo(reader._merge) >= 0, "no FIFO made"
        yield bell.path, bell.path + ".fifo"


def test_a_bell_and_its_fifo_are_0660_whatever_the_umask(bell_and_fifo: tuple[str, str]) -> None:
    for path in bell_and_fifo:
        assert stat.S_IMODE(os.stat(path).st_mode) == BELL_MODE, path


def _open_as_nobody(path: str, groups: list[int]) -> str:
    """Open `path` read-write as user nobody (a member of `groups` only), as a ringing writer
    does: "ok", or the shell's complaint (a plain shell: nobody may not run our interpreter)."""
    done = subprocess.run(
        ["/bin/sh", "-c", 'exec 3<>"$1" && echo ok', "sh", path],
        user=65534,
        group=65534,
        extra_groups=groups,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    return done.stdout.strip() or done.stderr.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run a child as another user")
def test_another_user_rings_a_bell_only_through_its_group(bell_and_fifo: tuple[str, str]) -> None:
    for path in bell_and_fifo:
        group = os.stat(path).st_gid
        refused = _open_as_nobody(path, [])
        assert "Permission denied" in refused, f"{path}: any local user could write into it: {refused}"
        assert _open_as_nobody(path, [group]) == "ok", f"{path}: a writer of its group cannot ring it"
