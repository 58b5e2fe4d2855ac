"""Quick start: a writer process sends market ticks; this process reads them and prints latency.

    python examples/quickstart.py [--count 2000] [--rate 2000]

It starts `mmipc service` in a temporary home, then a writer process (this script with `writer`),
as in production: three processes, and the frames pass through the journal directory only, never
through the service.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mmipc import Reader, Writer


class Tick(ctypes.Structure):
    _fields_ = [
        ("instrument", ctypes.c_char * 31),
        ("last_price", ctypes.c_double),
        ("volume", ctypes.c_int),
        ("seq", ctypes.c_int),
    ]


TICK, END = 1, 2


def write(directory: str, count: int, rate: float) -> None:
    with Writer.create(directory, "ticks") as writer:
        start = time.perf_counter()
        for seq in range(count):
            if rate > 0:
                while time.perf_counter() - start < seq / rate:
                    pass
            writer.write(Tick(b"rb2601", 3700.0 + seq % 50, seq * 3, seq), msg_type=TICK)
        writer.write(b"", msg_type=END)


def read(directory: str, count: int, rate: float) -> None:
    reader = Reader.create("quickstart")
    reader.add_journal(directory, "ticks")
    child = subprocess.Popen([sys.executable, __file__, "writer", directory, str(count), str(rate)])
    latencies = []
    for frame in reader.frames(timeout=30, wait="spin"):
        now = time.time_ns()
        if frame.msg_type == END:
            break
        tick = Tick.from_buffer_copy(frame.data)
        latencies.append((now - frame.nano) / 1000)
        if tick.seq % max(1, count // 10) == 0:
            print(
                f"{tick.instrument.decode()} seq {tick.seq:6d} price {tick.last_price:8.1f} "
                f"latency {latencies[-1]:7.1f} us"
            )
    child.wait()
    q = statistics.quantiles(latencies, n=100)
    print(
        f"received {len(latencies)} of {count} frames, lost {count - len(latencies)}; latency us: "
        f"min {min(latencies):.1f} p50 {q[49]:.1f} p99 {q[98]:.1f} max {max(latencies):.1f}"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        write(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=2000.0, help="frames per second, 0 = flat out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmipc-quickstart-") as directory:
        home = os.environ["MMIPC_HOME"] = os.path.join(directory, "home")  # for us and the writer
        service = subprocess.Popen(
            [sys.executable, "-m", "mmipc", "service", "--quiet"], stdout=subprocess.PIPE
        )
        try:
            assert service.stdout is not None and service.stdout.readline().startswith(b"mmipc service")
            print(f"service pid {service.pid} in {home}")
            read(os.path.join(directory, "journals"), args.count, args.rate)
        finally:
            service.terminate()
            service.wait()


if __name__ == "__main__":
    main()
