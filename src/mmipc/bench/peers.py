"""The IPC peers `mmipc bench` compares, each a small adapter behind one interface.

A peer's `open(workdir, size)` runs in the parent before the two roles are forked, and returns what
both ends share (paths, names, or a channel object the children inherit). In each forked child,
`sender(shared)` returns a `send(bytes)` function. `receiver(shared)` returns a `poll() -> bytes |
None` that never blocks, and a `wait() -> bytes` that blocks (or None where the peer has no
blocking read). `areceiver(shared)`, called inside a running event loop, returns an `async get()
-> bytes` for the asyncio rows (None where the peer has no asyncio reader). A peer whose `wait`
polls instead of sleeping in the kernel says so (`polls`): its blocking rows are labelled polling.
Payloads are `size` bytes; the first 16 carry the stamp and the sequence number.

A peer with `run` has no Python end: `run(workdir, mode, size, count, interval_us, cpus)` measures
one run itself and returns the receiver's measurements (`mmipc-c`: C writer to C reader).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Send = Callable[[bytes], Any]
Poll = Callable[[], "bytes | memoryview | None"]
AGet = Callable[[], Awaitable["bytes | memoryview"]]
NAIVE_SIZE = 1 << 30
LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Peer:
    name: str
    requires: str  # the module a peer needs, "" for the standard library
    open: Callable[[str, int], Any]
    sender: Callable[[Any], Send]
    receiver: Callable[[Any], tuple[Poll, Poll | None]]
    areceiver: Callable[[Any], AGet] | None = None
    polls: bool = False  # its "blocking" read polls (spins, yields, naps): a polling mode
    run: Callable[[str, str, int, int, float, tuple[int, int]], dict[str, Any]] | None = None
    unavailable: Callable[[], str | None] | None = None  # why it cannot run here, beyond `requires`

    def missing(self) -> str | None:
        """Why this peer cannot run here (not installed), or None."""
        if self.unavailable is not None and (why := self.unavailable()) is not None:
            return f"{self.name} skipped: {why}"
        if not self.requires:
            return None
        try:
            __import__(self.requires)
        except ImportError:
            return f"{self.name} skipped: `{self.requires}` is not installed (pip install 'mmipc[bench]')"
        return None


# -- mmipc: the real Writer and Reader, registered with the service the bench started ------------


def _mmipc_open(workdir: str, size: int) -> Any:
    return workdir


def _mmipc_sender(workdir: str) -> Send:
    from mmipc import Writer

    return Writer.create(workdir, "bench").write


def _mmipc_receiver(workdir: str) -> tuple[Poll, Poll | None]:
    """`poll` is ``read().data`` in a closure, as every peer's adapter is. Not `Reader.read_data`
    alone, although it costs 820 fewer instructions a message: a receiver that fast keeps level
    with the writer and reads each cache line the moment it is written, and the writer then waits
    for that line back on every store (measured in one run: 3.9 M msg/s at 64 B against 5.4 M/s).
    The blocking variant is `wait="block"`: spin 50 us, then sleep until the writer rings."""
    from mmipc import Reader

    reader = Reader.create(f"bench-{os.getpid()}")
    reader.add_journal(workdir, "bench")
    read, frames = reader.read, reader.frames(wait="block")

    def poll() -> memoryview | None:
        frame = read()
        return None if frame is None else frame.data

    def wait() -> memoryview:
        return next(frames).data

    return poll, wait


def _mmipc_areceiver(workdir: str) -> AGet:
    """`async for frame in reader.aframes()`: the loop sleeps until the writer rings."""
    from mmipc import Reader

    reader = Reader.create(f"bench-{os.getpid()}")
    reader.add_journal(workdir, "bench")
    frames = reader.aframes()

    async def get() -> memoryview:
        return (await frames.__anext__()).data

    return get


def _mmipc_backoff_receiver(workdir: str) -> tuple[Poll, Poll | None]:
    """The old "blocking" row: `Backoff` polls (spin, yield, sleeps up to 200 us): a polling mode."""
    from mmipc import Backoff, Reader

    return _mmipc_reading(Reader, Backoff, workdir)


def _python_backend() -> Any:
    """mmipc re-imported in this forked role with MMIPC_BACKEND=python: the peer `mmipc-python`
    measures the fallback backend, whatever the bench itself runs on. The bench's own modules keep
    the copy they imported; this process uses only the fresh one."""
    os.environ["MMIPC_BACKEND"] = "python"
    fresh = ("mmipc._", "mmipc.journal", "mmipc.service")
    for name in [m for m in sys.modules if m == "mmipc" or m.startswith(fresh)]:
        del sys.modules[name]
    import mmipc

    assert mmipc.backend == "python", mmipc.backend
    return mmipc


def _mmipc_python_sender(workdir: str) -> Send:
    return _python_backend().Writer.create(workdir, "bench").write  # type: ignore[no-any-return]


def _mmipc_python_receiver(workdir: str) -> tuple[Poll, Poll | None]:
    """`poll` is `Reader.read_data`, as mmipc's (in this backend a Python function over `read`).
    The pure-Python backend's `wait="block"`: no futex there, it sleeps in steps of 1 ms."""
    mmipc = _python_backend()
    reader = mmipc.Reader.create(f"bench-{os.getpid()}")
    reader.add_journal(workdir, "bench")
    frames = reader.frames(wait="block")

    def wait() -> memoryview:
        return next(frames).data  # type: ignore[no-any-return]

    return reader.read_data, wait


