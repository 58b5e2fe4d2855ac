"""The merge of a reader's journals, and its doorbell: cost per read independent of the journal count.

Rules:

* Order: the smallest peeked timestamp first, ties to the journal added first (a counter taken at
  `add`), append order within a journal -- exactly `_reader`'s documented order.
* A heap holds the journals that have a frame peeked (`Cursor.next_nano >= 0`); no other journal is
  looked at unless it is "dirty": just added or re-positioned, flagged by its writer's doorbell,
  not subscribed (no room in its bell list, no access), or every `SWEEP_EVERY` empty reads and
  every `SWEEP_EVERY` frames (a busy reader must not starve a journal whose writer cannot ring:
  one under a file-size limit cannot create NAME.bells).
* A journal not subscribed (`always`: its list full, refused, shut out, or no bell could be made)
  is subscribed again at a sweep, at most once every RETRY_FIRST s, the gap doubling up to
  RETRY_LONGEST while no try succeeds (a try edits the list under its lock and checks each slot's
  reader: not at every 1 ms poll); why it failed is said once (`say_once`), and so is a success
  after that (`say_fixed`). A reader only ever polled such a journal, even after its list was fixed.
* After a frame is taken, its journal is peeked again at once: a journal whose poll found nothing
  leaves the heap and comes back only when dirty. If that peek fails (a damaged frame), the frame
  taken is still returned and the error is raised by the next read, which polls that journal.
  A journal's writer rings after every commit, and the flags are cleared before the poll, so a
  frame committed after that poll always flags it again.
* An empty read with nothing flagged costs one load of the bell's `pending` word.
* Native backend: the same design in C (`_native.MergeCore`, _mmipcmodule.c): the flags and the
  dirty set live there, on the cursors' cores, and the heap is a winner tree over every journal
  followed (a journal with nothing peeked holds a key after all others): taking a frame replays
  one leaf-to-root path, with no data-dependent branch, and every load on that path independent of
  the comparisons. Its keys (timestamp, add order) sit in one compact array, so an update touches
  no cursor, and the next top's cursor, view and frame header are prefetched. The C merge hands
  out its own two Frames, refilled whatever journal a frame comes from (the payload view
  re-pointed at that journal's page, its export moved with it), not each cursor's: at hundreds of
  journals those would be cache misses on every frame. `Reader.read` is the core's `next` itself
  (`read_function`), which calls `_read_settling` (through a weak reference) where the core needs
  Python. This class keeps membership and hands it over (`_sync`) at every change.
  A core that needs Python (a page's end, damage, no page yet) makes the C read return SLOW
  before it takes any frame; `_settle` polls it through the cursor's Python slow path (errors are
  raised there, and again at every read until it is fixed) and gives it back. A journal without
  a page is then probed by C once a millisecond, or when rung.
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._backend import native
from ._bell import (
    LIST_SIZE,
    MAX_FLAGS,
    NEEDY,
    SWEEP_EVERY,
    Bell,
    BellList,
    _bell_dir,
    bells_path,
    map_list,
    say_fixed,
    say_once,
)
from ._cursor import READING, Cursor
from ._types import Frame

SWEEP_PERIOD = 0.1
RETRY_FIRST, RETRY_LONGEST = 1.0, 30.0  # s between tries to subscribe the journals `always` holds
CLOSED = 1  # the owner of a closed merge: no thread has ident 1 (an ident is a pthread_t, a pointer)
_get_ident = _thread.get_ident
_heappush, _heappop, _heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace


class Merge:
    """The journals of one reader, merged; `read` is the reader's `read` when it follows several."""

    __slots__ = (
        "cursors",
        "heap",
        "dirty",
        "always",
        "bell",
        "pending",
        "slots",
        "index",
        "order",
        "empties",
        "taken",
        "fifo",
        "swept_at",
        "retry_at",
        "retry_gap",
        "owner",
        "on_thread",
        "core",
        "__weakref__",
    )

    def __init__(self) -> None:
        self.cursors: list[Cursor] = []
        self.heap: list[tuple[int, int, Cursor]] = []
        self.dirty: set[Cursor] = set()
        self.always: list[Cursor] = []  # journals no doorbell covers: polled on every read
        self.bell: Bell | None = None
        self.pending = memoryview(bytearray(4)).cast("I")
        self.slots: dict[Cursor, tuple[int, int]] = {}  # cursor -> (flag index, bell-list slot)
        self.index: dict[int, Cursor] = {}
        self.order: dict[Cursor, int] = {}
        self.empties = 0
        self.taken = 0  # frames since the last sweep: a busy reader sweeps every SWEEP_EVERY too
        self.fifo = -1  # asyncio: the read end of the bell's FIFO (_aio.py)
        self.swept_at = 0.0
        self.retry_at, self.retry_gap = 0.0, RETRY_FIRST  # the next try to subscribe `always`
        self.owner = 0  # the reader's thread (pure Python; the C merge has its own _c_thread)
        self.on_thread: Callable[[], object] = _any_thread
        self.core: Any = None if native is None else native.MergeCore()
        if self.core is not None:
            self.core.on_slow = _settler(self)

    _counter = itertools.count()

    # -- membership ---------------------------------------------------------------------------

    def add(self, cursor: Cursor) -> None:
        self.cursors.append(cursor)
        self.order[cursor] = next(Merge._counter)
        if not self._subscribe(cursor):
            self.always.append(cursor)
            self.retry_gap = RETRY_FIRST
            self.retry_at = time.monotonic() + RETRY_FIRST
        self.dirty.add(cursor)  # a frame committed before the subscription is found by this poll
        self._sync()

    def _subscribe(self, cursor: Cursor) -> bool:
        if self.bell is None:
            self.bell = Bell.create()
            if self.bell is None:
                _say_no_bell()
                return False
            self.pending = self.bell.pending
            say_fixed(_bell_dir(), "this reader has a doorbell in %s now: its writers ring it", _bell_dir())
        index = next((i for i in range(MAX_FLAGS) if i not in self.index), None)
        if index is None:
            return False
        path = bells_path(cursor.jid.directory, cursor.jid.name)
        slot = BellList.subscribe(cursor.jid.directory, cursor.jid.name, self.bell.path, index)
        if slot is None:
            _say_not_listed(path)
            return False
        say_fixed(path, "this reader's bell is listed in %s now: the journal's writer rings it", path)
        self.index[index] = cursor
        self.slots[cursor] = (index, slot)
        mm = map_list(cursor.jid.directory, cursor.jid.name)  # kept: the needy byte is set at collects
        if mm is not None and len(mm) >= LIST_SIZE:
            self.bell.needy[index] = (mm, NEEDY + slot)
        return True

    def remove(self, cursor: Cursor) -> None:
        self.cursors.remove(cursor)
        self.order.pop(cursor, None)
        self.dirty.discard(cursor)
        if cursor in self.always:
            self.always.remove(cursor)
        self.heap = [entry for entry in self.heap if entry[2] is not cursor]
        heapq.heapify(self.heap)
        entry = self.slots.pop(cursor, None)
        if entry is not None and self.bell is not None:
            del self.index[entry[0]]
            self.bell.needy.pop(entry[0], None)  # unmapped once the C merge lets go (_sync)
            if self.bell.mine:  # a forked child's copy leaves the parent's subscription in place
                BellList.unsubscribe(cursor.jid.directory, cursor.jid.name, entry[1], self.bell.path)
        self._sync()

    def reset(self) -> None:
        """Every cursor was re-positioned: forget what was peeked and poll them all."""
        self.heap.clear()
        self.dirty.update(self.cursors)
        if self.core is not None:
            self.core.reset()

    def close(self, on_closed: Callable[[], object] | None = None) -> None:
        """Unsubscribe and unmap. With `on_closed` (`Reader.close`), a read bound before (the
        core's `next`, `read_single` and `read_single_data`, a cursor's `read`) calls it (it raises)
        from then on: owned by CLOSED, a thread that never runs, every entry point takes its
        other-thread path. It read on before (one journal: from the start again, mapping pages
        after close; several: None). Without (the finalizer of a dropped reader), a one-journal
        read kept by the caller reads on, as documented at `read_single`."""
        if on_closed is not None:
            self.owner, self.on_thread = CLOSED, on_closed
            for cursor in self.cursors:
                cursor.owner, cursor.on_thread = CLOSED, on_closed
            if self.core is not None:
                self.core._c_thread, self.core.on_thread = CLOSED, on_closed
        core, self.core = self.core, None  # no hand-over per journal removed (quadratic)
        if core is not None:
            core.set([], [], None)  # releases its hold on the bell's mapping
        for cursor in list(self.slots):
            self.remove(cursor)
        self.cursors.clear()
        self.core = core
        self.heap.clear()
        self.dirty.clear()
        if self.fifo >= 0:
            os.close(self.fifo)
            self.fifo = -1
        if self.bell is not None:
            self.pending = memoryview(bytearray(4)).cast("I")
            self.bell.close()
            self.bell = None

    # -- reading ------------------------------------------------------------------------------

    def read(self) -> Frame | None:
        """The earliest next frame of all journals, or None (pure Python; from the reader's thread,
        `owner`, only: another calls `on_thread`, which raises, and so does a read from inside this
        one, a signal handler's: the owner is READING meanwhile). The check writes nothing: another
        thread that marked the merge READING until it was refused made the owner's read that ran
        meanwhile look like one from inside its own, and refused it too."""
        if _get_ident() != self.owner and self.owner:
            self.on_thread()
        return self._read()

    def _read(self) -> Frame | None:
        """`read` past its thread check. From here on a signal handler's read, and any change
        (Reader._check_not_reading), is refused (_cursor.py)."""
        owner, self.owner = self.owner, READING
        try:
            if self.pending[0]:
                self._collect()
            elif not self.heap and not self.dirty:
                if not self.always:
                    self.empties += 1
                    if self.empties < SWEEP_EVERY:
                        return None
                    self.empties = 0
                    self.dirty.update(self.cursors)
            if self.dirty or self.always:
                self._poll_dirty()
            heap = self.heap
            if not heap:
                return None
            _, order, cursor = heap[0]
            frame = cursor.take()
            try:
                nano = cursor.poll()
            except Exception:  # a damaged next frame: hand this one out, raise at the next read
                _heappop(heap)
                self.dirty.add(cursor)
                return frame
            if nano >= 0:
                _heapreplace(heap, (nano, order, cursor))
            else:
                _heappop(heap)
            self.taken += 1
            if self.taken >= SWEEP_EVERY:  # a journal whose writer cannot ring is not starved
                self.taken = 0
                self.dirty.update(self.cursors)
            return frame
        finally:
            if self.owner == READING:  # unless it closed the reader, or handed it over
                self.owner = owner

    def sweep(self) -> None:
        """Poll every journal at the next read (after a wait that no ring ended); a retry to
        subscribe the journals not subscribed, when one is due."""
        self.swept_at = now = time.monotonic()
        if self.always and now >= self.retry_at:
            self._retry(now)
        self.dirty.update(self.cursors)
        for cursor in self.cursors:
            cursor.probe_at = 0
        if self.core is not None:
            self.core.sweep()

    def sweep_due(self) -> bool:
        """True once every SWEEP_PERIOD s while rings keep the reader busy: a journal whose writer
        cannot ring is then not starved by the journals whose writers can."""
        return time.monotonic() - self.swept_at >= SWEEP_PERIOD

    def _retry(self, now: float) -> None:
        """Subscribe again the journals not subscribed (`always`); the next try in RETRY_FIRST s
        after a success, else after twice the last gap, RETRY_LONGEST at most. A forked child's
        copy of the bell is the parent's: it subscribes nothing."""
        if self.bell is not None and not self.bell.mine:
            return
        covered = []
        for cursor in list(self.always):
            if self._subscribe(cursor):
                covered.append(cursor)
                self.always.remove(cursor)
            elif self.bell is None:
                break  # no bell could be made: no journal can be subscribed
        self.retry_gap = RETRY_FIRST if covered else min(self.retry_gap * 2, RETRY_LONGEST)
        self.retry_at = now + self.retry_gap
        if covered:
            self._sync()

    def rebuild(self) -> None:
        """The reader starts merging (again): heap what is peeked, poll the rest."""
        self.heap = [(c.next_nano, self.order[c], c) for c in self.cursors if c.next_nano >= 0]
        heapq.heapify(self.heap)
        self.sweep()

    def _collect(self) -> None:
        assert self.bell is not None
        index = self.index
        for i in self.bell.collect(MAX_FLAGS if not index else max(index) + 1):
            cursor = index.get(i)
            if cursor is not None:
                cursor.probe_at = 0  # a journal's first page: look now, not a millisecond later
                self.dirty.add(cursor)

    def _poll_dirty(self) -> None:
        dirty, heap, order = self.dirty, self.heap, self.order
        dirty.update(self.always)
        while dirty:
            cursor = dirty.pop()
            if cursor.next_nano >= 0:
                continue  # already in the heap
            try:
                nano = cursor.poll()
            except BaseException:
                dirty.add(cursor)
                raise
            if nano >= 0:
                _heappush(heap, (nano, order[cursor], cursor))

    def read_function(self) -> Callable[[], Frame | None]:
        """What `Reader.read` is bound to: `read`, or the C merge's own `next` (no Python frame
        per call; it settles through `_read_settling`). Neither refers back to the reader."""
        return self.read if self.core is None else self.core.next

    # -- the native backend ---------------------------------------------------------------------

    def _sync(self) -> None:
        """Hand the membership to the C merge (every journal dirty there)."""
        if self.core is None:
            return
        flags = [self.slots[c][0] if c in self.slots else -1 for c in self.cursors]
        bell = self.bell.mm if self.bell is not None and self.cursors else None
        needy = self.bell.needy if self.bell is not None else {}
        self.core.set([c.core for c in self.cursors], flags, bell, [needy.get(f) for f in flags])

    def _read_native(self) -> Frame | None:
        frame = self.core.read()
        if frame is _SLOW:
            return self._read_settling()
        return frame  # type: ignore[no-any-return]

    def _read_settling(self) -> Frame | None:
        """Settle what the C merge gave back, read again; a core that keeps going SLOW (never seen,
        a guard) makes the merge scan in Python once, after which C starts afresh."""
        core = self.core
        for _ in range(4):
            for i in core.slow():
                cursor = self.cursors[i]
                cursor.probe_at = 0  # C decides when a journal without a page is probed
                cursor.poll()  # the Python slow path: a damaged frame raises here, every time
                core.settle(i)
            frame = core.read()
            if frame is not _SLOW:
                return frame  # type: ignore[no-any-return]
        frame = _read_scan(self.cursors)
        core.reset()
        return frame


