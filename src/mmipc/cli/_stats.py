"""Latency statistics for `mmipc read` and the demo: summary line and a histogram."""

from __future__ import annotations

import math
from typing import Any


class Latencies:
    """Latencies in microseconds, for percentiles and a histogram."""

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

    def line(self) -> str:
        """`latency us: min .. p50 .. p90 .. p99 .. max ..` ('' with no frames)."""
        if not self.values:
            return ""
        q = {p: self.percentile(p / 100) for p in (50, 90, 99)}
        return (
            f"latency us: min {min(self.values):.1f} p50 {q[50]:.1f} p90 {q[90]:.1f} "
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


class Tally:
    """What `mmipc read` counts: frames received, and frames lost where that can be known.

    Lost frames are counted only from evidence: gaps in the frames' sequence numbers (format v2), or
    the end-of-demo frame's count when reading from the start. A reader that starts late (--since)
    skipped frames on purpose: they are not lost.
    """

    def __init__(self, latencies: Latencies, from_start: bool) -> None:
        self.latencies = latencies
        self.from_start = from_start
        self.sent: int | None = 0 if from_start else None
        self.ended = 0
        self.gaps = 0
        self._next_seq: dict[Any, int] = {}

    def add(self, frame: Any, latency_us: float) -> None:
        self.latencies.add(latency_us)
        self._sequence(frame)

    def end(self, frame: Any, sent: int | None) -> None:
        """A journal's end-of-demo frame, carrying how many frames its writer sent (None if unknown)."""
        self.ended += 1
        self._sequence(frame)
        if self.sent is not None:
            self.sent = None if sent is None else self.sent + sent

    def _sequence(self, frame: Any) -> None:
        seq = getattr(frame, "seq", -1)  # format v2 frames carry one; v1 frames have -1
        if seq < 0:
            return
        expected = self._next_seq.get(frame.journal)
        if expected is not None and seq > expected:
            self.gaps += seq - expected
        self._next_seq[frame.journal] = seq + 1

    def lost(self) -> int | None:
        """Frames known to be lost, or None if nothing tells."""
        if self.gaps:
            return self.gaps
        if self.sent is not None and self.ended:
            return max(0, self.sent - self.latencies.count)
        return 0 if self._next_seq else None

    def summary(self) -> str:
        received = self.latencies.count
        sent = self.sent if self.ended and self.sent is not None else "?"
        lost = self.lost()
        why = (
            ""
            if lost is not None
            else (" (read from the start to count them)" if not self.from_start else "")
        )
        head = f"summary: sent {sent}, received {received}, lost {'?' if lost is None else lost}{why}"
        latency = self.latencies.line()
        return f"{head}; {latency}" if latency else head
