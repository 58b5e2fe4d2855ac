"""Fixtures that own every child process and journal directory, and close them with a timeout."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

PROCS = Path(__file__).parent / "procs"


def race_two_threads(hammer: Callable[[str], None]) -> None:
    """Run `hammer("owner")` in this thread and `hammer("other")` in a second one, started together
    (a barrier), with threads switched as often as the interpreter can."""
    start = threading.Barrier(2)

    def run(tag: str) -> None:
        start.wait(timeout=60)
        hammer(tag)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        other = threading.Thread(target=run, args=("other",))
        other.start()
        run("owner")
        other.join(timeout=120)
    finally:
        sys.setswitchinterval(old)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail the test after a generous `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Child:
    """A child process whose stdout and stderr lines are collected by threads, so no pipe fills up."""

    def __init__(self, cmd: list[str], **kwargs: object) -> None:
        self.proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors.append), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(pipe: IO[str], sink: Callable[[str], None]) -> None:
        for line in pipe:
            sink(line)
        sink(None)  # type: ignore[arg-type]

    def expect_line(self, prefix: str, timeout: float = 60.0) -> str:
        """Wait for a stdout line starting with `prefix`; earlier lines are dropped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"{self.proc.args!r} did not print {prefix!r}: {self.stderr()}")

    def stderr(self) -> str:
        return "".join(line for line in self.errors if line)

    def finish(self, timeout: float = 120.0) -> str:
        """Wait for exit status 0 and return the stdout lines not consumed yet."""
        self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=30)
        assert self.proc.returncode == 0, f"{self.proc.args!r} exited {self.proc.returncode}: {self.stderr()}"
        rest = []
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                rest.append(line)
        return "".join(rest)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


class Procs:
    """Starts helper scripts from tests/procs as real child processes and reaps them all."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    def spawn(self, script: str, *args: str, **kwargs: object) -> Child:
        child = Child([sys.executable, str(PROCS / script), *args], **kwargs)
        self.started.append(child)
        return child

    def spawn_code(self, code: str) -> Child:
        """Run `code` with `python -c` as a child process."""
        child = Child([sys.executable, "-c", code])
        self.started.append(child)
        return child

    def expect_line(self, child: Child, prefix: str, timeout: float = 60.0) -> str:
        return child.expect_line(prefix, timeout)

    def finish(self, child: Child, timeout: float = 120.0) -> str:
        return child.finish(timeout)

    def kill9(self, child: Child) -> None:
        child.kill9()

    def reap(self) -> None:
        for child in self.started:
            if child.proc.poll() is None:
                child.proc.kill()
            try:
                child.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


class ServiceProcess:
    """A real `mmipc service` process on its own home, which tests may kill and restart."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.socket = os.path.join(home, "service.sock")
        self.child: Child | None = None

    def start(self) -> None:
        env = {**os.environ, "MMIPC_HOME": self.home}
        self.child = Child([sys.executable, "-m", "mmipc", "service", "--home", self.home], env=env)
        self.child.expect_line("mmipc service pid")
        wait_for(lambda: os.path.exists(self.socket), what="the service socket")

    def kill9(self) -> None:
        assert self.child is not None
        self.child.kill9()

    def stop(self) -> None:
        if self.child is not None and self.child.proc.poll() is None:
            self.child.proc.send_signal(signal.SIGTERM)
            self.child.proc.wait(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TMPDIR for the whole session, child processes included: whatever a test or its children
    leave in the temporary directory lands here, and fails the session at its end."""
    path = tmp_path_factory.mktemp("tmpdir")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"], tempfile.tempdir = str(path), str(path)
    yield path
    tempfile.tempdir = None
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    left = sorted(os.listdir(path))
    assert not left, f"the tests left {len(left)} file(s) in the temporary directory: {left[:20]}"


@pytest.fixture(scope="session", autouse=True)
def service(session_tmpdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Every test runs against a real service (registration is the default), children included."""
    home = str(tmp_path_factory.mktemp("home"))
    svc = ServiceProcess(home)
    svc.start()
    os.environ["MMIPC_HOME"] = home
    yield svc
    svc.stop()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.reap()


@pytest.fixture
def jdir(tmp_path: Path) -> str:
    path = tmp_path / "journals"
    path.mkdir()
    return str(path)


@pytest.fixture
def planted() -> Iterator[list[str]]:
    """Paths a test plants outside its tmp_path (files, links, FIFOs, empty directories, in the bell
    directory say), removed after it whatever happened."""
    paths: list[str] = []
    yield paths
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass  # never planted, or already removed (by the sweep under test)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def mapped_journal_files() -> int:
    """How many mappings of journal pages this process holds."""
    with open(f"/proc/{os.getpid()}/maps") as maps:
        return sum(1 for line in maps if line.rstrip().endswith(".journal"))


# The helper scripts' shared payload module is importable from the tests too.
sys.path.insert(0, str(PROCS))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 512 KiB (root only), for tests of a full filesystem."""
    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)]).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
