"""asyncio for readers: `await reader.aread()`, `async for frame in reader.aframes()`.

Rules:

* The reader never blocks the loop and starts no thread. When it has caught up, it listens on a
  FIFO next to its bell (``BELL.fifo``, opened non-blocking and registered with `loop.add_reader`),
  announces `sleeping` = IN_LOOP (a full fence), re-checks its journals, and only then waits.
  A ringing writer that finds IN_LOOP writes one byte into that FIFO (docs/format.md, "Doorbells").
  Chosen over a helper thread doing futex waits + `call_soon_threadsafe`, which the issue measured
  slower (p50 50 us against 34 us at a frame every 200 us) and which costs a thread per reader.
* Each wait lasts at most a nap, as for `wait="block"` (`_block.Naps`: 0.1 s, doubled up to
  MAX_NAP, 1.6 s, after each wait that no ring ended and whose poll of every journal found
  nothing; back to 0.1 s when that poll finds a frame or the journals change): writers that do
  not ring are seen late, never lost. Each `aread` call starts at 0.1 s; an `aframes` keeps its
  naps from one wait to the next. Without a bell, or with anything but our own FIFO at its path (a
  file there is always readable: every wait would end at once; another user's file, a full
  /dev/shm, ...), no ring can wake it: it polls in steps doubling from BOUNDED_SLEEP (1 ms) to
  POLL_STEP (0.1 s) while it finds nothing (`Naps.poll_step`: 1 ms steps were 1,000 wake-ups a
  second while idle), and a FIFO it cannot have is said once (logger ``mmipc.bell``) with why.
  With journals no doorbell covers (`merge.always`) it waits on its FIFO for such a step at most.
* The FIFO stays registered (`Listener`) from an `aframes`' first wait to its end, across its
  waits and frames: what the loop does between the byte and the frame is one callback (read the
  FIFO, set the wait's future) and the task's step (clear `sleeping`, read, yield).
* `aframes` yields to the loop every `every` frames of a flood. Cancelling the task that awaits
  clears `sleeping` at once; the FIFO is unregistered when `aread` returns and when `aframes`
  ends: its timeout, a cancel, `aclose()`, or, once an `async for` is left, asyncio's finalizer of
  the generator (scheduled at once, run at the loop's next turn).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ._bell import IN_LOOP
from ._block import MAX_NAP, Naps, _fifo
from ._merge import Merge
from ._types import Frame

if TYPE_CHECKING:
    from ._reader import Reader

YIELD_EVERY = 64  # Reader.aframes' default `every`


async def aread(reader: Reader, merge: Merge, timeout: float | None = None) -> Frame | None:
    """The next frame, waiting up to `timeout` seconds (None: forever); None if none came."""
    frame = reader.read()
    if frame is not None:
        return frame
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    listener: Listener | None = None
    naps = Naps(MAX_NAP)
    try:
        while (nap := _nap_length(loop, deadline, naps, merge)) > 0:
            listener = listener or Listener.open(merge, loop)
            frame = await _nap(reader, merge, listener, nap, naps)
            if frame is not None:
                return frame
        return None
    finally:
        if listener is not None:
            listener.close()


def _nap_length(loop: asyncio.AbstractEventLoop, deadline: float | None, naps: Naps, merge: Merge) -> float:
    nap = naps.next(merge.cursors, len(merge.always))
    assert nap is not None  # Naps(MAX_NAP)
    return nap if deadline is None else min(nap, deadline - loop.time())


class Listener:
    """The loop's watch on the reader's FIFO for one `aread` or `aframes`, kept across its waits
    (and, for `aframes`, its frames): an `add_reader`/`remove_reader` pair and a timer per wait
    cost about 60,000 instructions, more than the rest of a wake-up.

    It registers its own duplicate of the FIFO's descriptor, closed only after it is unregistered:
    a reader closed while its `aframes` is suspended (the generator is closed later, by asyncio's
    async-generator finalizer) leaves no registered number that a new descriptor could reuse.
    The timer ends a wait at most `nap` s after it starts; one armed by an earlier wait is kept if
    it fires sooner (a wait ends early, never late), so most waits arm none.
    """

    __slots__ = ("loop", "fd", "woken", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop, self.fd = loop, fd
        self.woken: asyncio.Future[bool] | None = None
        self.timer: asyncio.TimerHandle | None = None
        loop.add_reader(fd, self._readable)

    @classmethod
    def open(cls, merge: Merge, loop: asyncio.AbstractEventLoop) -> Listener | None:
        """A listener on the bell's FIFO (made on first use), or None (no bell, no FIFO)."""
        fd = _fifo(merge)
        if merge.bell is None or fd < 0:
            return None
        return cls(loop, os.dup(fd))

    def arm(self, nap: float) -> asyncio.Future[bool]:
        """The future the next wait awaits: True when rung, False after `nap` s at most."""
        loop, timer = self.loop, self.timer
        if timer is None or timer.when() > loop.time() + nap:
            if timer is not None:
                timer.cancel()
            self.timer = loop.call_later(nap, self._expired)  # not wait_for: it may swallow a cancel
        self.woken = woken = loop.create_future()
        return woken

    def _readable(self) -> None:
        """Empty the FIFO (one read: rings write a byte each, and a writer finds the reader awake
        after the first; a byte left only ends the next wait at once) and wake the wait, if any."""
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        woken = self.woken
        if woken is not None and not woken.done():
            woken.set_result(True)

    def _expired(self) -> None:
        self.timer = None
        woken = self.woken
        if woken is not None and not woken.done():
            woken.set_result(False)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


async def _nap(
    reader: Reader, merge: Merge, listener: Listener | None, nap: float, naps: Naps
) -> Frame | None:
    bell = merge.bell
    if listener is None or bell is None:
        await asyncio.sleep(naps.poll_step(nap))
        merge.sweep()
        frame = reader.read()
        if frame is not None:
            naps.found()
        return frame
    woken = listener.arm(naps.poll_step(nap) if merge.always else nap)
    try:
        bell.sleep(IN_LOOP, merge.core)  # the needy bytes set in the same call (native)
        frame = reader.read()  # the re-check after the announcement
        if frame is not None:
            return frame
        if await woken:
            return reader.read()
        merge.sweep()  # no ring ended this wait: look at every journal once
        frame = reader.read()
        naps.swept(frame is not None)
        if frame is not None:
            naps.found()  # the poll steps of journals no doorbell covers start short again
        return frame
    finally:
        listener.woken = None
        bell.awake()


async def aframes(
    reader: Reader, merge: Merge, timeout: float | None = None, every: int = YIELD_EVERY
) -> AsyncIterator[Frame]:
    """Frames as they come; ends after `timeout` s without one; yields to the loop every `every`.
    Waits as `aread` does, inline (one coroutine less to resume between the wake and the frame),
    with one Listener from its first wait to its end."""
    loop = asyncio.get_running_loop()
    listener: Listener | None = None
    naps = Naps(MAX_NAP)
    count = 0
    try:
        while True:
            frame = reader.read()
            if frame is None:
                deadline = None if timeout is None else loop.time() + timeout
                while frame is None:
                    nap = _nap_length(loop, deadline, naps, merge)
                    if nap <= 0:
                        return
                    listener = listener or Listener.open(merge, loop)
                    frame = await _nap(reader, merge, listener, nap, naps)
                count = 0
            yield frame
            count += 1
            if count >= every:
                count = 0
                await asyncio.sleep(0)
    finally:
        if listener is not None:
            listener.close()
