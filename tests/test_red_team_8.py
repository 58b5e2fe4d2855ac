"""Red team 8: the newest parts (hot journals and naps, the foreign-namespace heartbeat, the allocated
side files, the service link, the C API on damaged files), attacked as a careless or hostile user
would. Defects in files other helpers own are strict xfails naming the file, for the lead to route."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Child, Procs, ServiceProcess, dead_pid
from mmipc import Block, Reader, Service, UsageError, Writer
from mmipc.journal._bell import COUNT, LIST_HEADER, PROTOCOL_2, SLOT, _bell_dir, bells_path


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


def test_a_reader_whose_counter_file_grows_on_a_full_home_is_not_killed_by_sigbus(
    small_tmpfs: Path, jdir: str
) -> None:
    """A linked reader's counter file is allocated at 16 KiB (posix_fallocate) so that a full home
    is an error, never a signal. A reader that follows more journals than that holds (version 2:
    a risk monitor of 300 journals) grew it with mmap.resize, a hole: once the home's filesystem
    was full, the publisher's first store past 16 KiB killed the whole reader process ("Bus error",
    exit -7), in add_journal, whose publish is documented never to fail it. The grown part is
    allocated now (`Board._grow`)."""
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


_AT_THE_LIMIT = """
import asyncio, os, resource, sys
from mmipc import MmipcError, Reader, Writer
import mmipc.journal._aio  # imported, and the event loop made, before the limit: not ours to test
directory, extra = sys.argv[1], int(sys.argv[2])
loop = asyncio.new_event_loop()
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1 + extra, hard))
kept, step = [], "writer"

async def aread(reader):
    return sum([1 async for _ in reader.aframes(timeout=0.05)])

try:
    kept.append(Writer.create(directory, "md", page_size=64 * 1024))
    step = "write"
    for _ in range(200):  # four pages: page switches
        kept[0].write(bytes(1000))
    step = "reader"
    kept.append(Reader.create("at-the-limit"))
    step = "add_journal"
    kept[1].add_journal(directory, "md")
    kept[1].add_journal(directory, "not-yet")
    step = "frames"
    read = sum(1 for _ in kept[1].frames(timeout=0.05))
    step = "aframes"
    loop.run_until_complete(aread(kept[1]))
    print("ok", read)
except MmipcError as exc:
    print("at", step, type(exc).__name__, exc)
finally:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for handle in reversed(kept):
        handle.close()
