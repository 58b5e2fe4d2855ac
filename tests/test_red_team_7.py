"""Red team 7: paths with NUL bytes, counter files version 2, forked children, the service's
socket, attacked as a careless or hostile user would."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Procs, ServiceProcess, wait_for
from mmipc import CursorError, Reader, Service, UsageError, Writer, service_status
from mmipc.journal._bell import owner_alive, pid_namespace, start_ticks
from mmipc.journal._durable import FORMAT as CURSOR_FORMAT
from mmipc.journal._durable import read_record
from mmipc.journal._files import list_pages, pid_alive
from mmipc.service._retention import holds

NUL_PATHS: dict[str, Callable[[str], Any]] = {
    "writer": lambda d: Writer.create(d, "md", service=None),
    "add_journal": lambda d: Reader.create("nul-reader", service=None).add_journal(d, "md"),
    "remove_journal": lambda d: Reader.create("nul-reader", service=None).remove_journal(d, "md"),
    "cursor_dir": lambda d: Reader.create("nul-reader", service=None, durable=True, cursor_dir=d),
    "service_home": lambda d: Reader.create("nul-reader", service=d),
    "analysis": lambda d: _to_numpy(d),
}


def _to_numpy(directory: str) -> Any:
    analysis = pytest.importorskip("mmipc.analysis")
    return analysis.to_numpy(directory, "md", msg_type=101)


@pytest.mark.parametrize("use", NUL_PATHS.values(), ids=NUL_PATHS.keys())
def test_a_directory_with_a_nul_byte_is_a_usage_error_naming_it(jdir: str, use: Callable[[str], Any]) -> None:
    """A path with a NUL byte (a C string cut short, a bad decode) raised a bare ValueError
    "embedded null byte" from deep inside the first os call: no path, not our error."""
    with pytest.raises(UsageError, match="NUL byte") as caught:
        use(jdir + "\0evil")
    assert "evil" in str(caught.value)


@pytest.mark.parametrize("directory", [b"/tmp", 5], ids=["bytes", "int"])
def test_a_directory_that_is_not_a_str_path_is_a_usage_error(jdir: str, directory: object) -> None:
    """bytes made it to a str regex (TypeError "cannot use a string pattern on a bytes-like
    object"), an int to os.fspath (TypeError): now our error, naming what was given."""
    with Reader.create("typed-reader", service=None) as reader:
        with pytest.raises(UsageError, match="must be a str or a path of str"):
            reader.add_journal(directory, "md")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be a str or a path of str"):
        Writer.create(directory, "md", service=None)  # type: ignore[arg-type]


def _state(pid: int) -> tuple[bytes, int]:
    """State and thread count of `pid`: a process killed -9 is (Z, 1) once all its threads ended."""
    with open(f"/proc/{pid}/status", "rb") as f:
        fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
    return fields[b"State"].split()[0], int(fields[b"Threads"])


def test_a_reader_killed_but_not_reaped_holds_no_page(jdir: str, procs: Procs) -> None:
    """A reader killed -9 is a zombie until its parent waits for it, and kill(pid, 0) succeeds on
    a zombie: its counter file held every page from its position on (retention and `mmipc prune`
    kept them, "held by reader zombie") for as long as the parent lived without reaping it, a
    supervisor's day. Its bell-list slots were never freed either (the same `pid_alive`)."""
    with Writer.create(jdir, "j", page_size=64 * 1024) as writer:
        for i in range(6000):
            writer.write(i.to_bytes(8, "little") + bytes(56))
    child = procs.spawn_code(
        "from mmipc import Reader\n"
        "r = Reader.create('zombie')\n"
        f"r.add_journal({jdir!r}, 'j', start='begin')\n"
        "r.read()\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(3600)\n"
    )
    procs.expect_line(child, "ready")
    home = os.environ["MMIPC_HOME"]
    wait_for(lambda: [h["page_no"] for h in holds(home, jdir, "j")] == [0], what="the reader's hold")
    child.proc.send_signal(signal.SIGKILL)  # not waited for: a zombie until the test's end
    wait_for(lambda: _state(child.pid) == (b"Z", 1), what="the reader to be a zombie")

    assert holds(home, jdir, "j") == []
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "prune", "--before", "2100-01-01", jdir, "j"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert min(list_pages(jdir, "j")) > 0, out.stdout


def test_a_process_with_more_than_1024_descriptors_open_can_link_to_the_service(
    jdir: str, procs: Procs
) -> None:
    """The link waited for replies with select(), which refuses a descriptor past FD_SETSIZE
    (1024): a process with that many files or sockets open (a gateway's connections) got
    "ValueError: filedescriptor out of range in select()" from every linked Writer.create and
    Reader.create, whatever its RLIMIT_NOFILE."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) does not allow 1100 open descriptors")
    child = procs.spawn_code(
        "import os, resource\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))\n"
        "held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]\n"
        "from mmipc import Reader, Writer\n"
        f"with Writer.create({jdir!r}, 'many') as w, Reader.create('many-fds') as r:\n"
        "    for i in range(100): w.write(i.to_bytes(8, 'little'))\n"
        f"    r.add_journal({jdir!r}, 'many')\n"
        "    print('read', sum(1 for _ in iter(r.read, None)), flush=True)\n"
    )
    assert procs.expect_line(child, "read") == "read 100", child.stderr()
    procs.finish(child)


def fill(mount: Path) -> None:
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


READ_ALL = (
    "import sys\n"
    "from mmipc import Reader\n"
    "r = Reader.create('on-full-disk', service=None if sys.argv[1] == '-' else sys.argv[1])\n"
    "r.add_journal(sys.argv[2], 'md')\n"
    "print('read', sum(1 for _ in iter(r.read, None)), flush=True)\n"
    "r.close()\n"
)


def _read_all(home: str, directory: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", READ_ALL, home, directory], capture_output=True, text=True, timeout=120
    )


def test_a_reader_linked_to_a_service_on_a_full_home_is_refused_not_killed_by_sigbus(
    small_tmpfs: Path, jdir: str
) -> None:
    """Reader.create on a home whose filesystem is full (a tmpfs /run/user, /tmp) died of SIGBUS
    ("Bus error", exit -7) in the counter file's first store: the file was made by ftruncate, a
    hole, and a store into a hole of a full tmpfs cannot be backed. Now the file is allocated, and
    a reader that cannot make it is refused with a StorageError naming it (a reader that publishes
    no position holds no page against retention: docs/reliability.md); its journal is untouched."""
    with Writer.create(jdir, "md", service=None) as writer:
        for i in range(10):
            writer.write(i.to_bytes(8, "little"))
    service = ServiceProcess(str(small_tmpfs / "home"))
    service.start()
    try:
        fill(small_tmpfs)
        refused = subprocess.run(
            [sys.executable, "-c", REFUSED, service.home, jdir], capture_output=True, text=True, timeout=120
        )
    finally:
        service.stop()
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.startswith("StorageError ") and "on-full-disk" in refused.stdout, refused.stdout
    assert refused.stdout.count("\n") == 1, "one line naming the file"
    assert _read_all("-", jdir).stdout == "read 10\n"


REFUSED = (
    "import sys\n"
    "from mmipc import Reader, StorageError\n"
    "try:\n"
    "    Reader.create('on-full-disk', service=sys.argv[1])\n"
    "except StorageError as exc:\n"
    "    print('StorageError', exc)\n"
)


def test_a_reader_of_a_journal_on_a_full_disk_is_not_killed_by_sigbus(small_tmpfs: Path) -> None:
    """A journal's bells list (NAME.bells, 16,512 bytes beside its pages) is made by ftruncate: a
    hole. Once its filesystem filled up (a trading day's journals filling their disk), any reader
    that subscribed to the journal died of SIGBUS in its first store into the list; the pages
    themselves are posix_fallocate'd exactly so that a full disk is an error, never a signal."""
    directory = str(small_tmpfs / "journals")
    with Writer.create(directory, "md", service=None, page_size=64 * 1024) as writer:
        for i in range(10):
            writer.write(i.to_bytes(8, "little"))
    fill(small_tmpfs)
    out = _read_all("-", directory)
    assert (out.returncode, out.stdout) == (0, "read 10\n"), out.stderr


def test_a_reader_whose_main_thread_ended_while_another_reads_on_is_alive(procs: Procs) -> None:
    """The other side of the zombie rule: a process whose main thread called pthread_exit while
    another thread goes on reading shows State Z in /proc/PID too (its thread-group leader), with
    more than one thread. It lives: its pages, bell and slots must stay."""
    child = procs.spawn_code(
        "import ctypes, threading, time\n"
        "go = threading.Event()\n"
        "def work():\n"
        "    go.wait()\n"
        "    print('leader gone', flush=True)\n"
        "    while True: time.sleep(1)\n"
        "threading.Thread(target=work).start()\n"
        "go.set()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    procs.expect_line(child, "leader gone")
    wait_for(lambda: _state(child.pid) == (b"Z", 2), what="the main thread to end")
    assert pid_alive(child.pid)
    assert owner_alive(child.pid, start_ticks(child.pid), pid_namespace())


JOURNAL_COMMANDS = {
    "export": ["export", "-o", "out.csv"],
    "replay": ["replay", "--to", "replayed"],
    "bridge-out": ["bridge", "out", "--nats", "nats://127.0.0.1:1", "--stream", "s"],
    "tail": ["tail", "--no-follow"],
}


@pytest.mark.parametrize("command", JOURNAL_COMMANDS.values(), ids=JOURNAL_COMMANDS.keys())
def test_the_help_offers_journal_paths_only_where_the_command_takes_them(
    tmp_path: Path, jdir: str, command: list[str]
) -> None:
    """`mmipc export --help` (and replay's, and bridge out's) said "a path with a slash names a
    journal elsewhere", and the command then refused such a path: "this command takes journals of
    DIR only". Each help now says what its command does with one."""
    words = command[:2] if command[0] == "bridge" else command[:1]
    helped = subprocess.run(
        [sys.executable, "-m", "mmipc", *words, "--help"], capture_output=True, text=True, timeout=60
    )
    offers_paths = "names a journal elsewhere" in " ".join(helped.stdout.split())
    used = subprocess.run(
        [sys.executable, "-m", "mmipc", *command, jdir, "../elsewhere/md"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    refused = "journals of DIR only" in used.stderr
    assert offers_paths != refused, (helped.stdout, used.stderr)


def _nul_cursor_home(tmp_path: Path, jdir: str) -> str:
    """A home whose cursor file `nul.cursor` passes its checksum, one entry's directory holding a
    NUL byte (a careful forger's, or a record written through a buggy binding)."""
    home = tmp_path / "home"
    (home / "cursors").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    entry = {"directory": jdir + "\0x", "name": "j", "page_no": 0, "offset": 4096, "nano": 0, "seq": -1}
    body = json.dumps({"reader": "nul", "generation": 1, "journals": [entry]}).encode()
    (home / "cursors" / "nul.cursor").write_bytes(f"{CURSOR_FORMAT} {zlib.crc32(body):08x}\n".encode() + body)
    return str(home)


def test_a_cursor_record_whose_directory_has_a_nul_byte_is_a_cursor_error(tmp_path: Path, jdir: str) -> None:
    """The entry check took any str as a directory: with a NUL byte in it, retention's `holds`
    (os.path.realpath), so every prune and the service's retention of every journal, and
    `mmipc cursors --reset NAME --to T` raised ValueError "embedded null byte". A damaged entry is a
    CursorError, which holds every page and is listed as such."""
    home = _nul_cursor_home(tmp_path, jdir)
    with pytest.raises(CursorError, match="bad journal entry"):
        read_record(os.path.join(home, "cursors", "nul.cursor"))
    assert [h["page_no"] for h in holds(home, jdir, "j")] == [0]
    reset = subprocess.run(
        [sys.executable, "-m", "mmipc", "cursors", "--home", home, "--reset", "nul", "--to", "2026-01-01"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 1 and "Traceback" not in reset.stderr, reset.stderr
    assert "bad journal entry" in reset.stderr


def test_a_counter_file_whose_directory_has_a_nul_byte_breaks_neither_status_nor_retention(
    tmp_path: Path, jdir: str
) -> None:
    """A counter file (a live owner's: this process) whose journal list names a directory with a
    NUL byte: `mmipc status` failed whole ("the service failed on this status: ValueError('embedded
    null byte')") and so did retention of every journal, for as long as the owner lived."""
    from mmipc.journal import _metrics as m

    home = str(tmp_path / "home")
    jids = json.dumps([[jdir + "\0x", "j"]]).encode()
    data = bytearray(m.COUNTER_FILE_SIZE)
    m.HEADER.pack_into(data, 0, m.MAGIC, m.VERSION, os.getpid(), 2, 0, 0, 0, 0, len(jids), 1)
    m.START.pack_into(data, m.START_AT, start_ticks("self"))
    m.START.pack_into(data, m.PID_NS_AT, pid_namespace())
    m.SLOT.pack_into(data, m.SLOTS_AT, 0, 4096, 0, 0)
    data[m.JOURNALS_AT : m.JOURNALS_AT + len(jids)] = jids
    with Service(home):
        Path(home, m.READERS_DIR).mkdir(exist_ok=True)
        Path(home, m.READERS_DIR, "nul" + m.SUFFIX).write_bytes(data)
        assert "nul" in [r["name"] for r in service_status(home)["readers"]]
        assert [h["page_no"] for h in holds(home, jdir, "j")] == [0]  # its positions unknown: all held
