"""Benchmarks of the service: page switches with and without background preparation, registration.

    python benchmarks/service_bench.py [--switches 20] [--rounds 3] [--quick] [--out docs/benchmarks.md]

Page switch: a writer pinned to cpu 0 writes 408-byte frames flat out into 64 MiB pages, timing every
`write`; the writes that opened a new page are the page switches. Once with a service (pinned to cpu
1) preparing each next page, once standalone, where the writer creates each page itself. Rounds
alternate the two modes. Registration: a reader registering and unregistering its name (round trip
through the service), and new connections per second (connect, hello, register, close).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from typing import Any

from journal_bench import splice
from mmipc import Reader, Writer, service_status
from mmipc.service._protocol import LENGTH, encode

PAGE = 64 << 20
START, END = "<!-- service_bench:start -->", "<!-- service_bench:end -->"


def start_service(home: str) -> subprocess.Popen[bytes]:
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "mmipc", "service", "--home", home, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"mmipc service pid")
    return proc


def remove_tree(path: str) -> None:
    """rmtree, retried while the service may still be linking the page it was preparing when the
    writer closed (it starts none for a journal whose writer is gone, but one may be under way)."""
    for _ in range(200):
        try:
            shutil.rmtree(path)
            return
        except OSError:
            time.sleep(0.05)
    shutil.rmtree(path)


def page_switch_run(home: str | None, switches: int) -> dict[str, float]:
    """ns per write: percentiles over all writes, and over the writes that switched pages."""
    os.sched_setaffinity(0, {0})
    payload = bytes(408)
    count = (PAGE // 440) * switches + 1000
    took = array("q", bytes(8 * count))
    switch_at: list[int] = []
    d = tempfile.mkdtemp(prefix="mmipc-bench-", dir=os.environ.get("MMIPC_BENCH_DIR"))
    try:
        with Writer.create(d, "switch", page_size=PAGE, service=home) as writer:
            clock, write = time.perf_counter_ns, writer.write
            page = writer._page_no
            for i in range(count):
                start = clock()
                write(payload)
                took[i] = clock() - start
                if writer._page_no != page:
                    page = writer._page_no
                    switch_at.append(i)
    finally:
        remove_tree(d)
    ordered = sorted(took)
    switch_ns = [float(ns) for ns in sorted(took[i] for i in switch_at)]

    def pct(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {
        "p50": pct(0.5),
        "p99": pct(0.99),
        "p99.99": pct(0.9999),
        "max": float(ordered[-1]),
        "mean": sum(took) / count,
        "switches": len(switch_at),
        "switch_p50": switch_ns[len(switch_ns) // 2],
        "switch_max": float(switch_ns[-1]),
    }


def registration_run(home: str, count: int) -> dict[str, float]:
    """Reader name round trips through the service, and fresh connections per second."""
    Reader.create("warm-up", service=home).close()
    rtt = []
    for i in range(count):
        start = time.perf_counter_ns()
        reader = Reader.create(f"bench-{i}", service=home)
        rtt.append(time.perf_counter_ns() - start)
        reader.close()
    service_status(home)  # drains the unregistrations queued by close()
    path = os.path.join(home, "service.sock")
    began = time.perf_counter()
    for i in range(count):
        _fresh_client(path, f"client-{i}")
    per_s = count / (time.perf_counter() - began)
    rtt.sort()
    return {
        "rtt_p50_us": rtt[len(rtt) // 2] / 1000,
        "rtt_p99_us": rtt[int(0.99 * len(rtt))] / 1000,
        "clients_per_s": per_s,
    }


def _fresh_client(path: str, name: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(encode({"op": "hello", "id": 1, "version": 1, "pid": os.getpid()}))
        sock.sendall(encode({"op": "register_reader", "id": 2, "name": name}))
        replies = b""
        while replies.count(b'"ok":true') < 2:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"the service closed the connection: {replies!r}")
            replies += chunk
        assert len(replies) >= 2 * LENGTH.size


def measure(switches: int, rounds: int, registrations: int) -> dict[str, Any]:
    results: dict[str, Any] = {"with service": [], "standalone": [], "registration": []}
    with tempfile.TemporaryDirectory(prefix="mmipc-home-") as home:
        service = start_service(home)
        try:
            for r in range(rounds):
                results["with service"].append(page_switch_run(home, switches))
                results["standalone"].append(page_switch_run(None, switches))
                results["registration"].append(registration_run(home, registrations))
                print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        finally:
            service.terminate()
            service.wait(timeout=30)
    return results


def report(res: dict[str, Any], command: str) -> str:
    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in res[mode]))

    def span(mode: str, key: str) -> str:
        values = [r[key] / 1000 for r in res[mode]]
        return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"

    lines = [
        "## Service: measured",
        "",
        f"- Command: `{command}`; {len(res['standalone'])} rounds, the two modes alternating; "
        "median (min-max) over rounds.",
        "- Page switch: 408-byte frames written flat out into 64 MiB pages, "
        f"{int(med('standalone', 'switches'))} page switches per run, writer on cpu 0, service on cpu 1; "
        "every `write` timed (the timer adds about 100 ns).",
        "",
        "### `write` latency across page switches (us)",
        "",
        "| writes | with the service preparing pages | standalone (writer creates pages) |",
        "|---|---|---|",
    ]
    for key, label in (
        ("switch_p50", "page-switch writes, p50"),
        ("switch_max", "page-switch writes, max"),
        ("p50", "all writes, p50"),
        ("p99", "all writes, p99"),
        ("p99.99", "all writes, p99.99"),
        ("max", "all writes, max"),
        ("mean", "all writes, mean"),
    ):
        lines.append(f"| {label} | {span('with service', key)} | {span('standalone', key)} |")
    reg = res["registration"]
    lines += [
        "",
        "### Registration",
        "",
        "| figure | value |",
        "|---|---|",
        f"| `Reader.create` round trip, p50 | {statistics.median(r['rtt_p50_us'] for r in reg):,.0f} us |",
        f"| `Reader.create` round trip, p99 | {statistics.median(r['rtt_p99_us'] for r in reg):,.0f} us |",
        "| new clients (connect, hello, register, close) | "
        f"{statistics.median(r['clients_per_s'] for r in reg):,.0f} /s |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke run")
    parser.add_argument("--out", help="splice the report into this markdown file")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    switches, registrations = (2, 50) if args.quick else (args.switches, 2000)
    results = measure(switches, 1 if args.quick else args.rounds, registrations)
    results["command"] = "python " + " ".join(sys.argv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    text = report(results, results["command"])
    if args.out:
        splice(args.out, text, START, END)
    print(text)


if __name__ == "__main__":
    main()