"""


def test_out_of_descriptors_at_every_step_of_a_linked_reader_and_writer_is_one_clear_line(
    tmp_path: Path,
) -> None:
    """A process given one descriptor more each run, from none free to enough: writer, page
    switches, linked reader (counter file, service link), add_journal, frames (bell, bell list)
    and aframes (its FIFO). Every step that runs out says so in the one line naming `ulimit -n`;
    aframes' was "cannot list journal directory ...: Too many open files", with neither."""
    steps = set()
    for extra in range(64):
        directory = tmp_path / str(extra)
        done = subprocess.run(
            [sys.executable, "-c", _AT_THE_LIMIT, str(directory), str(extra)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert done.stdout.count("\n") == 1, done.stdout
        if done.stdout == "ok 200\n":
            break
        assert done.stdout.startswith("at "), done.stdout
        assert " StorageError " in done.stdout and "`ulimit -n`" in done.stdout, done.stdout
        steps.add(done.stdout.split()[1])
    else:
        pytest.fail("64 more descriptors were not enough")
    assert {"writer", "add_journal", "frames", "aframes"} <= steps, steps


NATIVE = Path(__file__).resolve().parent.parent / "src" / "mmipc" / "journal" / "_native"

_C_MODES = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "mmipc.h"
/* modes DIR MODE: open a writer with options.mode MODE (octal) under umask 0 and write a frame */
int main(int argc, char **argv) {
    (void)argc;
    umask(0);  /* a daemon's: the mode asked for is all that guards the files */
    mmipc_writer_options o = {0, 0, (unsigned int)strtoul(argv[2], NULL, 8)};
    mmipc_writer *w = NULL;
    int rc = mmipc_writer_open(&w, argv[1], "md", &o);
    if (rc == 0) {
        rc = mmipc_write(w, "x", 1, 1, 0) > 0 ? 0 : -100;
        mmipc_writer_close(w);
    }
    printf("%d %s\n", rc, rc < 0 ? mmipc_last_error() : "");
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_modes(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C API cannot be built here")
    out = tmp_path_factory.mktemp("cmodes")
    (out / "modes.c").write_text(_C_MODES)
    cmd = [gcc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{NATIVE}", "-o", str(out / "modes")]
    subprocess.run([*cmd, str(out / "modes.c"), str(NATIVE / "mmipc.c")], check=True, capture_output=True)
    return str(out / "modes")


def _c_writer(prog: str, directory: Path, mode: int) -> str:
    done = subprocess.run([prog, str(directory), oct(mode)[2:]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


@pytest.mark.parametrize("mode", [0o777, 0o666, 0o660, 0o4600, 0o700, 0o400, 0o200], ids=oct)
def test_the_c_writer_refuses_a_file_mode_that_lets_another_user_write_like_python(
    c_modes: str, tmp_path: Path, mode: int
) -> None:
    """Python refuses any mode but 0600, 0640 and 0644 (docs/format.md: nobody but the owner may
    ever write). `mmipc_writer_options.mode` took anything: 0777 made world-writable, executable
    pages and lock file (fchmod sets exactly the mode, whatever the umask), so any user could
    rewrite the frames every reader trusts, or plant a lock; 04600 set the setuid bit. Now it is
    MMIPC_E_USAGE with one line naming the mode, before any file is made."""
    out = _c_writer(c_modes, tmp_path / "journals", mode)
    assert out.startswith("-1 invalid file mode ") and oct(mode)[2:] in out, out
    assert out.count("\n") == 1
    assert not (tmp_path / "journals").exists()


@pytest.mark.parametrize(("mode", "searchable"), [(0o600, 0o700), (0o640, 0o750), (0o644, 0o755)], ids=oct)
def test_a_journal_directory_the_c_writer_makes_has_the_python_writers_mode(
    c_modes: str, tmp_path: Path, mode: int, searchable: int
) -> None:
    """The C writer made its journal directory with mkdir(0777): under a daemon's umask 0, a
    world-writable directory, where any user may plant the journal's next page (readers read it as
    the writer's), its bells list or its lock. Python gives the directory it makes exactly the
    search bits of the file mode (docs/format.md, *File modes and ownership*); the C writer now
    does too (its missing parents, as Python's, get 0777 less the umask)."""
    directory = tmp_path / "a" / "b"
    assert _c_writer(c_modes, directory, mode) == "0 \n"
    assert stat.S_IMODE(directory.stat().st_mode) == searchable, oct(directory.stat().st_mode)
    page = directory / "md.00000000.journal"
    assert stat.S_IMODE(page.stat().st_mode) == mode


def test_a_bell_list_slot_whose_path_holds_a_nul_byte_costs_no_reader_its_journal(jdir: str) -> None:
    """A slot's bell path is 240 NUL-padded bytes; a damaged one (a torn write, a stray byte past
    the padding) holds a NUL before other bytes. The C writer reads it as a C string and rings on;
    but a subscriber freeing the dead reader's slot passed it to os.stat: ValueError "embedded null
    byte" out of add_journal, so no reader could follow that journal at all. Now such a path names
    nothing to remove, and the reader follows the journal, rung as any other."""
    with Writer.create(jdir, "md", service=None) as writer:
        writer.write(b"before")
        with open(bells_path(jdir, "md"), "r+b") as f:
            raw = os.fsencode(os.path.join(_bell_dir(), "mmipc-bell.dead")) + b"\0torn"
            f.seek(LIST_HEADER)
            f.write(SLOT.pack(PROTOCOL_2, 2, dead_pid(), 0, raw))
            f.seek(COUNT)
            f.write((1).to_bytes(4, "little"))
        with Reader.create("nul-slot", service=None) as reader:
            reader.add_journal(jdir, "md")
            assert bytes(reader.read().data) == b"before"  # type: ignore[union-attr]
            writer.write(b"after")  # rung: no backstop below, the ring alone wakes the reader
            frames = reader.frames(timeout=60, wait=Block(spin=0, max_nap=None))
            assert bytes(next(frames).data) == b"after"


_STATUS_IN_A_HANDLER = """
import os, signal, sys, threading
from mmipc import UsageError, service_status
from mmipc.service._link import Link
home = sys.argv[1]
service_status(home)  # the link is made outside any handler
link = next(iter(Link._links.values()))

def handler(signum, frame):
    try:
        service_status(home)
        print("handler answered", flush=True)
    except UsageError as exc:
        print("handler refused:", exc, flush=True)

def signal_inside_the_request():
    while not link._io.locked():  # the main thread's request waits for the stopped service
        threading.Event().wait(0.001)
    os.kill(os.getpid(), signal.SIGUSR1)

def service_stopped():
    with open(f"/proc/{link.service_pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"

signal.signal(signal.SIGUSR1, handler)
print("linked", flush=True)
while not service_stopped():  # the test stops it: the request below waits, holding the link
    threading.Event().wait(0.001)
threading.Thread(target=signal_inside_the_request).start()
print("main answered", "readers" in service_status(home), flush=True)
"""


def test_a_service_request_from_a_signal_handler_inside_a_request_is_refused_not_a_deadlock(
    tmp_path: Path, procs: Procs
) -> None:
    """The link's socket lock is not reentrant: a signal handler that asked the service anything
    (service_status, Writer.create, Reader.create: a SIGUSR1 that dumps status) while its thread
    was inside a request waited for that lock, held by the very thread it interrupted: the process
    hung for good (seen at once with status calls interrupted at random; the first link's own
    construction deadlocked the same way on the class's lock). Now the inner call is refused with
    a UsageError, and the interrupted request completes."""
    service = ServiceProcess(str(tmp_path / "home"))
    service.start()
    assert service.child is not None
    child = Child([sys.executable, "-c", _STATUS_IN_A_HANDLER, service.home])
    procs.started.append(child)
    try:
        child.expect_line("linked")
        service.child.proc.send_signal(signal.SIGSTOP)  # the child's next request waits, holding the link
        line = child.expect_line("handler ")
    finally:
        service.child.proc.send_signal(signal.SIGCONT)
    try:
        assert line.startswith("handler refused: ") and "signal handler" in line, line
        assert child.expect_line("main answered") == "main answered True"
        child.finish()
    finally:
        service.stop()
