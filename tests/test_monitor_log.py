"""The monitor's log: a journal it cannot read is logged once when that starts and once when it ends,
not at every sweep (it was a warning a second, for ever, per journal)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from conftest import Child, wait_for
from mmipc import Writer, service_status

PAGE = 64 * 1024


def passes(home: str, child: Child, more: int) -> None:
    """Wait for `more` monitor sweeps of the service at `home`."""
    ticks = service_status(home)["service"]["monitor_ticks"]
    wait_for(lambda: service_status(home)["service"]["monitor_ticks"] >= ticks + more, what=f"{more} sweeps")


def failures(child: Child, where: str) -> list[str]:
    return [line for line in child.errors if line and "monitor:" in line and where in line]


def test_an_unlistable_journal_directory_is_logged_once_and_its_recovery_once(tmp_path: Path) -> None:
    home, jdir = str(tmp_path / "home"), str(tmp_path / "journals")
    cmd = [sys.executable, "-m", "mmipc", "service", "--home", home, "--retain-pages", "1"]
    service = Child([*cmd, "--retain-interval", "0.1"])
    try:
        service.expect_line("mmipc service pid")
        with Writer.create(jdir, "j", page_size=PAGE, service=home) as writer:
            writer.write(b"x" * 100)
        passes(home, service, 2)
        assert failures(service, jdir) == []
        shutil.rmtree(jdir)
        Path(jdir).write_text("a file where the journal directory was\n")
        passes(home, service, 5)  # 5 samples and about 50 retention passes
        broken = failures(service, jdir)
        assert len(broken) <= 2 and all("cannot list journal directory" in line for line in broken), broken
        assert any("_sample" in line for line in broken) and any("retain" in line for line in broken), broken
        os.unlink(jdir)
        os.mkdir(jdir)
        passes(home, service, 5)
        recovered = failures(service, jdir)[len(broken) :]
        assert len(recovered) == len(broken) and all("recovered" in line for line in recovered), recovered
        passes(home, service, 3)
        assert len(failures(service, jdir)) == 2 * len(broken)
    finally:
        service.proc.terminate()
        assert service.proc.wait(timeout=60) == 0