def _mmipc_batch_receiver(workdir: str) -> tuple[Poll, Poll | None]:
    """A `read_batch` reader: one call fetches what is committed (up to 4096), handed out one by one."""
    from mmipc import Backoff, Reader

    reader = Reader.create(f"bench-{os.getpid()}")
    reader.add_journal(workdir, "bench")
    read_batch, backoff = reader.read_batch, Backoff(spins=100, yields=100, max_sleep=0.0002)
    pending: list[Any] = [read_batch(4096), 0]

    def poll() -> memoryview | None:
        batch, i = pending
        if i == len(batch):
            batch, i = read_batch(4096), 0
            pending[0] = batch
            if not len(batch):
                pending[1] = 0
                return None
        pending[1] = i + 1
        data: memoryview = batch.data(i)
        return data

    def wait() -> memoryview:
        while (data := poll()) is None:
            backoff.idle()
        backoff.reset()
        return data

    return poll, wait


def _mmipc_reading(reader_class: Any, backoff_class: Any, workdir: str) -> tuple[Poll, Poll | None]:
    reader = reader_class.create(f"bench-{os.getpid()}")
    reader.add_journal(workdir, "bench")
    read, backoff = reader.read, backoff_class(spins=100, yields=100, max_sleep=0.0002)

    def poll() -> memoryview | None:
        frame = read()
        return None if frame is None else frame.data

    def wait() -> memoryview:
        while (frame := read()) is None:
            backoff.idle()
        backoff.reset()
        data: memoryview = frame.data
        return data

    return poll, wait


# -- mmipc-c: the C core on both sides (bench/c_bench.c, built here at first use) ----------------

_C_BENCH: list[str] = []  # the built program, once built in this process


def _c_compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _c_missing() -> str | None:
    return None if _c_compiler() else "no C compiler (cc, or $CC) to build bench/c_bench.c"


def _c_bench() -> str:
    """bench/c_bench.c with the C core (journal/_native/mmipc.c), built once per process."""
    if not _C_BENCH:
        here = os.path.dirname(os.path.abspath(__file__))
        native = os.path.join(here, "..", "journal", "_native")
        build = tempfile.mkdtemp(prefix="mmipc-c-bench-")
        atexit.register(forget_c_bench)
        out = os.path.join(build, "c_bench")
        cc = _c_compiler() or "cc"
        sources = [os.path.join(here, "c_bench.c"), os.path.join(native, "mmipc.c")]
        subprocess.run([cc, "-std=c11", "-O2", f"-I{native}", "-o", out, *sources], check=True)
        _C_BENCH.append(out)
    return _C_BENCH[0]


def forget_c_bench() -> None:
    """Remove the c_bench built by this process (at exit, or sooner), so the next run builds it."""
    while _C_BENCH:
        shutil.rmtree(os.path.dirname(_C_BENCH.pop()), ignore_errors=True)


def _c_run(
    workdir: str, mode: str, size: int, count: int, interval_us: float, cpus: tuple[int, int]
) -> dict[str, Any]:
    """One c_bench run (it forks its own C reader and writer, pinned like the Python roles)."""
    if mode not in ("latency", "throughput"):
        return {"error": "no blocking read" if mode == "latency-blocking" else "no asyncio read"}
    try:
        program = _c_bench()
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"error": f"could not build c_bench: {exc}"}
    args = [program, "--size", str(size), "--count", str(count), "--gap", str(int(interval_us * 1000))]
    args += ["--cpus", f"{cpus[0]},{cpus[1]}", "--run", mode, workdir]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": f"c_bench failed ({done.returncode}): {done.stderr.strip()[:200]}"}
    got = json.loads(done.stdout.splitlines()[-1])
    if mode == "throughput":
        return {"per_s": float(got["frames_per_s"]), "disorder": got["bad"]}
    keys = {"p50": "p50_us", "p90": "p90_us", "p99": "p99_us", "p99.9": "p99_9_us", "max": "max_us"}
    return {"latency_us": {k: got[v] for k, v in keys.items()}, "disorder": got["bad"], "cpu": got["cpu"]}


