"""The service never exits because of a client or of what it finds on disk; clients trust no stranger.

Each test drives a real `mmipc service` process over its real socket (issue 9).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Child, ServiceProcess, wait_for
from mmipc import Reader, ServiceRefusedError, UsageError, Writer, service_status
from mmipc.journal._files import create_page
from mmipc.service._protocol import MAX_MESSAGE, encode
from test_service import answer, ask, env_for, raw_client

PAGE = 64 * 1024
NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="another uid or a mount needs root (CI runs as root)")


class LimitedService(ServiceProcess):
    """A service process started with a lowered RLIMIT_NOFILE (its own, not ours)."""

    def __init__(self, home: str, nofile: int) -> None:
        super().__init__(home)
        self.nofile = nofile

    def start(self) -> None:
        limit = self.nofile
        self.child = Child(
            [sys.executable, "-m", "mmipc", "service", "--home", self.home],
            env={**os.environ, "MMIPC_HOME": self.home},
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
        )
        self.child.expect_line("mmipc service pid")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(str(tmp_path / "home"))
    svc.start()
    yield svc
    svc.stop()


def alive(svc: ServiceProcess) -> bool:
    assert svc.child is not None
    return svc.child.proc.poll() is None and service_status(svc.home)["service"]["pid"] == svc.child.pid


def pipelined(sock: socket.socket, requests: list[dict[str, object]]) -> list[dict[str, object]]:
    """Send the requests 500 at a time, each batch at once, and read their replies."""
    replies = []
    for start in range(0, len(requests), 500):
        batch = requests[start : start + 500]
        sock.sendall(b"".join(encode(r) for r in batch))
        replies += [answer(sock) for _ in batch]
    return replies


# -- 1. a large status ------------------------------------------------------------------------


@pytest.mark.once  # .ci/run: native pass only (raw requests to the service, which never uses the backend)
@pytest.mark.parametrize(("journals", "readers", "follows"), [(100, 10, 100), (3000, 300, 100)])
def test_a_status_far_over_the_request_cap_is_served(
    fresh: ServiceProcess, jdir: str, journals: int, readers: int, follows: int
) -> None:
    client = raw_client(fresh)
    names = [f"j{i:05d}" for i in range(journals)]
    replies = pipelined(
        client, [{"op": "register_writer", "id": 2, "directory": jdir, "name": n} for n in names]
    )
    requests: list[dict[str, object]] = []
    for r in range(readers):
        reader = f"reader-{r:04d}-" + "r" * 40
        requests.append({"op": "register_reader", "id": 3, "name": reader})
        requests += [
            {
                "op": "add_journal",
                "id": 4,
                "reader": reader,
                "directory": jdir,
                "name": names[(r + k) % journals],
            }
            for k in range(follows)
        ]
    replies += pipelined(client, requests)
    assert all(reply["ok"] for reply in replies)
    status = service_status(fresh.home)
    assert len(status["journals"]) == journals and len(status["readers"]) == readers
    assert all(len(r["journals"]) == follows for r in status["readers"])
    assert len(json.dumps(status)) > MAX_MESSAGE
    cli = [sys.executable, "-m", "mmipc", "status", "--home", fresh.home, "--json"]
    text = subprocess.run(cli, capture_output=True, text=True, check=True, timeout=120).stdout
    assert len(json.loads(text)["readers"]) == readers
    assert alive(fresh)


# -- 2. bad requests --------------------------------------------------------------------------


BAD_REQUESTS: list[dict[str, object]] = [
    {"op": "x" * 65_500, "id": 2},
    {"op": "register_writer", "id": 3, "directory": "/tmp/a\0b", "name": "j"},
    {"op": "add_journal", "id": 3, "reader": "r", "directory": "/tmp/a\0b", "name": "j"},
    {"op": "register_reader", "id": 4, "name": "r" * 65_400},
    {"op": "add_journal", "id": 6, "reader": "r" * 65_400, "directory": "/tmp", "name": "j"},
    {"op": "page", "id": 7, "directory": "/tmp/\0", "name": "j", "page_no": 0, "page_size": PAGE},
    {"op": "hello", "id": 9, "version": 10**30, "pid": 1},
]


def test_each_bad_request_gets_a_short_error_reply_and_the_service_serves_on(fresh: ServiceProcess) -> None:
    client = raw_client(fresh)
    for request in BAD_REQUESTS:
        reply = ask(client, request)
        assert reply["ok"] is False, request
        assert len(str(reply["message"])) < 1000
        assert alive(fresh)
    long_directory = {"op": "register_writer", "id": 10, "directory": "/" + "d" * 65_000, "name": "j"}
    assert ask(client, long_directory)["ok"] is True  # a path too long to list: status says so
    [journal] = service_status(fresh.home)["journals"]
    assert "name too long" in journal["error"]


json_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
fields = st.one_of(st.integers(-(2**70), 2**70), json_text, st.none(), st.booleans(), st.lists(st.integers()))


@pytest.mark.once  # .ci/run: native pass only (raw requests to the service, which never uses the backend)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(
        ["hello", "register_writer", "unregister_writer", "page", "register_reader"]
        + ["unregister_reader", "add_journal", "remove_journal", "status", "nope"]
    ),
    st.dictionaries(
        st.sampled_from(["directory", "name", "reader", "page_no", "page_size", "version", "pid"]), fields
    ),
)
def test_any_request_gets_a_reply_and_never_stops_the_service(
    fresh: ServiceProcess, op: str, extra: dict[str, object]
) -> None:
    # its own service (one for all examples): the session's, holding every journal the suite made,
    # took 100 ms a status and 18 s in all
    client = raw_client(fresh)
    try:
        reply = ask(client, {**extra, "op": op, "id": 2})
        assert isinstance(reply["ok"], bool)
        assert ask(client, {"op": "status", "id": 3})["ok"] is True
    finally:
        client.close()


# -- 3. an unreadable journal directory -------------------------------------------------------


def test_a_journal_directory_that_turns_into_a_file_or_a_loop_is_reported_not_fatal(
    fresh: ServiceProcess, tmp_path: Path
) -> None:
    gone, looped = tmp_path / "gone", tmp_path / "looped"
    for directory in (gone, looped):
        directory.mkdir()
        with Writer.create(directory, "j", page_size=PAGE, service=None) as writer:
            writer.write(b"x")
    client = raw_client(fresh)
    for i, directory in enumerate((gone, looped)):
        reply = ask(client, {"op": "register_writer", "id": i, "directory": str(directory), "name": "j"})
        assert reply["ok"]
    shutil.rmtree(gone)
    gone.write_bytes(b"not a directory")
    shutil.rmtree(looped)
    looped.symlink_to(looped)
    status = service_status(fresh.home)
    assert [("error" in j) for j in status["journals"]] == [True, True]
    assert alive(fresh)


# -- 4. out of file descriptors ---------------------------------------------------------------


def send_hello(sock: socket.socket) -> None:
    """Say hello; a service that already refused and closed this connection keeps its reply readable."""
    try:
        sock.sendall(encode({"op": "hello", "id": 1, "version": 1, "pid": os.getpid()}))
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_a_connection_flood_past_the_fd_limit_is_refused_and_the_service_serves_on(tmp_path: Path) -> None:
    svc = LimitedService(str(tmp_path / "home"), nofile=128)
    svc.start()
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(svc.socket)  # blocking: waits while the listen backlog is full
            sock.settimeout(60)
            flood.append(sock)
            send_hello(sock)
        refused = [answer(sock) for sock in flood[-50:]]
        assert all(r["error"] == "refused" and "too many" in str(r["message"]) for r in refused)
        with pytest.raises(ServiceRefusedError, match="too many"):
            Reader.create("late", service=svc.home)
        for sock in flood:
            sock.close()
        wait_for(lambda: _status_ok(svc), what="the service to serve again after the flood")
        assert svc.child is not None and "too many" in svc.child.stderr()
    finally:
        for sock in flood:
            sock.close()
        svc.stop()


def test_accept_out_of_descriptors_refuses_the_newcomer_and_the_service_serves_on(
    fresh: ServiceProcess,
) -> None:
    assert fresh.child is not None
    resource.prlimit(fresh.child.pid, resource.RLIMIT_NOFILE, (48, 48))  # below its session cap now
    flood: list[socket.socket] = []
    try:
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(fresh.socket)
            sock.settimeout(60)
            flood.append(sock)
            send_hello(sock)
        refused = [answer(sock) for sock in flood[-20:]]
        assert all("too many open files" in str(r["message"]) for r in refused), refused
        for sock in flood:
            sock.close()
        wait_for(lambda: _status_ok(fresh), what="the service to serve again after the flood")
        assert "too many open files" in fresh.child.stderr()
    finally:
        for sock in flood:
            sock.close()


def _status_ok(svc: ServiceProcess) -> bool:
    try:
        return alive(svc)
    except ServiceRefusedError:
        return False


# -- 5. the page-preparation thread -----------------------------------------------------------


def test_page_preparation_failures_are_refused_or_counted_and_the_thread_lives(
    fresh: ServiceProcess, jdir: str, tmp_path: Path
) -> None:
    client = raw_client(fresh)
    assert ask(client, {"op": "register_writer", "id": 2, "directory": jdir, "name": "j"})["ok"]
    page = {"op": "page", "directory": jdir, "name": "j"}
    reply = ask(client, {**page, "id": 3, "page_no": 0, "page_size": -1})
    assert reply["error"] == "bad_request" and "page_size" in str(reply["message"])
    short = tmp_path / "short"
    short.write_bytes(b"short")
    os.symlink(short, os.path.join(jdir, "j.00000002.journal"))
    assert ask(client, {**page, "id": 4, "page_no": 1, "page_size": PAGE})["ok"]
    wait_for(lambda: service_status(fresh.home)["service"]["page_failures"] >= 1, what="the failure counted")
    svc_status = service_status(fresh.home)["service"]
    assert "j.00000002.journal" in svc_status["last_page_error"]
    create_page(jdir, "j", 4, PAGE)  # the page the writer says it started (no page 5 without it)
    assert ask(client, {**page, "id": 5, "page_no": 4, "page_size": PAGE})["ok"]
    wait_for(lambda: os.path.exists(os.path.join(jdir, "j.00000005.journal")), what="page 5 prepared")
    text = subprocess.run(
        [sys.executable, "-m", "mmipc", "status", "--home", fresh.home], capture_output=True, text=True
    ).stdout
    assert "1 page failure" in text and "j.00000002.journal" in text


# -- 6. a stopped service never stalls a writer -----------------------------------------------


def test_a_sigstopped_service_does_not_stall_a_writer_and_recovers(fresh: ServiceProcess, jdir: str) -> None:
    assert fresh.child is not None
    code = f"""
