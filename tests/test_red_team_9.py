"""Red team 9: the newest parts (the retention counter cache, the metrics endpoint, the pure-Python
block reader on its FIFO, option checks, the bridge and export), attacked as a careless or hostile
user would. Defects in files other helpers own are strict xfails naming the file, for the lead to
route."""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Child, Procs, ServiceProcess, wait_for
from mmipc import Writer
from mmipc.journal._bell import SLEEPING
from mmipc.journal._files import list_pages, page_path

# A reader whose bell's FIFO path holds a regular file before its first wait (a file left there,
# or one another user of /dev/shm made once the bell's name was in the journal's bells list).
SQUATTED_FIFO = (
    "import asyncio, sys\n"
    "from mmipc import Reader\n"
    "jdir, wait = sys.argv[1:3]\n"
    "reader = Reader.create('squatted', service=None)\n"
    "reader.add_journal(jdir, 'j')\n"
    "bell = reader._merge.bell\n"
    "open(bell.path + '.fifo', 'w').close()\n"
    "print('bell', bell.path, flush=True)\n"
    "async def first():\n"
    "    async for frame in reader.aframes(timeout=60):\n"
    "        return frame\n"
    "async def waited():\n"
    "    task = asyncio.create_task(first())\n"
    "    await asyncio.sleep(0)  # the task's first step: to its wait (or its error)\n"
    "    print('waiting', flush=True)\n"
    "    return await task\n"
    "if wait == 'block':\n"
    "    frame = next(iter(reader.frames(wait='block', timeout=60)))\n"
    "else:\n"
    "    frame = asyncio.run(waited())\n"
    "print('got', bytes(frame.data).decode(), flush=True)\n"
    "reader.close()\n"
)


def _sleeping(bell: str) -> int:
    """The bell's `sleeping` byte; -1 once the bell is gone (its reader ended)."""
    try:
        with open(bell, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm[SLEEPING]
    except OSError:
        return -1


def _opens(pid: int, path: str) -> bool:
    """Whether process `pid` holds a descriptor of `path`."""
    fds = f"/proc/{pid}/fd"
    found = False
    for fd in os.listdir(fds):
        try:
            found = found or os.readlink(os.path.join(fds, fd)) == path
        except OSError:
            pass
    return found


@pytest.mark.parametrize("wait", ["block", "aframes"])
def test_a_regular_file_where_the_bells_fifo_goes_is_not_waited_on(
    jdir: str, procs: Procs, wait: str
) -> None:
    """The pure-Python block reader (and `aframes`, either backend) made its FIFO on first use
    only if nothing was at its path, and opened whatever was there. A regular file is always
    readable: `poll` returned at once, every wait was a "ring", and a block reader spun a whole
    core for as long as no frame came (9.97 s of CPU in a 10 s wait); `aframes` died with
    epoll's "PermissionError: [Errno 1] Operation not permitted", a traceback. Only our own FIFO
    is waited on now; anything else, and the reader waits in bounded steps, as without a FIFO."""
    writer = Writer.create(jdir, "j", service=None)
    env = {**os.environ, "MMIPC_BACKEND": "python"} if wait == "block" else None
    child = Child([sys.executable, "-c", SQUATTED_FIFO, jdir, wait], env=env)
    procs.started.append(child)
    bell = child.expect_line("bell ").split(" ", 1)[1]
    try:
        if wait == "block":
            wait_for(lambda: child.proc.poll() is not None or _sleeping(bell) != 0, what="the reader asleep")
        else:
            child.expect_line("waiting")
        assert child.proc.poll() is None, child.stderr()
        assert not _opens(child.pid, bell + ".fifo"), "the reader waits on a regular file"
        writer.write(b"late", 1)
        assert child.expect_line("got") == "got late"
        child.finish()
        assert "Traceback" not in child.stderr()
    finally:
        writer.close()
        if os.path.lexists(bell + ".fifo"):
            os.unlink(bell + ".fifo")


def _mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    err = result.stderr.strip()
    assert result.returncode != 0, result
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _an_hour_ahead() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 3600))


