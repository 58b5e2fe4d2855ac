"""A reader's counter file that cannot be made gets one line naming the counter file and what is
wrong: a directory at HOME/readers/NAME.counters gave "Is a directory (HOME/readers/NAME.counters.
PID.tmp)", naming the temporary file the rename came from. A real service, a real reader process."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ServiceProcess
from mmipc import Reader

_CREATE = """
import sys
from mmipc import MmipcError, Reader
try:
    Reader.create(sys.argv[2], service=sys.argv[1]).close()
except MmipcError as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
print("created")
"""


def _create(home: str, name: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-c", _CREATE, home, name]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_a_directory_where_the_counter_file_goes_is_named_in_one_line(service: ServiceProcess) -> None:
    path = os.path.join(service.home, "readers", "dir-in-the-way.counters")
    os.makedirs(path)
    try:
        child = _create(service.home, "dir-in-the-way")
        assert child.returncode == 3, (child.stdout, child.stderr)
        line = child.stdout.strip()
        assert "\n" not in line and "Traceback" not in child.stderr
        assert line.startswith(f"StorageError reader dir-in-the-way cannot create its position file {path}: ")
        assert f"{path} is a directory" in line and ".tmp" not in line, line
        assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]
    finally:
        os.rmdir(path)
    with Reader.create("dir-in-the-way", service=service.home):  # fixed: its name was freed
        assert os.path.isfile(path)
