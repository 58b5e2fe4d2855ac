"""The torture harness in CI: a fixed seed and a random one, both printed; any violation fails."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest


@pytest.mark.parametrize("seed", [1, random.randrange(1 << 32)], ids=["fixed seed", "random seed"])
def test_torture_finds_no_violation(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MMIPC_HOME"}  # it runs its own service
    cmd = [sys.executable, "-m", "mmipc", "torture", "--seconds", "25", "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    with capsys.disabled():
        print(f"\n{out.stdout}", end="")  # the seed and the report, in CI's log
    assert out.returncode == 0, out.stdout + out.stderr
    assert "violations: 0" in out.stdout and "kill_writer" in out.stdout