def test_an_archive_copy_that_fails_leaves_no_partial_page_to_block_the_next(
    jdir: str, small_tmpfs: Path
) -> None:
    """An archive on another file system takes a copy (shutil.move). One that failed there (a full
    archive disk, the service killed mid-copy) left the partial copy under the page's name: the
    archive held a truncated page, and every later pass refused to overwrite it ("exists already
    (never overwritten)"), so the journal was never archived again, even once space was freed.
    The copy goes to a temporary name, renamed into place when complete."""
    with Writer.create(jdir, "j", page_size=1 << 20, service=None) as writer:
        while len(list_pages(jdir, "j")) < 3:
            writer.write(bytes(4000))
    original = Path(page_path(jdir, "j", 0)).read_bytes()
    archive = small_tmpfs / "archive"  # 512 KiB: a 1 MiB page does not fit
    err = _one_line_error(_mmipc("prune", jdir, "j", "--before", _an_hour_ahead(), "--archive", str(archive)))
    assert "No space left" in err, err
    assert os.listdir(archive) == [], "a partial page was left in the archive"
    assert list_pages(jdir, "j")[0] == 0
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_tmpfs)], check=True)
    done = _mmipc("prune", jdir, "j", "--before", _an_hour_ahead(), "--archive", str(archive))
    assert done.returncode == 0, done.stderr
    assert (archive / "j.00000000.journal").read_bytes() == original


# The main thread notifies the service again and again, as a writer does at each page switch; a
# SIGUSR1 handler asks the service for its status meanwhile (a "dump status" signal).
_STATUS_IN_A_HANDLER_DURING_NOTIFY = """
import os, signal, sys, threading
from mmipc import UsageError, service_status
from mmipc.service._link import Link
home = sys.argv[1]
service_status(home)  # the link is made outside any handler
link = next(iter(Link._links.values()))
answers = {"answered": 0, "refused": 0}

def handler(signum, frame):
    try:
        service_status(home)
        answers["answered"] += 1
    except UsageError:
        answers["refused"] += 1

signal.signal(signal.SIGUSR1, handler)
done = threading.Event()

def signals():
    for _ in range(300):
        os.kill(os.getpid(), signal.SIGUSR1)
        threading.Event().wait(0.002)
    done.set()

threading.Thread(target=signals).start()
while not done.is_set():
    link.notify("unregister_reader", name="nobody")
print("handled", sum(answers.values()), flush=True)
"""


def test_an_archive_pass_killed_after_its_copy_is_finished_by_the_next(jdir: str, small_tmpfs: Path) -> None:
    """A pass killed between the archive copy and the unlink of the page (shutil.move's copy, then
    its unlink) left the page in both places; every later pass refused to overwrite the copy, and
    the journal was never archived again. An identical copy there now only needs the unlink."""
    with Writer.create(jdir, "j", page_size=64 << 10, service=None) as writer:
        while len(list_pages(jdir, "j")) < 3:
            writer.write(bytes(4000))
    archive = small_tmpfs / "archive"
    archive.mkdir()
    page = Path(page_path(jdir, "j", 0))
    (archive / page.name).write_bytes(page.read_bytes())  # where the kill left it
    done = _mmipc("prune", jdir, "j", "--before", _an_hour_ahead(), "--archive", str(archive))
    assert done.returncode == 0, done.stderr
    assert list_pages(jdir, "j")[0] == 2 and sorted(os.listdir(archive))[:2] == [
        page.name,
        "j.00000001.journal",
    ]


def test_a_service_request_from_a_signal_handler_inside_a_notify_is_refused_not_a_deadlock(
    procs: Procs, service: ServiceProcess
) -> None:
    """Red team 8 made a request from a signal handler inside a request of the same thread a
    UsageError instead of a wait for the link's lock that thread holds. `notify` (a writer's page
    switch, a reader's add_journal and close) holds that lock too, and did not say so: a handler
    that asked the service anything while its thread was inside a notify (draining the replies)
    waited for the lock for good (faulthandler: handler -> service_status -> request ->
    _one_at_a_time, under notify -> _send_notifications -> _drain). The process hung."""
    child = Child([sys.executable, "-c", _STATUS_IN_A_HANDLER_DURING_NOTIFY, service.home])
    procs.started.append(child)
    child.expect_line("handled", timeout=120)  # some signals may merge: the count varies
    child.finish()


def test_a_metrics_port_already_taken_is_one_line_naming_it(tmp_path: Path) -> None:
    """The service started, then died with "mmipc service: Address already in use": no word of
    --metrics or of the port, on a command that also listens on a socket of its own."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        home = str(tmp_path / "home")
        done = _mmipc("service", "--home", home, "--metrics", address)
    err = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert err.startswith(f"mmipc service: --metrics {address}: cannot listen there"), err
    assert not os.path.exists(os.path.join(home, "service.sock"))
