"""Red team 8: the newest parts (hot journals and naps, the foreign-namespace heartbeat, the allocated
side files, the service link, the C API on damaged files), attacked as a careless or hostile user
would. Defects in files other helpers own are strict xfails naming the file, for the lead to route."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServiceProcess
from mmipc import Service, UsageError


def _fill(disk: Path) -> None:
    """Fill the file system to its last block."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while f.write(bytes(4096)):
                pass
        except OSError:
            pass


GROWS = (
    "import sys\n"
    "from mmipc import Reader, Writer\n"
    "home, jdir = sys.argv[1:3]\n"
    "names = [f'j{i:03d}' for i in range(300)]\n"
    "for name in names:\n"
    "    Writer.create(jdir, name, service=None).close()\n"
    "reader = Reader.create('grows', service=home)\n"
    "reader.add_journal(jdir, names[0])\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "for name in names[1:]:\n"
    "    reader.add_journal(jdir, name)\n"
    "print('followed', len(names), flush=True)\n"
)


@pytest.mark.xfail(
    strict=True,
    reason="fix8 owns journal/_metrics.py growth: Board._write_journals grows the counter file with "
    "mmap.resize (ftruncate: a hole), and its first store into the hole on a full home is a SIGBUS",
)
def test_a_reader_whose_counter_file_grows_on_a_full_home_is_not_killed_by_sigbus(
    small_tmpfs: Path, jdir: str
) -> None:
    """A linked reader's counter file is allocated at 16 KiB (posix_fallocate) so that a full home
    is an error, never a signal. A reader that follows more journals than that holds (version 2:
    a risk monitor of 300 journals) grows it with mmap.resize, a hole: once the home's filesystem
    is full, the publisher's first store past 16 KiB killed the whole reader process ("Bus error",
    exit -7), in add_journal, whose publish is documented never to fail it."""
    service = ServiceProcess(str(small_tmpfs / "home"))
    service.start()
    try:
        reader = subprocess.Popen(
            [sys.executable, "-c", GROWS, service.home, jdir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline() == "ready\n"
        _fill(small_tmpfs)
        out, err = reader.communicate("go\n", timeout=300)
    finally:
        service.stop()
    assert (reader.returncode, out) == (0, "followed 300\n"), err


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0, "600", True], ids=repr)
@pytest.mark.parametrize("knob", ["foreign_reader_limit", "retain_interval"])
def test_a_service_given_seconds_that_are_not_a_positive_number_is_a_usage_error(
    tmp_path: Path, knob: str, value: object
) -> None:
    """`mmipc service --foreign-reader-limit nan` is refused, but the Service class took any value.
    With foreign_reader_limit=nan (or <= 0) every reader of another pid namespace was dead at once
    (`now - heartbeat < nan` is False): retention removed the pages a live container reader stood
    on (seen: pages 0 to 3 of 5 gone under it with max_pages=1). "600" made the monitor raise a
    TypeError at every pass; retain_interval <= 0 ran retention passes back to back, a core for
    good. Now each is a UsageError naming the argument, before the home is touched."""
    home = tmp_path / "home"
    with pytest.raises(UsageError, match=f"{knob} must be a number of seconds > 0") as caught:
        Service(str(home), **{knob: value})  # type: ignore[arg-type]
    assert str(caught.value).count("\n") == 0
    assert not home.exists()