# -- the naive mmap log: a length word stored last, nothing else (the floor) ----------------------


def _naive_open(workdir: str, size: int) -> Any:
    path = os.path.join(workdir, "naive.log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, NAIVE_SIZE)
    os.close(fd)
    return path


def _naive_map(path: str, writable: bool) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        return mmap.mmap(fd, NAIVE_SIZE, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
    finally:
        os.close(fd)


def _naive_sender(path: str) -> Send:
    mm, pos = _naive_map(path, True), [0]

    def send(payload: bytes) -> None:
        p, n = pos[0], len(payload)
        mm[p + 8 : p + 8 + n] = payload
        LENGTH.pack_into(mm, p, n)
        pos[0] = p + ((n + 15) & ~7)

    return send


def _naive_receiver(path: str) -> tuple[Poll, Poll | None]:
    mm = _naive_map(path, False)
    view, pos = memoryview(mm), [0]

    def poll() -> memoryview | None:
        p = pos[0]
        n = LENGTH.unpack_from(mm, p)[0]
        if n == 0:
            return None
        pos[0] = p + ((n + 15) & ~7)
        return view[p + 8 : p + 8 + n]

    return poll, None


# -- os.pipe (a FIFO, so that both forked roles open it by name) ---------------------------------


def _pipe_open(workdir: str, size: int) -> Any:
    path = os.path.join(workdir, "fifo")
    os.mkfifo(path)
    return path, size


def _pipe_sender(shared: tuple[str, int]) -> Send:
    fd = os.open(shared[0], os.O_WRONLY)
    return lambda payload: os.write(fd, payload)  # writes up to PIPE_BUF are atomic


def _pipe_receiver(shared: tuple[str, int]) -> tuple[Poll, Poll | None]:
    path, size = shared
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening for reading must not wait for a writer

    def poll() -> bytes | None:
        try:
            return os.read(fd, size) or None  # b"" until the sender has opened its end
        except BlockingIOError:
            return None

    def wait() -> bytes:
        os.set_blocking(fd, True)  # the blocking variant: the same descriptor, made blocking
        while not (data := os.read(fd, size)):
            time.sleep(0.001)  # end of file: the sender has not opened its end yet
        return data

    return poll, wait


# -- multiprocessing.Pipe and multiprocessing.Queue (inherited through fork) --------------------------


def _mp_pipe_open(workdir: str, size: int) -> Any:
    import multiprocessing

    return multiprocessing.Pipe(duplex=False)


def _mp_pipe_receiver(shared: Any) -> tuple[Poll, Poll | None]:
    receiving = shared[0]
    return (lambda: receiving.recv_bytes() if receiving.poll() else None), receiving.recv_bytes


def _mp_queue_open(workdir: str, size: int) -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork").Queue()


def _queue_receiver(q: Any) -> tuple[Poll, Poll | None]:
    import queue

    def poll() -> bytes | None:
        try:
            return q.get_nowait()  # type: ignore[no-any-return]
        except queue.Empty:
            return None

    return poll, q.get


# -- pyzmq PUSH/PULL over ipc:// ---------------------------------------------------------------------


def _zmq_open(workdir: str, size: int) -> Any:
    return f"ipc://{workdir}/zmq.sock"


def _zmq_sender(endpoint: str) -> Send:
    import zmq

    push = zmq.Context().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.bind(endpoint)
    send: Send = push.send
    return send


def _zmq_receiver(endpoint: str) -> tuple[Poll, Poll | None]:
    import zmq

    pull = zmq.Context().socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 0)
    pull.connect(endpoint)

    def poll() -> bytes | None:
        try:
            data: bytes = pull.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        return data

    return poll, pull.recv


def _zmq_areceiver(endpoint: str) -> AGet:
    """pyzmq's asyncio socket (zmq.asyncio): the peer of mmipc's `aframes` in the asyncio rows."""
    import zmq
    import zmq.asyncio

    pull = zmq.asyncio.Context().socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 0)
    pull.connect(endpoint)

    async def get() -> bytes:
        data: bytes = await pull.recv()
        return data

    return get


