"""Wait strategies for `Reader.frames`: what a reader does while no frame is ready.

`BusySpin` polls without pause: the lowest latency, one core at 100%. `Backoff` polls a while, then
yields the CPU, then sleeps in growing steps up to `max_sleep`: a frame that arrives while it sleeps
waits at most `max_sleep` seconds (plus the OS's timer slack, about 50 us on Linux).
"""

from __future__ import annotations

import os
import time
from typing import Literal, Protocol

from .._errors import UsageError


class WaitStrategy(Protocol):
    def idle(self) -> None:
        """Called each time a poll found nothing.

        Example: ``if reader.read() is None: strategy.idle()``
        """

    def reset(self) -> None:
        """Called each time a poll found a frame.

        Example: ``if reader.read() is not None: strategy.reset()``
        """


class BusySpin:
    """Poll again at once.

    Example: ``reader.frames(wait=BusySpin())  # or wait="spin"``
    """

    def idle(self) -> None:
        """Called when no frame was ready: returns at once (the caller polls again).

        Example: ``if reader.read() is None: strategy.idle()``
        """
        pass

    def reset(self) -> None:
        """Called when a frame arrived: nothing to reset.

        Example: ``if reader.read() is not None: strategy.reset()``
        """
        pass


class Backoff:
    """Spin `spins` polls, then `sched_yield` for `yields` polls, then sleep doubling up to `max_sleep`.

    Example: ``reader.frames(wait=Backoff(spins=500, max_sleep=0.0005))  # or wait="backoff"``
    """

    def __init__(self, spins: int = 2000, yields: int = 200, max_sleep: float = 0.001) -> None:
        self.spins, self.yields, self.max_sleep = spins, yields, max_sleep
        self._count = 0
        self._sleep = 0.0

    def idle(self) -> None:
        """Called when no frame was ready: spin, then yield, then sleep longer each time.

        Example: ``if reader.read() is None: strategy.idle()``
        """
        self._count += 1
        if self._count <= self.spins:
            return
        if self._count <= self.spins + self.yields:
            os.sched_yield()
            return
        self._sleep = min(self.max_sleep, max(self._sleep * 2, 1e-5))
        time.sleep(self._sleep)

    def reset(self) -> None:
        """Called when a frame arrived: start spinning again.

        Example: ``if reader.read() is not None: strategy.reset()``
        """
        self._count = 0
        self._sleep = 0.0


WaitName = Literal["spin", "backoff", "block"]


def make_wait(wait: WaitName | WaitStrategy) -> WaitStrategy:
    if wait == "spin":
        return BusySpin()
    if wait == "backoff":
        return Backoff()
    if isinstance(wait, str):
        raise UsageError(f"unknown wait strategy {wait!r}: use 'spin', 'backoff' or a WaitStrategy")
    return wait
