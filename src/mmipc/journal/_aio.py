"""asyncio for readers: `await reader.aread()`, `async for frame in reader.aframes()`.

Rules:

* The reader never blocks the loop and starts no thread. When it has caught up, it listens on a
  FIFO next to its bell (``BELL.fifo``, opened non-blocking and registered with `loop.add_reader`),
  announces `sleeping` = IN_LOOP (a full fence), re-checks its journals, and only then waits.
  A ringing writer that finds IN_LOOP writes one byte into that FIFO (docs/format.md, "Doorbells").
  Chosen over a helper thread doing futex waits + `call_soon_threadsafe`, which the issue measured
  slower (p50 50 us against 34 us at a frame every 200 us) and which costs a thread per reader.
* Each wait lasts at most `MAX_NAP`; one that no ring ended polls every journal (writers that do
  not ring are seen late, never lost). Without a bell, the reader polls in BOUNDED_SLEEP steps.
* `aframes` yields to the loop every `every` frames of a flood; cancelling the task that awaits,
  or leaving the loop, unregisters the FIFO and clears `sleeping`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ._bell import BOUNDED_SLEEP, IN_LOOP
from ._block import MAX_NAP
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
    while True:
        nap = MAX_NAP if deadline is None else min(MAX_NAP, deadline - loop.time())
        if nap <= 0:
            return None
        frame = await _nap(reader, merge, loop, nap)
        if frame is not None:
            return frame


async def _nap(reader: Reader, merge: Merge, loop: asyncio.AbstractEventLoop, nap: float) -> Frame | None:
    bell = merge.bell
    fd = _fifo(merge)
    if bell is None or fd < 0 or merge.always:
        await asyncio.sleep(min(nap, BOUNDED_SLEEP))
        merge.sweep()
        return reader.read()
    woken: asyncio.Future[bool] = loop.create_future()
    loop.add_reader(fd, _drain, fd, woken)
    timer = loop.call_later(nap, _settle, woken, False)  # not wait_for: it may swallow a cancel
    try:
        bell.sleep(IN_LOOP)
        frame = reader.read()  # the re-check after the announcement
        if frame is not None:
            return frame
        if not await woken:
            merge.sweep()  # no ring ended this wait: look at every journal once
        return reader.read()
    finally:
        timer.cancel()
        bell.awake()
        loop.remove_reader(fd)


def _drain(fd: int, woken: asyncio.Future[bool]) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
    _settle(woken, True)


def _settle(woken: asyncio.Future[bool], rung: bool) -> None:
    if not woken.done():
        woken.set_result(rung)


def _fifo(merge: Merge) -> int:
    """The read end of the bell's FIFO (made on first use), or -1."""
    if merge.fifo >= 0 or merge.bell is None:
        return merge.fifo
    path = merge.bell.path + ".fifo"
    try:
        if not os.path.exists(path):
            os.mkfifo(path, 0o666)
        # read-write: the reader is a writer of its own FIFO, so it never reads EOF (which would
        # leave it readable for good, a busy loop) once a ringing writer closes its end
        merge.fifo = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    return merge.fifo


async def aframes(
    reader: Reader, merge: Merge, timeout: float | None = None, every: int = YIELD_EVERY
) -> AsyncIterator[Frame]:
    """Frames as they come; ends after `timeout` s without one; yields to the loop every `every`."""
    count = 0
    while True:
        frame = reader.read()
        if frame is None:
            frame = await aread(reader, merge, timeout)
            if frame is None:
                return
            count = 0
        yield frame
        count += 1
        if count >= every:
            count = 0
            await asyncio.sleep(0)
