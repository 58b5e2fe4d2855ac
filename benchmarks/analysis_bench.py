"""Benchmarks of mmipc.analysis against the obvious alternatives, measured in the same run.

    python benchmarks/analysis_bench.py [--frames 1000000] [--pandas-frames N] [--rounds 3] [--out FILE]

Writes `--frames` CTP v6.3.6 frames (408-byte payloads, msg_type 101, schema declared) into a
temporary journal with 32 MiB pages, then times, each in a fresh child process so that its peak
memory (VmHWM: resident set, including the journal pages it has mapped) is its own:

* `to_numpy`: `mmipc.analysis.to_numpy` of every frame;
* `reader_loop`: a `Reader` loop building the same array (payload bytes appended to one bytearray,
  timestamps and sources to arrays, one numpy view at the end: the fastest Reader-based way we know);
  the child then checks that its array equals `to_numpy`'s (after its time and memory are read: the
  check is not measured);
* `export_parquet`: `mmipc export --format parquet` (zstd, 65,536-frame batches, constant memory);
* `pandas_parquet`: the same export done by pandas from a list of dicts (a `Reader` loop, one
  `mmipc.ctp.to_dict` per frame, `pandas.DataFrame(rows).to_parquet`); `--pandas-frames` caps its
  frame count, since its memory grows with it (figures are then per frame of its own run).

Each figure is the median over `--rounds` children. Memory: `peak_rss_mb` is the child's peak resident
set during the measured call (VmHWM, reset after the imports), `peak_over_start_mb` its growth over
the resident set at the start of the call, which for `to_numpy` is to be compared with `result_mb`:
the promise is the result plus one mapped page (32 MiB here). The children run with
OPENBLAS_NUM_THREADS=1: numpy's BLAS threads do no work here but spin on the CPUs at import.

Run it on a quiet machine: shared CPUs make the figures meaningless. On a virtual machine, the first
touch of a large fresh result can cost several times more in some runs than in others (the
hypervisor backing the memory), hence the range beside each median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

NAME = "md"
MSG = 101
FRAME_BYTES = 440  # 32-byte header + 408-byte payload, as laid in the page


def write_journal(directory: str, frames: int) -> None:
    from mmipc import Writer
    from mmipc.ctp import DepthMarketDataV636

    tick = DepthMarketDataV636(TradingDay=b"20261127", ExchangeID=b"SHFE", UpdateTime=b"09:30:00")
    names = [b"rb2601", b"au2602", b"cu2601", b"IF2612"]
    with Writer.create(directory, NAME, service=None, schemas={MSG: DepthMarketDataV636}) as writer:
        for i in range(frames):
            tick.InstrumentID = names[i & 3]
            tick.LastPrice, tick.Volume, tick.BidPrice1, tick.AskVolume1 = 3700.0 + i % 50, i, 3699.0, i % 9
            writer.write(tick, msg_type=MSG, source=i % 4)


# -- the children: one measurement each --------------------------------------------------------


RESULT_BYTES: list[int] = []  # the size of the array a child built, when it builds one
CHECKS: list[Callable[[], None]] = []  # run after the clock and the memory are read: not measured


def child_to_numpy(directory: str, out: str) -> int:
    from mmipc.analysis import to_numpy

    rows = to_numpy(directory, NAME, msg_type=MSG)
    RESULT_BYTES.append(rows.nbytes)
    return len(rows)


def child_reader_loop(directory: str, out: str) -> int:
    from array import array

    import numpy as np

    from mmipc import Reader
    from mmipc.analysis import to_numpy
    from mmipc.analysis._scan import output_dtype
    from mmipc.ctp import DepthMarketDataV636, numpy_dtype
    from mmipc.journal._schema import to_struct

    payloads, nanos, sources = bytearray(), array("q"), array("I")
    with Reader.create(f"bench-{os.getpid()}", service=None) as reader:
        reader.add_journal(directory, NAME)
        for frame in iter(reader.read, None):
            if frame.msg_type == MSG:
                payloads += frame.data
                nanos.append(frame.nano)
                sources.append(frame.source)
    ticks = np.frombuffer(payloads, numpy_dtype(DepthMarketDataV636))
    rows = np.empty(len(ticks), output_dtype(to_struct(DepthMarketDataV636)))
    rows["nano"], rows["journal"], rows["source"] = np.frombuffer(nanos, "M8[ns]"), 0, sources
    for name in ticks.dtype.names:
        rows[name] = ticks[name]
    RESULT_BYTES.append(rows.nbytes)

    def check() -> None:
        if not (rows == to_numpy(directory, NAME, msg_type=MSG)).all():
            raise SystemExit("the Reader loop and to_numpy disagree")

    if os.environ.get("BENCH_CHECK"):
        CHECKS.append(check)
    return len(rows)


def child_export_parquet(directory: str, out: str) -> int:
    from mmipc.analysis._export import export
    from mmipc.analysis._scan import make_query

    query = make_query(directory, NAME, MSG, None, None, None)
    return export(query, out, "parquet", force=True).frames


def child_pandas_parquet(directory: str, out: str) -> int:
    import pandas as pd

    from mmipc import Reader
    from mmipc.ctp import DepthMarketDataV636, to_dict

    limit = int(os.environ.get("BENCH_PANDAS_FRAMES", "0")) or None
    rows: list[dict[str, Any]] = []
    with Reader.create(f"bench-{os.getpid()}", service=None) as reader:
        reader.add_journal(directory, NAME)
        for frame in iter(reader.read, None):
            if frame.msg_type == MSG:
                row = to_dict(frame.as_struct(DepthMarketDataV636))
                row["nano"], row["source"] = pd.Timestamp(frame.nano, unit="ns"), frame.source
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    break
    pd.DataFrame(rows).to_parquet(out, compression="zstd")
    return len(rows)


CHILDREN = {
    "to_numpy": child_to_numpy,
    "reader_loop": child_reader_loop,
    "export_parquet": child_export_parquet,
    "pandas_parquet": child_pandas_parquet,
}


def memory(key: str) -> int:
    """A line of /proc/self/status in bytes: VmRSS (resident now) or VmHWM (its peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":"))


