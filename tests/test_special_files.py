"""Special files where a page belongs: every entry point raises our error naming the file, none hangs.

A FIFO opened for reading without O_NONBLOCK blocks until a writer appears, so one FIFO planted where
a page belongs used to freeze `mmipc check`, `tail`, `inspect`, `ls`, a live reader at the end of its
page, and the service's single loop (then every client timed out). Each case runs every entry point
as a real process with a timeout, so a hang fails the test instead of freezing the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from conftest import Procs, wait_for
from mmipc import CorruptJournalError, Writer
from mmipc.service._status import journal_status
from mmipc.tools import check_journal, last_written_page, nth_last_nano, summarize

PAGE = 64 * 1024
TIMEOUT = 60


def fifo(path: str) -> None:
    os.mkfifo(path)


def directory(path: str) -> None:
    os.mkdir(path)


def unix_socket(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()  # the socket file stays


def dev_zero_link(path: str) -> None:
    os.symlink("/dev/zero", path)


def dangling_link(path: str) -> None:
    os.symlink("/nonexistent/page", path)


SPECIAL: dict[str, Callable[[str], None]] = {
    "a FIFO": fifo,
    "a directory": directory,
    "a socket": unix_socket,
    "a symlink to /dev/zero": dev_zero_link,
    "a dangling symlink": dangling_link,
}


def journal_with_special_page(jdir: str, make: Callable[[str], None], page_no: int) -> str:
    """A journal of two full pages whose page `page_no` is then replaced by a special file."""
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        while not os.path.exists(os.path.join(jdir, "j.00000001.journal")):
            writer.write(bytes(1000))
        writer.write(bytes(1000))
    path = os.path.join(jdir, f"j.{page_no:08d}.journal")
    os.unlink(path)
    make(path)
    return path


@pytest.fixture(params=list(SPECIAL))
def special(request: pytest.FixtureRequest) -> Iterator[Callable[[str], None]]:
    yield SPECIAL[request.param]


def run_in_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("page_no", [0, 1])
def test_the_library_read_paths_raise_naming_the_file(
    jdir: str, special: Callable[[str], None], page_no: int
) -> None:
    path = journal_with_special_page(jdir, special, page_no)
    code = f"""
import sys
from mmipc import MmipcError, Reader
from mmipc.tools import check_journal, last_written_page, nth_last_nano, summarize
from mmipc.service._status import journal_status
d, path = {jdir!r}, {path!r}
for name, call in [
    ("summarize", lambda: summarize(d, "j")),
    ("last_written_page", lambda: last_written_page(d, "j")),
    ("nth_last_nano", lambda: nth_last_nano(d, "j", 10**9)),
]:
    try:
        call()
        print(name, "no error")
    except MmipcError as exc:
        assert path in str(exc), (name, exc)
        print(name, "error", type(exc).__name__)
result = check_journal(d, "j")
assert result.problem is not None and result.problem.path == path, result
print("check_journal problem")
status = journal_status(d, "j")
print("journal_status", "error" in status)
with Reader.create("r", service=None) as reader:
    try:
        reader.add_journal(d, "j")
        while reader.read() is not None:
            pass
        print("reader no error")
    except MmipcError as exc:
        assert path in str(exc), exc
        print("reader error", type(exc).__name__)
"""
    out = run_in_child(code)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reader error" in out.stdout and "summarize error" in out.stdout, out.stdout
    assert "check_journal problem" in out.stdout


COMMANDS = [
    ["check", "{d}", "j"],
    ["tail", "{d}", "j", "--no-follow"],
    ["inspect", "{d}", "j"],
    ["ls", "{d}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_the_commands_say_what_is_wrong(
    jdir: str, special: Callable[[str], None], command: list[str]
) -> None:
    path = journal_with_special_page(jdir, special, 1)
    args = [a.format(d=jdir) for a in command]
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert path in out.stdout + out.stderr


def test_a_live_reader_at_the_end_of_its_page_meets_a_fifo(jdir: str, procs: Procs) -> None:
    """A live reader, stopped in page 0, resumes after page 1 was replaced by a FIFO: at page 0's
    end-of-page marker it enters page 1, and must raise instead of blocking in open()."""
    path = os.path.join(jdir, "j.00000001.journal")
    code = f"""
