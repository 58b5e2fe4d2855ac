"""Benchmarks of mmipc.analysis against the obvious alternatives, measured in the same run.

    python benchmarks/analysis_bench.py [--frames 1000000] [--pandas-frames N] [--rounds 3]
        [--backends native,python] [--out FILE]

Writes `--frames` CTP v6.3.6 frames (408-byte payloads, msg_type 101, schema declared) into a
temporary journal with 32 MiB pages, then times, each in a fresh child process so that its peak
memory (VmHWM: resident set, including the journal pages it has mapped) is its own:

* `to_numpy`: `mmipc.analysis.to_numpy` of every frame;
* `floor`: what any `to_numpy` costs at least here: a fresh array of the result's size, filled with
  one read of the journal (each page mapped in one call and its bytes copied into the array, in
  order, until it is full: a fresh result's first touch plus one pass over the journal, with no
  scan and no per-row work); `reader_loop` / `floor` is the best ratio the target can reach here;
* `reader_loop`: a `Reader` loop building the same array (payload bytes appended to one bytearray,
  timestamps and sources to arrays, one numpy view at the end: the fastest Reader-based way we know);
  the child then checks that its array equals `to_numpy`'s (after its time and memory are read: the
  check is not measured);
* `export_parquet`: `mmipc export --format parquet` (zstd, 65,536-frame batches, constant memory);
* `pandas_parquet`: the same export done by pandas from a list of dicts (a `Reader` loop, one
  `mmipc.ctp.to_dict` per frame, `pandas.DataFrame(rows).to_parquet`); `--pandas-frames` caps its
  frame count, since its memory grows with it (figures are then per frame of its own run).

`to_numpy` and `reader_loop` run once per backend of `--backends` (MMIPC_BACKEND in the child), and
the speedup of `to_numpy` over the loop is reported per backend (the target: at least 20x); the two
Parquet exports run on the default backend. After the JSON, the script prints the figures as the
Markdown tables docs/benchmarks.md quotes: per backend, the two times and their ratio; for Parquet,
the time, frames/s, MB/s of journal and the peak memory of each export.

Each figure is the median over `--rounds` children. Memory: `peak_rss_mb` is the child's peak resident
set during the measured call (VmHWM, reset after the imports), `peak_over_start_mb` its growth over
the resident set at the start of the call, which for `to_numpy` is to be compared with `result_mb`:
the promise is the result plus one mapped page (32 MiB here). The children run with
OPENBLAS_NUM_THREADS=1: numpy's BLAS threads do no work here but spin on the CPUs at import.

Run it on a quiet machine: shared CPUs make the figures meaningless. On a virtual machine, the first
touch of a large fresh result can cost several times more in some runs than in others, hence the
range beside each median. Measured on the development VM (Firecracker, virtio_balloon with free
page reporting: `page_reporting.page_reporting_order=11` on the kernel command line): free guest
memory is handed back to the host a few seconds after it is freed, and the first touch of such
memory faults in the host too. Touching a fresh 424 MB array took 0.12-0.25 s when the memory had
been freed just before, 0.9-1.8 s when freed 5 s before (`perf`: `clear_page_erms`, the kernel
zeroing the new pages, is two thirds of a slow round). A child's result lands on one or the
other depending on what ran in the seconds before it: the spread of `to_numpy` and of `floor`.
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


def child_floor(directory: str, out: str) -> int:
    import mmap

    import numpy as np

    from mmipc.analysis._scan import MADV_POPULATE_READ, output_dtype
    from mmipc.ctp import DepthMarketDataV636
    from mmipc.journal._files import list_pages, page_path
    from mmipc.journal._schema import to_struct

    rows = np.empty(int(os.environ["BENCH_FRAMES"]), output_dtype(to_struct(DepthMarketDataV636)))
    into, filled = rows.view(np.uint8), 0
    for number in list_pages(directory, NAME):
        with open(page_path(directory, NAME, number), "rb") as file:
            page = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        size = min(len(page), len(into) - filled)
        page.madvise(MADV_POPULATE_READ, 0, size)
        data = np.frombuffer(page, np.uint8)
        into[filled : filled + size] = data[:size]
        filled += size
        del data
        page.close()
        if filled == len(into):
            break
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
    "floor": child_floor,
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


def backends(asked: str) -> list[str]:
    """The backends to measure `to_numpy` and the `Reader` loop on: those asked that are available."""
    from mmipc.journal._backend import native

    chosen = [b for b in asked.split(",") if b in ("native", "python")]
    missing = [b for b in asked.split(",") if b not in ("native", "python")]
    if missing:
        raise SystemExit(f"unknown backend(s) {missing}: use native, python")
    if "native" in chosen and native is None:
        print("the native backend is not built: measuring the python one only", file=sys.stderr)
        chosen.remove("native")
    return chosen


def run_all(directory: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Every child: `to_numpy` and the `Reader` loop once per backend (their ratio, per backend, is
    the target), then the two Parquet exports (on the default backend)."""
    results: dict[str, Any] = {"floor": measure("floor", directory, args.rounds, env)}
    for backend in backends(args.backends):
        on = {**env, "MMIPC_BACKEND": backend}
        for what in ("to_numpy", "reader_loop"):
            results[f"{what}[{backend}]"] = measure(what, directory, args.rounds, on)
        speedup = results[f"reader_loop[{backend}]"]["seconds"] / results[f"to_numpy[{backend}]"]["seconds"]
        results[f"to_numpy_speedup_over_reader_loop[{backend}]"] = {"x": speedup}
        allowed = results[f"reader_loop[{backend}]"]["seconds"] / results["floor"]["seconds"]
        results[f"floor_speedup_over_reader_loop[{backend}]"] = {"x": allowed}
    for what in ("export_parquet", "pandas_parquet"):
        results[what] = measure(what, directory, args.rounds, env)
    return results


