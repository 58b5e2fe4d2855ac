"""`wait="block"`: a reader that spins a little, then sleeps until a writer rings its doorbell.

Rules:

* Spin `SPIN` seconds of polls after the last frame (busy-poll latency for frames that follow each
  other closely), then sleep. The window adapts: when the last two frames either side of an idle
  spell were further apart (writer's timestamps) than the window, the reader sleeps at once, as a
  reader paced every 200 us gains nothing from spinning 50 us and pays a quarter of a core for it.
  A wake-up is never lost: announce sleeping (a full fence), re-check every journal, and only then
  wait on the futex word read before the announcement (_bell.py).
* Native backend: all of that, and the read after the wake, is one call (`bell_block`), so a woken
  reader's frame reaches its consumer with one return to Python and a yield; what the window
  needs is worked out after the yield. The pure-Python backend keeps the same steps in Python.
* Each wait lasts at most `MAX_NAP` seconds: a wait that no ring ended polls every journal, so a
  writer that does not ring (an older version, a bell it may not open) is seen within MAX_NAP;
  while rings keep ending the waits, every journal is polled once per SWEEP_PERIOD too (native:
  at the re-check before a wait, not after a wake, where it would delay the frame).
  Journals no doorbell covers, and readers without a bell, wait in `BOUNDED_SLEEP` steps.
* `timeout` (seconds without a frame, None: never) ends the iteration cleanly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._errors import UsageError
from ._backend import native
from ._bell import BOUNDED_SLEEP, LONGEST_WAIT, Bell
from ._merge import Merge
from ._types import Frame

if TYPE_CHECKING:
    from ._reader import Reader

SPIN = 50e-6
MAX_NAP = 0.1


class Block:
    """`wait=Block(spin=..., max_nap=...)`: "block" with its knobs. `max_nap=None` waits for a ring
    however long it takes (no backstop: for writers that all ring, and for the lost-wake-up test).

    Example: ``for frame in reader.frames(wait=Block(spin=20e-6)): handle(frame)``
    """

    __slots__ = ("spin", "max_nap")

    def __init__(self, spin: float = SPIN, max_nap: float | None = MAX_NAP) -> None:
        if not _seconds(spin) or spin < 0:
            raise UsageError(f"Block needs spin in seconds, a finite number >= 0, not {spin!r}")
        if max_nap is not None and (not _seconds(max_nap) or max_nap <= 0):
            raise UsageError(f"Block needs max_nap in seconds, a finite number > 0 or None, not {max_nap!r}")
        self.spin, self.max_nap = spin, max_nap

    def __repr__(self) -> str:
        return f"Block(spin={self.spin}, max_nap={self.max_nap})"


def block_frames(reader: Reader, merge: Merge, timeout: float | None, wait: Block) -> Iterator[Frame]:
    """`Reader.frames(wait="block")`. A frame is yielded first and accounted for after (the window),
    so that a woken reader's frame reaches its consumer with nothing in between."""
    spin, max_nap = wait.spin, wait.max_nap
    monotonic = time.monotonic
    idle_since: float | None = None
    window = spin  # `spin`, or 0 after an idle spell between frames further apart than `spin`
    last_nano = 0
    while True:
        frame = reader.read()
        if frame is not None:
            yield frame
            if idle_since is not None:
                idle_since = None
                window = _window(spin, frame.nano - last_nano)
            last_nano = frame.nano
            continue
        now = monotonic()
        if idle_since is None:
            idle_since = now
        remaining = None if timeout is None else timeout - (now - idle_since)
        if remaining is not None and remaining <= 0:
            return
        if now - idle_since < window:
            continue
        nap = remaining if max_nap is None else max_nap if remaining is None else min(remaining, max_nap)
        frame = _sleep(reader, merge, nap)
        if frame is not None:
            yield frame
            idle_since = None
            window = _window(spin, frame.nano - last_nano)
            last_nano = frame.nano


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _window(spin: float, gap_ns: int) -> float:
    """The spin window after an idle spell that ended with a frame `gap_ns` after the one before."""
    return spin if gap_ns < spin * 1e9 else 0.0


def _sleep(reader: Reader, merge: Merge, nap: float | None) -> Frame | None:
    """Announce, re-check, wait (`nap` s at most, None: until rung): the frame the re-check or the
    read after a ring found, or None.

    Native: `bell_block` does all of it in one call, the read after the wake included; the sweep
    every SWEEP_PERIOD while rings keep the reader busy comes before the announcement (the re-check
    then polls every journal), not after the wake, where it would delay the frame."""
    bell = merge.bell
    if bell is None or merge.always:
        time.sleep(BOUNDED_SLEEP if nap is None else min(nap, BOUNDED_SLEEP))
        merge.sweep()
        return None
    if native is None:
        return _sleep_python(reader, merge, bell, nap)
    if merge.sweep_due():
        merge.sweep()
    nap_ns = -1 if nap is None else int(min(nap, LONGEST_WAIT) * 1e9)
    # the needy bytes after `sleeping`, before the re-check (docs/format.md, "Needy bytes")
    got = native.bell_block(bell.mm, reader.read, nap_ns, bell.need_all if bell.needy else None)
    if got is True:  # rung, nothing read: a first page may just have appeared
        if len(merge.cursors) == 1:
            merge.cursors[0].probe_at = 0
        return None
    if got is False:
        merge.sweep()  # no ring ended this wait: look at everything once
        return None
    return got  # type: ignore[no-any-return]


def _sleep_python(reader: Reader, merge: Merge, bell: Bell, nap: float | None) -> Frame | None:
    """The pure-Python backend's sleep: bounded steps (no futex), in the same order."""
    seq = bell.sleep()
    try:
        frame = reader.read()
        if frame is None:
            bell.wait(seq, nap)
    finally:
        bell.awake()  # also after an exception (a signal's, a read's): no writer rings for nothing
    if frame is not None:
        return frame
    if bell.word() == seq or merge.sweep_due():
        merge.sweep()  # no ring ended this wait, or none has for MAX_NAP: look at everything once
    elif len(merge.cursors) == 1:
        merge.cursors[0].probe_at = 0  # a first page may just have appeared
    return None