def _say_no_bell() -> None:
    where = _bell_dir()
    say_once(
        where,
        "cannot make a doorbell in %s (full, or not writable?): no writer can ring this reader; it "
        "polls its journals, in steps growing to 0.1 s while idle, and tries again every %g to %g s",
        where,
        RETRY_FIRST,
        RETRY_LONGEST,
    )


def _say_not_listed(path: str) -> None:
    say_once(
        path,
        "cannot list this reader's bell in %s (64 readers listed, or it cannot be opened or "
        "mapped); its writer cannot ring this reader: it polls the journal, in steps growing to "
        "0.1 s while idle, and tries again every %g to %g s",
        path,
        RETRY_FIRST,
        RETRY_LONGEST,
    )


def _any_thread() -> None:
    """`on_thread` until a reader owns the merge."""


def _settler(merge: Merge) -> Callable[[], Frame | None]:
    """The C merge's `on_slow`: `merge._read_settling`, through a weak reference (the core is the
    merge's: a strong one would be a cycle that only the cyclic collector frees)."""
    ref = weakref.ref(merge)

    def settle() -> Frame | None:
        merge = ref()
        return None if merge is None else merge._read_settling()

    return settle


def _read_scan(cursors: list[Cursor]) -> Frame | None:
    """The merge by a scan of every journal (the reference, and the native merge's last resort)."""
    best: Cursor | None = None
    best_nano = 0
    for cursor in cursors:
        nano = cursor.poll()
        if nano >= 0 and (best is None or nano < best_nano):
            best, best_nano = cursor, nano
    return None if best is None else best.take()


if native is not None:  # bound once at import: the pure-Python backend keeps its own `read`
    _SLOW = native.SLOW
    Merge._read_native.__doc__ = Merge.read.__doc__
    Merge.read = Merge._read_native  # type: ignore[method-assign]