# -- faster-fifo --------------------------------------------------------------------------------------


def _ff_open(workdir: str, size: int) -> Any:
    import faster_fifo

    return faster_fifo.Queue(max_size_bytes=64 << 20)


# -- POSIX message queues (posix-ipc) -------------------------------------------------------------


def _mq_open(workdir: str, size: int) -> Any:
    import posix_ipc

    name = f"/mmipc-bench-{os.getpid()}-{size}"
    queue = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_message_size=size)
    queue.unlink()  # gone when both ends close it
    return queue


def _mq_receiver(queue: Any) -> tuple[Poll, Poll | None]:
    import posix_ipc

    def poll() -> bytes | None:
        try:
            return queue.receive(0)[0]  # type: ignore[no-any-return]
        except posix_ipc.BusyError:
            return None

    return poll, lambda: queue.receive()[0]


# -- iceoryx2 publish-subscribe, zero-copy loan ---------------------------------------------------


# Samples a subscriber buffers: more than a default throughput run sends (5 x --count 20,000), so
# that the publisher never blocks. Blocking (RetryUntilDelivered) loses samples under load in
# iceoryx2 0.10: one throughput run in 13 to 57 hung here with the sender done and the subscriber
# empty; with this buffer, 150 runs in a row passed (and a journal never blocks its writer either).
IOX_BUFFER = 1 << 17


def _iox_open(workdir: str, size: int) -> Any:
    return f"mmipc/bench/{os.getpid()}/{size}", size


def _iox_service(shared: tuple[str, int]) -> tuple[Any, Any, Any]:
    import iceoryx2 as iox2

    name, size = shared
    payload = ctypes.c_uint8 * size
    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    builder = node.service_builder(iox2.ServiceName.new(name)).publish_subscribe(payload)
    builder = builder.subscriber_max_buffer_size(IOX_BUFFER).history_size(0).enable_safe_overflow(False)
    return node, builder.open_or_create(), payload


class _IoxSender:
    """Loans a sample, writes the payload into it, sends it (blocking when the subscriber is full)."""

    def __init__(self, shared: tuple[str, int]) -> None:
        import iceoryx2 as iox2

        self.node, self.service, self.payload = _iox_service(shared)
        builder = self.service.publisher_builder()
        self.publisher = builder.backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create()

    def __call__(self, data: bytes) -> None:
        self.publisher.loan_uninit().write_payload(self.payload.from_buffer_copy(data)).send()


class _IoxReceiver:
    def __init__(self, shared: tuple[str, int]) -> None:
        self.node, self.service, _ = _iox_service(shared)
        self.subscriber = self.service.subscriber_builder().create()

    def __call__(self) -> bytes | None:
        sample = self.subscriber.receive()
        return None if sample is None else bytes(sample.payload().contents)


def _no_end(shared: Any) -> Any:
    raise AssertionError("a peer with `run` has no Python end")


def _queue_sender(q: Any) -> Send:
    return q.put  # type: ignore[no-any-return]


PEERS: list[Peer] = [
    Peer("mmipc", "", _mmipc_open, _mmipc_sender, _mmipc_receiver, _mmipc_areceiver),
    Peer("mmipc-backoff", "", _mmipc_open, _mmipc_sender, _mmipc_backoff_receiver, polls=True),
    Peer("mmipc-python", "", _mmipc_open, _mmipc_python_sender, _mmipc_python_receiver),
    Peer("mmipc-batch", "", _mmipc_open, _mmipc_sender, _mmipc_batch_receiver, polls=True),
    Peer("mmipc-c", "", _mmipc_open, _no_end, _no_end, run=_c_run, unavailable=_c_missing),
    Peer("naive-mmap", "", _naive_open, _naive_sender, _naive_receiver),
    Peer("os.pipe", "", _pipe_open, _pipe_sender, _pipe_receiver),
    Peer("mp.Pipe", "", _mp_pipe_open, lambda s: s[1].send_bytes, _mp_pipe_receiver),
    Peer("mp.Queue", "", _mp_queue_open, _queue_sender, _queue_receiver),
    Peer("pyzmq-ipc", "zmq", _zmq_open, _zmq_sender, _zmq_receiver, _zmq_areceiver),
    Peer("faster-fifo", "faster_fifo", _ff_open, _queue_sender, _queue_receiver),
    Peer("iceoryx2", "iceoryx2", _iox_open, _IoxSender, lambda shared: (_IoxReceiver(shared), None)),
    Peer("posix-mq", "posix_ipc", _mq_open, lambda q: q.send, _mq_receiver),
]