from mmipc import MmipcError, Reader
with Reader.create("live", service=None) as reader:
    reader.add_journal({jdir!r}, "j")
    frames = reader.frames(timeout=120)
    print("got", bytes(next(frames).data).decode(), flush=True)
    try:
        for frame in frames:
            pass
        print("no error", flush=True)
    except MmipcError as exc:
        print("error", type(exc).__name__, str(exc), flush=True)
"""
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        writer.write(b"first")
        child = procs.spawn_code(code)
        child.expect_line("got first")
        child.proc.send_signal(signal.SIGSTOP)
        while not os.path.exists(path):
            writer.write(bytes(1000))
        os.unlink(path)
        os.mkfifo(path)
        child.proc.send_signal(signal.SIGCONT)
        line = child.expect_line("", timeout=TIMEOUT)
    assert line.startswith("error CorruptJournalError") and path in line, line


def mmipc_status() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmipc", "status", "--json"], capture_output=True, text=True, timeout=TIMEOUT
    )


def test_the_service_status_survives_a_fifo(jdir: str) -> None:
    """`status` reads the last pages of every registered journal, on the service's single loop."""
    page1 = os.path.join(jdir, "j.00000001.journal")
    with Writer.create(jdir, "j", page_size=PAGE) as writer:
        writer.write(bytes(100))
        for _ in range(33):  # past half of page 0: the service prepares page 1 of a new journal now
            writer.write(bytes(1000))
        wait_for(lambda: os.path.exists(page1), what="page 1 prepared by the service")
        os.unlink(page1)
        os.mkfifo(page1)
        for _ in range(2):  # the second proves the service still answers after the first
            out = mmipc_status()
            assert out.returncode == 0, out.stdout + out.stderr
            assert page1 in out.stdout, out.stdout


def test_the_page_preparation_survives_a_fifo(jdir: str) -> None:
    """The service's worker thread prepares page N+1: a FIFO there is logged, the thread goes on."""
    page2 = os.path.join(jdir, "j.00000002.journal")
    with Writer.create(jdir, "j", page_size=PAGE) as writer:
        os.mkfifo(page2)
        while not os.path.exists(os.path.join(jdir, "j.00000001.journal")):
            writer.write(bytes(1000))
        for _ in range(10):
            writer.write(bytes(100))  # cross time-index slots: the writer tells the service it is on page 1
    with Writer.create(jdir, "k", page_size=PAGE) as writer:
        writer.write(bytes(100))
        for _ in range(33):  # past half of page 0: the service prepares page 1 of a new journal now
            writer.write(bytes(1000))
        wait_for(lambda: os.path.exists(os.path.join(jdir, "k.00000001.journal")), what="page 1 of k")


def test_the_tools_on_a_fifo_page_in_this_process(jdir: str) -> None:
    path = journal_with_special_page(jdir, fifo, 1)
    for call in (lambda: summarize(jdir, "j"), lambda: last_written_page(jdir, "j")):
        with pytest.raises(CorruptJournalError, match="not a regular file \\(a FIFO\\)") as info:
            call()
        assert info.value.path == path
    with pytest.raises(CorruptJournalError):
        nth_last_nano(jdir, "j", 1)
    assert path in journal_status(jdir, "j")["error"]
    problem = check_journal(jdir, "j").problem
    assert problem is not None and problem.path == path


@pytest.mark.parametrize("make", [fifo, directory, dangling_link], ids=["FIFO", "directory", "dangling link"])
def test_a_special_file_where_the_schema_file_belongs(jdir: str, make: Callable[[str], None]) -> None:
    """`mmipc tail` reads NAME.schema.json to decode the layouts a journal declares."""
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        writer.write(b"x")
    path = os.path.join(jdir, "j.schema.json")
    make(path)
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "tail", jdir, "j", "--no-follow"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert path in out.stderr, out.stderr