def table(frames: int, results: dict[str, Any]) -> str:
    """The figures docs/benchmarks.md quotes, as Markdown tables."""
    lines = [
        f"{frames:,} CTP v6.3.6 frames ({frames * FRAME_BYTES / 1e6:,.0f} MB of journal), medians of "
        "the rounds (range):",
        "",
        "| backend | `to_numpy` | `Reader` loop, same array | speedup | floor's speedup | peak over "
        "start: `to_numpy` (result) / loop |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(k for k in results if k.startswith("to_numpy_speedup")):
        backend = key[key.index("[") + 1 : -1]
        fast, loop = results[f"to_numpy[{backend}]"], results[f"reader_loop[{backend}]"]
        lines.append(
            f"| {backend} | {_seconds(fast)} | {_seconds(loop)} | **{results[key]['x']:.1f}x** | "
            f"{results[f'floor_speedup_over_reader_loop[{backend}]']['x']:.1f}x | "
            f"{fast['peak_over_start_mb']:,.0f} MB ({fast['result_mb']:,.0f} MB) / "
            f"{loop['peak_over_start_mb']:,.0f} MB |"
        )
    lines += [
        "",
        f"Floor (a fresh result + one read of the journal, no scan): {_seconds(results['floor'])}; "
        "floor's speedup = the Reader loop's time / the floor's: the best `to_numpy` can do here.",
        "",
        "| Parquet (zstd) | frames | time | frames/s | MB/s of journal | peak RSS | peak over start | file |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("export_parquet", "`mmipc export --format parquet`"),
        ("pandas_parquet", "pandas from a list of dicts"),
    ):
        r = results[key]
        lines.append(
            f"| {label} | {r['frames']:,} | {_seconds(r)} | {r['frames_per_s']:,.0f} | "
            f"{r['journal_mb_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} MB | "
            f"{r['peak_over_start_mb']:,.0f} MB | {r['file_mb']:,.1f} MB |"
        )
    return "\n".join(lines)


def _seconds(result: dict[str, Any]) -> str:
    low, high = result["seconds_range"]
    return f"{result['seconds']:.3f} s ({low:.3f}-{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--pandas-frames", type=int, default=0, help="cap the pandas run (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="native,python", help="for to_numpy and the Reader loop")
    parser.add_argument("--out", help="also write the results here as JSON")
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    env = {
        **os.environ,
        "BENCH_CHECK": "1",
        "BENCH_FRAMES": str(args.frames),
        "BENCH_PANDAS_FRAMES": str(args.pandas_frames),
        "OPENBLAS_NUM_THREADS": "1",
    }
    with tempfile.TemporaryDirectory() as directory:
        write_journal(directory, args.frames)
        results = run_all(directory, args, env)
    text = json.dumps({"frames": args.frames, "results": results}, indent=1)
    print(text)
    print()
    print(table(args.frames, results))
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