def run_child(what: str, directory: str, out: str) -> None:
    import numpy  # noqa: F401  (imported before the start of the measure, as a user has it)

    import mmipc.analysis  # noqa: F401

    if what in ("export_parquet", "pandas_parquet"):
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the resident set now: the imports' own peak is not ours
    start_rss = memory("VmRSS")
    started = time.perf_counter()
    frames = CHILDREN[what](directory, out)
    seconds = time.perf_counter() - started
    peak = memory("VmHWM")
    for check in CHECKS:
        check()
    size = os.path.getsize(out) if os.path.exists(out) else 0
    record = {"frames": frames, "seconds": seconds, "peak_rss": peak, "start_rss": start_rss}
    print(json.dumps({**record, "file_bytes": size, "result_bytes": sum(RESULT_BYTES)}))


# -- the parent ------------------------------------------------------------------------------


def measure(what: str, directory: str, rounds: int, env: dict[str, str]) -> dict[str, Any]:
    results = []
    for _ in range(rounds):
        out = os.path.join(directory, f"out-{what}.parquet")
        done = subprocess.run(
            [sys.executable, __file__, "--child", what, directory, out],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"{what} failed: {done.stderr}")
        results.append(json.loads(done.stdout))
    seconds = statistics.median(r["seconds"] for r in results)
    frames = results[0]["frames"]
    return {
        "frames": frames,
        "seconds": seconds,
        "seconds_range": [min(r["seconds"] for r in results), max(r["seconds"] for r in results)],
        "frames_per_s": frames / seconds,
        "journal_mb_per_s": frames * FRAME_BYTES / seconds / 1e6,
        "peak_rss_mb": max(r["peak_rss"] for r in results) / 1e6,
        "peak_over_start_mb": max(r["peak_rss"] - r["start_rss"] for r in results) / 1e6,
        "result_mb": results[0]["result_bytes"] / 1e6,
        "file_mb": results[0]["file_bytes"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--pandas-frames", type=int, default=0, help="cap the pandas run (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="also write the results here as JSON")
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    env = {
        **os.environ,
        "BENCH_CHECK": "1",
        "BENCH_PANDAS_FRAMES": str(args.pandas_frames),
        "OPENBLAS_NUM_THREADS": "1",
    }
    with tempfile.TemporaryDirectory() as directory:
        write_journal(directory, args.frames)
        results = {what: measure(what, directory, args.rounds, env) for what in CHILDREN}
    results["to_numpy_speedup_over_reader_loop"] = {
        "x": results["reader_loop"]["seconds"] / results["to_numpy"]["seconds"]
    }
    text = json.dumps({"frames": args.frames, "results": results}, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
