"""Helpers die with the process that started them (service/_orphans.py), even when it died first."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conftest import Procs, wait_for


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie that init has not reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("how", ["preexec", "bench"])
def test_a_child_whose_parent_died_before_it_asked_to_die_with_it_dies(
    procs: Procs, tmp_path: Path, how: str
) -> None:
    """The parent is killed with -9 between the fork and the child's prctl(PR_SET_PDEATHSIG): the
    child, handed to init meanwhile, must see that its parent is not the one recorded before the
    fork, and die, rather than live on with a death signal tied to init."""
    go, survived = tmp_path / "go", tmp_path / "survived"
    parent = procs.spawn("orphan_proc.py", str(go), str(survived), how)
    child = int(parent.expect_line("child").split()[1])
    try:
        procs.kill9(parent)
        go.touch()
        wait_for(lambda: _gone(child) or survived.exists(), what="the orphan to die or to arm")
        assert not survived.exists(), "the child armed after its parent died, and lived on"
    finally:
        if survived.exists():  # it lives (it sleeps after arming): do not leave it behind
            os.kill(child, signal.SIGKILL)