import logging, sys
from mmipc import Writer
logging.basicConfig(level=logging.INFO)  # the link logs when it gives up on the service
writer = Writer.create({jdir!r}, "fast", page_size={PAGE})
print("ready", flush=True)
sys.stdin.readline()
for i in range(3000 * 64):
    writer.write(b"x" * 1000)
print("done", writer._page_no, flush=True)
sys.stdin.readline()
writer.close()
"""
    writer = Child([sys.executable, "-c", code], env=env_for(fresh), stdin=subprocess.PIPE)
    try:
        writer.expect_line("ready")
        fresh.child.proc.send_signal(signal.SIGSTOP)
        assert writer.proc.stdin is not None
        writer.proc.stdin.write("go\n")
        writer.proc.stdin.flush()
        last_page = int(writer.expect_line("done", timeout=300).split()[1])
        assert last_page >= 2900
        fresh.child.proc.send_signal(signal.SIGCONT)

        def caught_up() -> bool:
            journals = service_status(fresh.home)["journals"]
            return [(j["writer_pid"], j["page"]) for j in journals] == [(writer.pid, last_page)]

        wait_for(caught_up, timeout=120, what="the service to see the writer's last page")
        assert "lost the service" not in writer.stderr()  # it never timed out on the stopped service
        writer.proc.stdin.write("close\n")
        writer.proc.stdin.close()
        writer.finish()
        wait_for(  # the journal stays listed, without a writer
            lambda: [j["writer_pid"] for j in service_status(fresh.home)["journals"]] == [None],
            what="the writer to leave the status",
        )
    finally:
        fresh.child.proc.send_signal(signal.SIGCONT)
        if writer.proc.poll() is None:
            writer.kill9()


# -- 7. refusals reach the client -------------------------------------------------------------


def test_a_client_refused_by_the_session_limit_is_told_why(tmp_path: Path) -> None:
    svc = LimitedService(str(tmp_path / "home"), nofile=96)
    svc.start()
    clients = []
    try:
        while True:
            sock = raw_client(svc, hello=False)
            clients.append(sock)
            try:
                reply = ask(sock, {"op": "hello", "id": 1, "version": 1, "pid": os.getpid()})
            except (BrokenPipeError, ConnectionResetError):
                reply = answer(sock)  # refused and closed before our hello: the refusal is there
            if not reply["ok"]:
                break
        assert "too many sessions" in str(reply["message"])
        with pytest.raises(ServiceRefusedError, match="refused this client: too many sessions"):
            Writer.create(str(tmp_path), "refused", service=svc.home)
    finally:
        for sock in clients:
            sock.close()
        svc.stop()


@as_root
def test_a_client_of_another_uid_is_told_why_in_one_line() -> None:
    home = tempfile.mkdtemp(prefix="mmipc-uid-", dir="/tmp")
    svc = ServiceProcess(home)
    svc.start()
    try:
        os.chmod(home, 0o711)
        os.chmod(svc.socket, 0o666)
        code = (  # everything imported before it drops root: the interpreter lives under /root
            "import os\n"
            "from mmipc import MmipcError, Reader\n"
            "import mmipc.service._link, mmipc.service._home\n"
            f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
            "try:\n"
            f"    Reader.create('intruder', service={home!r})\n"
            "except MmipcError as exc:\n"
            "    print(type(exc).__name__, exc, flush=True)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        [line] = out.stdout.splitlines()
        assert f"not a directory owned by uid {NOBODY}" in line and "handshake" not in line, out.stderr
        assert alive(svc)
    finally:
        svc.stop()
        shutil.rmtree(home, ignore_errors=True)


# -- 8. a full home ---------------------------------------------------------------------------


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@as_root
def test_a_service_on_a_full_home_says_so_in_one_line(full_tmpfs: Path) -> None:
    home = str(full_tmpfs / "home")
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "service", "--home", home], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert home in line and "No space left" in line


# -- 9. clients trust no stranger's home or socket --------------------------------------------


@as_root
def test_a_client_refuses_a_home_squatted_by_another_user(tmp_path: Path) -> None:
    squat = tempfile.mkdtemp(prefix="mmipc-squat-", dir="/tmp")
    os.chmod(squat, 0o777)
    os.chown(squat, NOBODY, NOBODY)
    fake = _fake_service_as_nobody(os.path.join(squat, "service.sock"), bind_as_root=False)
    try:
        for attempt in (lambda: Reader.create("victim", service=squat), lambda: service_status(squat)):
            with pytest.raises(UsageError, match=f"{squat} is not a directory owned by uid 0"):
                attempt()
    finally:
        _stop(fake)
        shutil.rmtree(squat, ignore_errors=True)
    assert fake.expect_line("accepted") == "accepted 0"


@as_root
def test_the_default_home_squatted_by_another_user_is_refused_in_one_line() -> None:
    default = f"/tmp/mmipc-{NOBODY}"  # the victim is uid 65534 here, and root the squatter
    if os.path.lexists(default):
        pytest.skip(f"{default} exists already")
    os.mkdir(default, 0o777)
    os.chmod(default, 0o777)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MMIPC_HOME", "XDG_RUNTIME_DIR")}
        victim = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        out = subprocess.run(
            [*victim, sys.executable, "-m", "mmipc", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stderr
        [line] = out.stderr.splitlines()
        assert f"{default} is not a directory owned by uid {NOBODY}" in line and "owned by uid 0" in line
    finally:
        os.rmdir(default)


@as_root
def test_a_client_checks_the_services_uid_before_sending_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    fake = _fake_service_as_nobody(str(home / "service.sock"), bind_as_root=True)
    try:
        with pytest.raises(ServiceRefusedError, match=f"served by uid {NOBODY}"):
            Writer.create(str(tmp_path), "victim", service=str(home))
    finally:
        _stop(fake)
    assert fake.expect_line("accepted") == "accepted 1"
    assert fake.expect_line("received") == "received 0 bytes"


FAKE = """
import os, socket, sys, select
path, bind_as_root = sys.argv[1], sys.argv[2] == "1"
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if bind_as_root:
    listener.bind(path)  # a socket in our home, then listen() as nobody: SO_PEERCRED says nobody
os.setgid(65534)
os.setuid(65534)
if not bind_as_root:
    listener.bind(path)
listener.listen(8)
print("listening", flush=True)
accepted, received = 0, 0
while select.select([listener, sys.stdin], [], [])[0] != [sys.stdin]:
    conn, _ = listener.accept()
    accepted += 1
    conn.settimeout(2)
    try:
        received += len(conn.recv(65536))
    except OSError:
        pass
    conn.close()
print("accepted", accepted, flush=True)
print("received", received, "bytes", flush=True)
"""


def _fake_service_as_nobody(path: str, bind_as_root: bool) -> Child:
    fake = Child([sys.executable, "-c", FAKE, path, "1" if bind_as_root else "0"], stdin=subprocess.PIPE)
    fake.expect_line("listening")
    return fake


def _stop(fake: Child) -> None:
    if fake.proc.stdin is not None and not fake.proc.stdin.closed:
        fake.proc.stdin.write("stop\n")
        fake.proc.stdin.close()
    try:
        fake.proc.wait(timeout=60)
    finally:
        if fake.proc.poll() is None:
            fake.kill9()
