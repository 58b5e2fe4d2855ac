"""`mmipc bench`: latency and throughput of mmipc and the IPC a Python user would otherwise pick,
measured the same way in the same run.

For each peer, payload size and round: a receiver process pinned to one CPU and a sender pinned to
another are forked.

* **latency**: the sender paces one message every `interval_us` and stamps each with `time_ns()`;
  the receiver busy-polls and records now minus the stamp. The first 10% is warm-up.
* **latency-blocking**, at each of `intervals` (20 us to 10 ms: where kernel waits really sleep):
  the receiver waits in the peer's blocking read (mmipc: `wait="block"`). **latency-asyncio**: it
  awaits the peer's asyncio read (mmipc `aframes`, pyzmq's asyncio socket). Every latency run
  reports the receiver's CPU seconds per second beside its latency; blocking runs are capped to
  about `BLOCKING_SECONDS` each (at least `MIN_BLOCKING` messages).
* **throughput**: the sender sends flat out. The receiver checks every sequence number (lost and
  reordered messages are counted) and divides the count by the time from the sender's start to the
  last message.

Rounds are interleaved: each round runs every peer once, so a slow phase of the machine hits all
alike. mmipc runs as it is meant to, registered with a real service this module starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from typing import IO, Any

from ..service._orphans import die_with_parent
from ..service._service import spawn_service
from .peers import PEERS, Peer

BLOCKING_SECONDS = 4.0
MIN_BLOCKING = 200
STAMP = struct.Struct("<qq")  # time_ns stamp (latency) or start stamp (throughput), sequence
QUANTILES = 200  # a run's latency distribution is kept as this many quantiles (for CDF plots)
_scratch: str | None = None  # where `run_pair` puts its files: the scratch of `with_service`, if any


def run_pair(
    peer: Peer, mode: str, size: int, count: int, interval_us: float, cpus: tuple[int, int]
) -> dict[str, Any]:
    """One run of one peer: fork a receiver and a sender, return the receiver's measurements."""
    if peer.run is not None:  # no Python end (mmipc-c): the peer measures itself
        workdir = tempfile.mkdtemp(prefix="mmipc-bench-", dir=_scratch)
        try:
            return peer.run(workdir, mode, size, count, interval_us, cpus)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    workdir = tempfile.mkdtemp(prefix="mmipc-bench-", dir=_scratch)
    try:
        ctx = multiprocessing.get_context("fork")
        results, results_in = ctx.Pipe(duplex=False)
        ready = ctx.Event()
        shared = peer.open(workdir, size)
        args = (peer, shared, mode, size, count, cpus[1], ready, results_in)
        receiver = ctx.Process(target=_receive_role, args=args, daemon=True)
        with _ctrl_c_held():
            receiver.start()
        if not ready.wait(60):
            return {"error": "the receiver did not start"}
        sender = ctx.Process(
            target=_send_role, args=(peer, shared, mode, size, count, interval_us, cpus[0]), daemon=True
        )
        with _ctrl_c_held():
            sender.start()
        if not results.poll(300):
            return {"error": "hung: no result within 300 s"}
        result: dict[str, Any] = results.recv()
        return result
    finally:
        for proc in multiprocessing.active_children():
            proc.kill()
            proc.join(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold SIGINT back while forking a role, and deliver it after.

    A Ctrl-C that lands during a fork runs its handler inside an at-fork hook (logging registers
    one), where CPython prints the KeyboardInterrupt as "ignored" and drops it: the bench would run
    on. Held at the OS level, the signal waits until the fork is done and then interrupts normally.
    The roles inherit the held mask: a Ctrl-C is the parent's to handle, and it stops them.
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _die_with_conductor() -> None:
    """A role dies with the conductor, whose pid multiprocessing recorded before the fork."""
    conductor = multiprocessing.parent_process()
    assert conductor is not None and conductor.pid is not None
    die_with_parent(conductor.pid)


def _send_role(
    peer: Peer, shared: Any, mode: str, size: int, count: int, interval_us: float, cpu: int
) -> None:
    _die_with_conductor()
    os.sched_setaffinity(0, {cpu})
    try:
        _send(peer.sender(shared), mode, size, count, interval_us)
    except OSError:
        pass  # the receiver is gone (killed at the end of the run, or on Ctrl-C): nothing to report


def _send(send: Any, mode: str, size: int, count: int, interval_us: float) -> None:
    pad, pack, clock = bytes(size - STAMP.size), STAMP.pack, time.time_ns
    if mode == "throughput":
        _send_all(send, size, count)
        time.sleep(600)  # keep this end open (pyzmq flushes from its own thread); killed when done
        return
    step = int(interval_us * 1000)
    next_at = clock()
    for seq in range(count):
        while clock() < next_at:
            pass
        send(pack(clock(), seq) + pad)
        next_at += step
    time.sleep(600)


def _send_all(send: Any, size: int, count: int) -> None:
    """The throughput sender: `count` messages flat out (benchmarks/native/bench_loops.py counts it)."""
    pad, pack = bytes(size - STAMP.size), STAMP.pack
    start = time.time_ns()
    for seq in range(count):
        send(pack(start, seq) + pad)


def _receive_role(
    peer: Peer, shared: Any, mode: str, size: int, count: int, cpu: int, ready: Any, out: Any
) -> None:
    try:
        _receive(peer, shared, mode, size, count, cpu, ready, out)
    except Exception as exc:  # report it: a silent death would look like a hang
        ready.set()
        out.send({"error": f"receiver failed: {exc!r}"})


def _receive(
    peer: Peer, shared: Any, mode: str, size: int, count: int, cpu: int, ready: Any, out: Any
) -> None:
    _die_with_conductor()
    os.sched_setaffinity(0, {cpu})
    if mode == "latency-asyncio":
        out.send(asyncio.run(_areceive(peer, shared, count, ready)))
        return
    poll, wait = peer.receiver(shared)
    if mode == "latency-blocking" and wait is None:
        ready.set()
        out.send({"error": "no blocking read"})
        return
    ready.set()
    get = wait if mode == "latency-blocking" else poll
    assert get is not None
    out.send(_throughput(get, count) if mode == "throughput" else _latency(get, count))


async def _areceive(peer: Peer, shared: Any, count: int, ready: Any) -> dict[str, Any]:
    if peer.areceiver is None:
        ready.set()
        return {"error": "no asyncio read"}
    get = peer.areceiver(shared)
    ready.set()
    latencies, clock = _Latencies(count), time.time_ns
    for i in range(count):
        item = await get()
        latencies.add(i, clock(), item)
    return latencies.result()


def _next(get: Any) -> Any:
    item = get()
    while item is None:
        item = get()
    return item


def _latency(get: Any, count: int) -> dict[str, Any]:
    latencies, clock = _Latencies(count), time.time_ns
    for i in range(count):
        item = _next(get)
        latencies.add(i, clock(), item)
    return latencies.result()


class _Latencies:
    """A latency run's record, one message at a time (`now`: when the receiver got it), and the
    receiver's CPU seconds per second of the run (1.0: a whole core) after the warm-up."""

    def __init__(self, count: int) -> None:
        self.lat = array("q", bytes(8 * count))
        self.count, self.disorder = count, 0
        self.cpu0, self.wall0 = 0.0, 0

    def add(self, i: int, now: int, item: Any) -> None:
        if i == self.count // 10:
            self.cpu0, self.wall0 = time.process_time(), now
        stamp, seq = STAMP.unpack_from(item, 0)
        self.lat[i] = now - stamp
        self.disorder += seq != i

    def result(self) -> dict[str, Any]:
        cpu = (time.process_time() - self.cpu0) / max(1e-9, (time.time_ns() - self.wall0) / 1e9)
        kept = sorted(self.lat[self.count // 10 :])
        return {
            "latency_us": _summary(kept),
            "quantiles_us": _quantiles(kept),
            "disorder": self.disorder,
            "cpu": cpu,
        }


def _throughput(get: Any, count: int) -> dict[str, Any]:
    """The receiver of a throughput run; `_next` is inlined: its call would cost every peer a Python
    frame per message (about 400 instructions, more than mmipc's read) and flatten their ratios."""
    unpack, disorder, start = STAMP.unpack_from, 0, 0
    for i in range(count):
        item = get()
        while item is None:
            item = get()
        start, seq = unpack(item, 0)
        disorder += seq != i
    return {"per_s": count / (time.time_ns() - start) * 1e9, "disorder": disorder}


def _summary(ordered: list[int]) -> dict[str, float]:
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p99.9": at(0.999), "max": ordered[-1] / 1000}


def _quantiles(ordered: list[int]) -> list[float]:
    return [
        ordered[min(len(ordered) - 1, int(len(ordered) * q / QUANTILES))] / 1000 for q in range(QUANTILES)
    ]


def measure(
    peers: list[Peer],
    sizes: list[int],
    rounds: int,
    count: int,
    interval_us: float,
    cpus: tuple[int, int],
    log: Any = print,
    results: dict[str, Any] | None = None,
    intervals: list[float] | None = None,
    blocking_seconds: float = BLOCKING_SECONDS,
    modes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Interleaved rounds: every round runs every peer, size, mode and interval once.

    The busy-polling latency and the throughput runs use `interval_us` and `count`; the blocking
    and asyncio runs are repeated at each of `intervals` (default: `interval_us` alone), each with
    at most `count` messages and about `blocking_seconds` of sending; `modes` (default: every one
    of MODES) picks which kinds of run a round makes. `log` gets one line per run
    (its outcome, and the load average when it ended: a loaded machine makes every figure of that
    run suspect). Runs are appended to `results` as they finish, so a caller that passes it keeps
    what was measured if it is interrupted.

    Example: ``measure(PEERS[:1], [64], 1, 2000, 20.0, (0, 1), intervals=[20.0, 1000.0])``
    """
    if results is None:
        results = {}
    plan = list(_plan(peers, sizes, count, interval_us, intervals or [interval_us], blocking_seconds))
    plan = [step for step in plan if modes is None or step[2] in modes]
    results.update({"peers": [p.name for p in peers], "sizes": sizes, "runs": []})
    results["intervals"] = intervals or [interval_us]
    results["polling"] = [p.name for p in peers if p.polls]
    for r in range(rounds):
        for peer, size, mode, n, interval in plan:
            run = run_pair(peer, mode, size, n, interval, cpus)
            run["load1"] = os.getloadavg()[0]
            results["runs"].append(
                {"round": r, "peer": peer.name, "size": size, "mode": mode, "interval_us": interval, **run}
            )
            done = len(results["runs"])
            where = f" every {interval:g} us" if mode in TIMED_MODES else ""
            log(
                f"run {done}/{rounds * len(plan)} (round {r + 1}): {peer.name} {size} B {mode}{where}: "
                f"{outcome(run)}"
            )
    return results


TIMED_MODES = ("latency-blocking", "latency-asyncio")


def _plan(
    peers: list[Peer],
    sizes: list[int],
    count: int,
    interval_us: float,
    intervals: list[float],
    seconds: float,
) -> Iterator[tuple[Peer, int, str, int, float]]:
    """(peer, size, mode, messages, interval) of one round; asyncio runs only for peers that have it."""
    for size in sizes:
        for peer in peers:
            yield peer, size, "latency", count, interval_us
            for interval in intervals:
                n = max(MIN_BLOCKING, min(count, int(seconds * 1e6 / interval)))
                yield peer, size, "latency-blocking", n, interval
                if peer.areceiver is not None:
                    yield peer, size, "latency-asyncio", n, interval
            yield peer, size, "throughput", count * 5, interval_us


MODES = ("latency", "latency-blocking", "latency-asyncio", "throughput")


def outcome(run: dict[str, Any]) -> str:
    """A run's result in a few words: p50 latency, rate, or why it failed."""
    if "error" in run:
        return str(run["error"])
    if "latency_us" in run:
        cpu = f", reader CPU {run['cpu']:.0%}" if "cpu" in run else ""
        return f"p50 {run['latency_us']['p50']:.1f} us{cpu}, load {run['load1']:.2f}"
    return f"{run['per_s']:,.0f} msg/s, load {run['load1']:.2f}"


def with_service(action: Any, directory: str | None = None) -> Any:
    """Run `action()` with a real mmipc service on a temporary home (MMIPC_HOME set for the roles).

    The home and every run's files live in one scratch directory, made in `directory` (default:
    the system's temporary directory, TMPDIR), which a janitor process removes once this process
    and its service are gone, however this process ended: a bench killed with SIGKILL or SIGTERM
    never runs its `finally` (its service, told by the kernel, stops cleanly and left its home
    behind, and the run's files, tens of MB, with it).
    """
    global _scratch
    scratch = tempfile.mkdtemp(prefix="mmipc-bench-", dir=directory)
    janitor = _start_janitor(scratch)
    home = os.path.join(scratch, "home")
    old = os.environ.get("MMIPC_HOME")
    try:
        service = spawn_service(home)
        os.environ["MMIPC_HOME"], _scratch = home, scratch
        try:
            return action()
        finally:
            service.terminate()
            service.wait(timeout=30)
    finally:
        _scratch = None
        if old is None:
            os.environ.pop("MMIPC_HOME", None)
        else:
            os.environ["MMIPC_HOME"] = old
        shutil.rmtree(scratch, ignore_errors=True)
        _stop_janitor(janitor)


def storage(directory: str | None) -> dict[str, str]:
    """Where the journals of a bench go: the directory and its file system type (/proc/self/mounts),
    which the throughput at large messages depends on (a disk file system writes pages back).

    Example: ``storage(None)`` -> ``{"dir": "/tmp", "fs": "ext4"}``
    """
    path = os.path.realpath(directory or tempfile.gettempdir())
    best, fs = "", "unknown"
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1].replace("\\040", " ") if len(fields) > 2 else ""
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fs = point, fields[2]
    except OSError:
        pass
    return {"dir": path, "fs": fs}


JANITOR = """
import fcntl, os, select, shutil, sys, time
scratch, bench = sys.argv[1], os.pidfd_open(int(sys.argv[2]))  # alive: it waits for this process
if os.fork():
    os._exit(0)  # the janitor is not the bench's child: the bench's own children are its roles
select.select([0, bench], [], [])  # the bench says it is done, or it ended (even by SIGKILL)
deadline = time.monotonic() + 60
try:
    fd = os.open(os.path.join(scratch, "home", "service.lock"), os.O_RDONLY)
except OSError:
    fd = -1
while fd >= 0 and time.monotonic() < deadline:  # its service holds the lock until it exits
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        time.sleep(0.05)
shutil.rmtree(scratch, ignore_errors=True)
"""


def _start_janitor(scratch: str) -> IO[bytes]:
    """A process that removes `scratch` once we write to the pipe returned, or end (even by SIGKILL),
    and our service has let go of its lock. Its own session: a terminal's Ctrl-C does not reach it."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", JANITOR, scratch, str(os.getpid())],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    launcher.wait(timeout=60)
    assert launcher.stdin is not None
    return launcher.stdin


def _stop_janitor(janitor: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        janitor.write(b"done")
        janitor.close()


__all__ = [
    "BLOCKING_SECONDS",
    "MODES",
    "PEERS",
    "TIMED_MODES",
    "measure",
    "outcome",
    "run_pair",
    "storage",
    "with_service",
]
