"""Tables (markdown) and plots (matplotlib, optional) of `mmipc bench` results."""

from __future__ import annotations

import statistics
from typing import Any

MODES = {"latency": "busy-polling reader"}
TIMED = {
    "latency-blocking": "blocking reader (sleeps in the kernel; `polling` peers spin, yield and nap)",
    "latency-asyncio": "asyncio reader (mmipc `aframes`, pyzmq's asyncio socket)",
}
BASELINE = "os.pipe"  # the blocking tables compare with a blocking os.pipe read of the same run


def _runs(results: dict[str, Any], peer: str, size: int, mode: str) -> list[dict[str, Any]]:
    return [r for r in results["runs"] if (r["peer"], r["size"], r["mode"]) == (peer, size, mode)]


def _span(values: list[float], fmt: str = "{:,.1f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    if "backend" in results:
        lines += [f"mmipc backend: {results['backend']} (the peer mmipc-python runs the pure-Python one)", ""]
    if "storage" in results:
        lines += [f"journals and logs in {results['storage']['dir']} ({results['storage']['fs']})", ""]
    for size in results["sizes"]:
        for mode, reader in MODES.items():
            lines += _latency_table(results, size, mode, reader)
        for mode, reader in TIMED.items():
            lines += _timed_table(results, size, mode, reader)
        lines += _throughput_table(results, size)
    return "\n".join(lines)


def _latency_table(results: dict[str, Any], size: int, mode: str, reader: str) -> list[str]:
    if not any((r["size"], r["mode"]) == (size, mode) for r in results["runs"]):
        return []  # not asked for (--modes): no table of "not run" rows
    lines = [
        f"### Latency, {size}-byte messages, {reader} (us)",
        "",
        "| peer | p50 | p90 | p99 | p99.9 | max | p50 / mmipc's | out of order |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = [r["latency_us"]["p50"] for r in _runs(results, "mmipc", size, mode) if "latency_us" in r]
    for peer in results["peers"]:
        runs = [r for r in _runs(results, peer, size, mode) if "latency_us" in r]
        if not runs:
            errors = {r.get("error", "") for r in _runs(results, peer, size, mode)}
            lines.append(f"| {peer} | {', '.join(sorted(errors)) or 'not run'} | | | | | | |")
            continue
        cells = [_span([r["latency_us"][k] for r in runs]) for k in ("p50", "p90", "p99", "p99.9", "max")]
        p50 = statistics.median(r["latency_us"]["p50"] for r in runs)
        ratio = f"{p50 / statistics.median(base):.2f}" if base else "-"
        lines.append(f"| {peer} | {' | '.join(cells)} | {ratio} | {sum(r['disorder'] for r in runs)} |")
    return [*lines, ""]


def _timed_table(results: dict[str, Any], size: int, mode: str, reader: str) -> list[str]:
    """Latency and the reader's CPU per frame interval: what a sleeping reader costs and gains."""
    runs = [r for r in results["runs"] if (r["size"], r["mode"]) == (size, mode)]
    if not runs:
        return []
    lines = [
        f"### Latency, {size}-byte messages, {reader} (us)",
        "",
        f"| every | peer | p50 | p90 | p99 | reader CPU (s/s) | p50 / blocking {BASELINE}'s |",
        "|---|---|---|---|---|---|---|",
    ]
    polling = set(results.get("polling", []))
    for interval in results.get("intervals", sorted({r.get("interval_us", 0) for r in runs})):
        at = [r for r in runs if r.get("interval_us") == interval]
        base = _baseline(results, size, interval)
        for peer in results["peers"]:
            mine = [r for r in at if r["peer"] == peer and "latency_us" in r]
            label = f"{peer} (polling)" if peer in polling else peer
            if not mine:
                errors = sorted({r.get("error", "") for r in at if r["peer"] == peer} - {""})
                if errors:
                    lines.append(f"| {interval:g} us | {label} | {', '.join(errors)} | | | | |")
                continue
            cells = [_span([r["latency_us"][k] for r in mine]) for k in ("p50", "p90", "p99")]
            cpu = _span([r["cpu"] for r in mine], "{:.3f}")
            p50 = statistics.median(r["latency_us"]["p50"] for r in mine)
            ratio = f"{p50 / statistics.median(base):.2f}" if base else "-"
            lines.append(f"| {interval:g} us | {label} | {' | '.join(cells)} | {cpu} | {ratio} |")
    return [*lines, ""]


def _baseline(results: dict[str, Any], size: int, interval: float) -> list[float]:
    """p50s of the blocking os.pipe read at this size and interval (asyncio rows compare with it too)."""
    key = (BASELINE, size, "latency-blocking", interval)
    return [
        r["latency_us"]["p50"]
        for r in results["runs"]
        if (r["peer"], r["size"], r["mode"], r.get("interval_us")) == key and "latency_us" in r
    ]


def _throughput_table(results: dict[str, Any], size: int) -> list[str]:
    if not any((r["size"], r["mode"]) == (size, "throughput") for r in results["runs"]):
        return []
    lines = [
        f"### Throughput, {size}-byte messages (messages/s received)",
        "",
        "| peer | messages/s | / mmipc's | lost or out of order |",
        "|---|---|---|---|",
    ]
    base = [r["per_s"] for r in _runs(results, "mmipc", size, "throughput") if "per_s" in r]
    for peer in results["peers"]:
        runs = [r for r in _runs(results, peer, size, "throughput") if "per_s" in r]
        if not runs:
            tried = _runs(results, peer, size, "throughput")
            lines.append(f"| {peer} | {'failed' if tried else 'not run'} | | |")
            continue
        rate = statistics.median(r["per_s"] for r in runs)
        ratio = f"{rate / statistics.median(base):.2f}" if base else "-"
        lines.append(
            f"| {peer} | {_span([r['per_s'] for r in runs], '{:,.0f}')} | {ratio} | "
            f"{sum(r['disorder'] for r in runs)} |"
        )
    return [*lines, ""]


def plot(results: dict[str, Any], path: str) -> None:
    """Latency CDFs (busy-polling reader, largest size) and throughput bars, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(results["sizes"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for peer in results["peers"]:
        runs = [r for r in _runs(results, peer, size, "latency") if "quantiles_us" in r]
        if runs:
            quantiles = [statistics.median(q) for q in zip(*(r["quantiles_us"] for r in runs), strict=True)]
            left.plot(quantiles, [i / len(quantiles) for i in range(len(quantiles))], label=peer)
    left.set(
        xscale="log",
        xlabel="one-way latency (us, log)",
        ylabel="fraction of messages",
        title=f"latency CDF, {size} B, busy-polling reader",
    )
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    width = 0.8 / len(results["sizes"])
    for i, s in enumerate(results["sizes"]):
        rates = [
            statistics.median([r["per_s"] for r in _runs(results, p, s, "throughput") if "per_s" in r] or [0])
            for p in results["peers"]
        ]
        right.bar([x + i * width for x in range(len(rates))], rates, width, label=f"{s} B")
    right.set_xticks([x + width * (len(results["sizes"]) - 1) / 2 for x in range(len(results["peers"]))])
    right.set_xticklabels(results["peers"], rotation=30, ha="right", fontsize=8)
    right.set(ylabel="messages/s received", title="throughput")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
