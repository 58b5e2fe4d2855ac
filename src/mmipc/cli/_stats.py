"""Latency statistics for `mmipc read` and the demo: summary line and a histogram."""

from __future__ import annotations

import math


class Latencies:
    def __init__(self) -> None:
        self.values: list[float] = []

    @property
    def count(self) -> int:
        return len(self.values)

    def add(self, microseconds: float) -> None:
        self.values.append(microseconds)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self, sent: int | None) -> str:
        received = self.count
        head = f"summary: sent {sent if sent is not None else '?'}, received {received}"
        head += f", lost {sent - received}" if sent is not None else ""
        if not received:
            return head
        q = {p: self.percentile(p / 100) for p in (50, 90, 99)}
        return (
            f"{head}; latency us: min {min(self.values):.1f} p50 {q[50]:.1f} p90 {q[90]:.1f} "
            f"p99 {q[99]:.1f} max {max(self.values):.1f}"
        )

    def histogram(self, width: int = 40) -> str:
        """Counts per power-of-two bucket of microseconds, as bars."""
        if not self.values:
            return "histogram: no frames"
        buckets: dict[int, int] = {}
        for value in self.values:
            exponent = max(0, math.ceil(math.log2(max(value, 1e-9))))
            buckets[exponent] = buckets.get(exponent, 0) + 1
        top = max(buckets.values())
        lines = ["latency histogram (us):"]
        for exponent in range(min(buckets), max(buckets) + 1):
            n = buckets.get(exponent, 0)
            low = 0 if exponent == 0 else 2 ** (exponent - 1)
            lines.append(
                f"{low:>8} - {2**exponent:<8} {n:>9}  {'#' * math.ceil(width * n / top) if n else ''}"
            )
        return "\n".join(lines)
