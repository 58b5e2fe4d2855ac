"""The service: a real `mmipc service` process, its real socket, real clients and real kill -9."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Child, Procs, ServiceProcess, wait_for
from mmipc import (
    JournalLockedError,
    Reader,
    ReaderNameTakenError,
    Service,
    ServiceAlreadyRunningError,
    ServiceUnavailableError,
    Writer,
    service_status,
)
from mmipc.service._protocol import LENGTH, encode

PAGE = 64 * 1024


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A service of this test's own, which the test may kill."""
    svc = ServiceProcess(str(tmp_path / "home"))
    svc.start()
    yield svc
    svc.stop()


def env_for(svc: ServiceProcess) -> dict[str, str]:
    return {**os.environ, "MMIPC_HOME": svc.home}


def raw_client(svc: ServiceProcess, hello: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(svc.socket)
    if hello:
        assert ask(sock, {"op": "hello", "id": 1, "version": 1, "pid": os.getpid()})["ok"]
    return sock


def ask(sock: socket.socket, message: dict[str, object]) -> dict[str, object]:
    sock.sendall(encode(message))
    return answer(sock)


def answer(sock: socket.socket) -> dict[str, object]:
    head = _exactly(sock, 4)
    reply: dict[str, object] = json.loads(_exactly(sock, LENGTH.unpack(head)[0]))
    return reply


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def closed_by_peer(sock: socket.socket) -> bool:
    """Read (an error reply, perhaps) until the service closes the connection."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_second_writer_is_refused_by_any_spelling_and_accepted_right_after_kill9(
    procs: Procs, fresh: ServiceProcess, tmp_path: Path
) -> None:
    real = tmp_path / "md"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    holder = procs.spawn("writer_proc.py", str(real), "ticks", str(PAGE), "-1", env=env_for(fresh))
    procs.expect_line(holder, "ready")
    wait_for(lambda: has_a_frame(str(real), "ticks"), what="the holder's first frame")
    for spelling in (str(real), str(alias), f"{real}/../md"):
        with pytest.raises(JournalLockedError, match=f"pid {holder.pid}"):
            Writer.create(spelling, "ticks", service=fresh.home)
        # The registry itself keys journals by their real path, whatever the spelling.
        reply = ask(
            raw_client(fresh), {"op": "register_writer", "id": 2, "directory": spelling, "name": "ticks"}
        )
        assert reply["error"] == "journal_locked" and reply["pid"] == holder.pid
    procs.kill9(holder)
    with Writer.create(alias, "ticks", service=fresh.home) as writer:  # at once: no retry, no sweep
        assert writer.last_nano > 0


def has_a_frame(directory: str, name: str) -> bool:
    with Reader.create("probe", service=None) as reader:
        reader.add_journal(directory, name)
        return reader.read() is not None


def test_reader_names_are_unique_among_live_readers(procs: Procs, fresh: ServiceProcess) -> None:
    code = (
        "import sys; from mmipc import Reader; reader = Reader.create('strategy'); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    holder = Child([sys.executable, "-c", code], env=env_for(fresh), stdin=subprocess.PIPE)
    procs.started.append(holder)
    holder.expect_line("ready")
    with pytest.raises(ReaderNameTakenError, match=f"pid {holder.pid}"):
        Reader.create("strategy", service=fresh.home)
    holder.kill9()
    Reader.create("strategy", service=fresh.home).close()


def test_service_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    procs: Procs, fresh: ServiceProcess, jdir: str
) -> None:
    env = env_for(fresh)
    reader = procs.spawn("reader_proc.py", jdir, "flow", env=env)
    procs.expect_line(reader, "ready")
    writer = procs.spawn(
        "writer_proc.py", jdir, "flow", str(PAGE), "150000", "--end", "--pace-us", "20", env=env
    )
    procs.expect_line(writer, "ready")
    fresh.kill9()
    assert writer.proc.poll() is None, "the writer must still be writing while the service is down"
    fresh.start()

    def registered_again() -> bool:
        status = service_status(fresh.home)
        return [j["writer_pid"] for j in status["journals"]] == [writer.pid] and any(
            r["pid"] == reader.pid and r["journals"] == [[jdir, "flow"]] for r in status["readers"]
        )

    wait_for(registered_again, what="the live clients to register with the restarted service")
    procs.finish(writer)
    result = json.loads(procs.finish(reader).strip().splitlines()[-1])
    assert result == {"counts": {"flow": 150000}, "errors": []}


def garbage_clients(svc: ServiceProcess) -> Iterator[tuple[str, socket.socket]]:
    rng = random.Random(5)
    for i in range(30):
        sock = raw_client(svc, hello=False)
        sock.sendall(rng.randbytes(rng.randrange(1, 300)))
        yield f"random bytes {i}", sock
    for size in (0, 10**9, 2**32 - 1, 64 * 1024 + 1):
        sock = raw_client(svc, hello=False)
        sock.sendall(LENGTH.pack(size) + b"{}")
        yield f"length {size}", sock
    sock = raw_client(svc, hello=False)
    sock.sendall(LENGTH.pack(100) + b'{"op": "hel')
    sock.shutdown(socket.SHUT_WR)
    yield "truncated message", sock
    for body in (b"[1, 2]", b"\xff\xfe", b'"hello"', b"{" * 5000):
        sock = raw_client(svc, hello=False)
        sock.sendall(LENGTH.pack(len(body)) + body)
        yield f"not an object: {body[:10]!r}", sock


@pytest.mark.once  # .ci/run: native pass only (raw requests to the service, which never uses the backend)
def test_garbage_on_the_socket_is_refused_and_everyone_else_is_served(fresh: ServiceProcess) -> None:
    good = Reader.create("good", service=fresh.home)
    for what, sock in garbage_clients(fresh):
        assert closed_by_peer(sock), what
        status = service_status(fresh.home)  # the service answers everyone else throughout
        assert [r["name"] for r in status["readers"]] == ["good"], what
    shaped = raw_client(fresh)
    bad_requests: list[dict[str, object]] = [
        {"op": "nope", "id": 3},
        {"op": "register_writer", "id": 4, "directory": 5, "name": []},
        {"op": "register_reader", "id": 5, "name": "../x"},
        {"op": "page", "id": 6, "directory": "/tmp", "name": "x", "page_no": True, "page_size": 1},
        {"op": "status", "id": "seven"},
        {"id": 8},
    ]
    for request in bad_requests:
        reply = ask(shaped, request)
        assert reply["ok"] is False and reply["error"] == "bad_request", request
    assert ask(shaped, {"op": "status", "id": 9})["ok"] is True  # still served after its mistakes
    silent = raw_client(fresh, hello=False)
    assert closed_by_peer(silent)  # dropped after the hello timeout, without stalling anyone
    good.close()


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid needs root (CI runs as root)")
def test_a_client_of_another_uid_is_refused() -> None:
    # A home the other uid can reach, and a socket it may open: loosened on purpose, so that the
    # credential check (SO_PEERCRED) is what stands in its way.
    home = tempfile.mkdtemp(prefix="mmipc-uid-", dir="/tmp")
    svc = ServiceProcess(home)
    svc.start()
    try:
        os.chmod(home, 0o711)
        os.chmod(svc.socket, 0o666)
        pid = os.fork()
        if pid == 0:
            os._exit(_connect_as_nobody(svc.socket))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert service_status(home)["service"]["pid"] == svc.child.pid  # type: ignore[union-attr]
    finally:
        svc.stop()
        shutil.rmtree(home, ignore_errors=True)


def _connect_as_nobody(path: str) -> int:
    """In a forked child: become uid 65534 and say hello; 0 if the service refused by uid."""
    try:
        os.setgid(65534)
        os.setuid(65534)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        try:
            sock.sendall(encode({"op": "hello", "id": 1, "version": 1, "pid": os.getpid()}))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at accept already: the refusal waits in our receive queue
        reply = answer(sock)
        refused = reply["error"] == "refused" and "uid 65534" in str(reply["message"])
        return 0 if refused and closed_by_peer(sock) else 1
    except BaseException as exc:  # report, never run pytest's machinery in the child
        print(f"child failed: {exc!r}", file=sys.stderr)
        return 3


def test_status_lists_what_is_live_in_python_and_on_the_command_line(
    fresh: ServiceProcess, jdir: str
) -> None:
    writer = Writer.create(jdir, "st", page_size=PAGE, service=fresh.home)
    for i in range(1000):
        writer.write(i.to_bytes(4, "little") * 50)
    reader = Reader.create("status-reader", service=fresh.home)
    reader.add_journal(jdir, "st")

    def listed() -> bool:
        readers = service_status(fresh.home)["readers"]
        wanted = {"name": "status-reader", "pid": os.getpid(), "journals": [[jdir, "st"]], "state": "live"}
        return len(readers) == 1 and wanted.items() <= readers[0].items()

    wait_for(listed, what="the reader and its journal in the status")
    status = service_status(fresh.home)
    [journal] = status["journals"]
    assert journal["writer_pid"] == os.getpid() and journal["last_nano"] == writer.last_nano
    assert journal["pages"] >= 4 and journal["directory"] == jdir
    cli = [sys.executable, "-m", "mmipc", "status", "--home", fresh.home]
    text = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    assert f"{jdir}/st" in text and "status-reader" in text and str(os.getpid()) in text
    parsed = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, check=True).stdout)
    assert parsed["journals"][0]["name"] == "st"
    writer.close()
    reader.close()

    def gone() -> bool:
        status = service_status(fresh.home)
        return [j["writer_pid"] for j in status["journals"]] == [None] and not status["readers"]

    wait_for(gone, what="closed readers to leave the status, and the journal to stay without a writer")


def test_the_service_prepares_the_next_page_before_the_writer_needs_it(
    fresh: ServiceProcess, jdir: str
) -> None:
    with Writer.create(jdir, "prep", page_size=PAGE, service=fresh.home) as writer:
        writer.write(b"first")
        for _ in range(5):
            writer.write(b"x" * 10000)  # past half of the first page: its next one is wanted now
        next_page = os.path.join(jdir, "prep.00000001.journal")
        wait_for(lambda: os.path.exists(next_page), what="the service to prepare page 1")
        assert service_status(fresh.home)["service"]["pages_prepared"] >= 1
        for _ in range(15):
            writer.write(b"x" * 10000)  # crosses into the prepared page, and on
    with Reader.create("prep", service=None) as reader:
        reader.add_journal(jdir, "prep")
        assert len(list(iter(reader.read, None))) == 21


def test_one_service_per_home_a_stale_socket_is_replaced_and_sigterm_cleans_up(tmp_path: Path) -> None:
    first = ServiceProcess(str(tmp_path / "home"))
    first.start()
    second = subprocess.run(
        [sys.executable, "-m", "mmipc", "service", "--home", first.home],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "already serves" in second.stderr
    with pytest.raises(ServiceAlreadyRunningError):
        Service(first.home).start()
    first.kill9()
    assert os.path.exists(first.socket)  # left behind by the killed service
    first.start()  # replaces it
    Reader.create("after-restart", service=first.home).close()
    first.stop()
    assert first.child is not None and first.child.proc.returncode == 0
    assert not os.path.exists(first.socket)


def test_without_a_service_clients_say_how_to_start_one_and_standalone_works(
    tmp_path: Path, jdir: str
) -> None:
    home = str(tmp_path / "nobody-home")
    expected = f"no mmipc service at {home}/service.sock .*start it with `mmipc service`"
    with pytest.raises(ServiceUnavailableError, match=expected):
        Writer.create(jdir, "alone", service=home)
    with pytest.raises(ServiceUnavailableError, match=expected):
        Reader.create("alone", service=home)
    assert not os.path.exists(os.path.join(jdir, "alone.lock"))  # refused before touching the journal
    with Writer.create(jdir, "alone", service=None) as writer:
        writer.write(b"standalone")


def test_service_runs_in_process_and_reports_status(tmp_path: Path, jdir: str) -> None:
    with Service(tmp_path / "home") as svc:
        with Writer.create(jdir, "inproc", service=svc.home) as writer:
            writer.write(b"x")
            [journal] = svc.status()["journals"]
            assert journal["name"] == "inproc" and journal["writer_pid"] == os.getpid()
    assert not os.path.exists(svc.socket_path)


def test_a_writer_unable_to_create_pages_gets_them_once_the_service_can(
    procs: Procs, fresh: ServiceProcess, jdir: str
) -> None:
    with Writer.create(jdir, "limited", page_size=PAGE, service=None) as writer:
        writer.write(b"page 0 exists")
    blocker = os.path.join(jdir, "limited.00000003.journal")
    code = f"""
import resource, signal, sys, time
from mmipc import StorageError, Writer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({PAGE // 2}, {PAGE // 2}))  # it cannot make pages itself
writer = Writer.create({jdir!r}, "limited", page_size={PAGE})
print("ready", flush=True)
sys.stdin.readline()
written, refused = 0, False
while written < 2000:
    try:
        writer.write(b"x" * 100)
        written += 1
    except StorageError:
        if not refused:
            print("refused", flush=True)
            refused = True
        time.sleep(0.005)
print("done", written, flush=True)
"""
    child = Child([sys.executable, "-c", code], env=env_for(fresh), stdin=subprocess.PIPE)
    procs.started.append(child)
    child.expect_line("ready")
    os.mkdir(blocker)  # when the writer starts page 2, the service's attempt at page 3 fails
    assert child.proc.stdin is not None
    child.proc.stdin.write("go\n")
    child.proc.stdin.flush()
    child.expect_line("refused")
    os.rmdir(blocker)
    assert child.expect_line("done") == "done 2000"  # the writer asked again; the service made the page
