"""`wait="block"`: a reader that spins a little, then sleeps until a writer rings its doorbell.

Rules:

* Spin `SPIN` seconds of polls after the last frame (busy-poll latency for frames that follow each
  other closely), then sleep. The window adapts: when the last two frames either side of an idle
  spell were further apart (writer's timestamps) than the window, the reader sleeps at once, as a
  reader paced every 200 us gains nothing from spinning 50 us and pays a quarter of a core for it.
  A wake-up is never lost: announce sleeping (a full fence), re-check every journal, and only then
  wait on the futex word read before the announcement (_bell.py).
* Native backend: all of that, and the read after the wake, is one call (`bell_block`) made by the
  C iterator `BlockIter` (_native/_blockiter.c), so a woken reader's frame reaches its consumer
  with no Python frame on the way; what the window needs is worked out after (`_Idle`). The
  pure-Python backend runs the same loop as a generator (`_frames`, the same `_Idle`), and waits
  (no futex there) on the bell's FIFO with poll(), announced IN_LOOP as `aframes` does: a ringing
  writer writes a byte into it. It napped in 1 ms steps, 3-4% of a core while idle.
* Each wait lasts at most a nap (`Naps`): a wait that no ring ended polls every journal (a sweep),
  so a writer that does not ring (an older version, a bell it may not open) is seen within a nap.
  The nap starts at FIRST_NAP (0.1 s) and doubles, up to `max_nap` (MAX_NAP, 1.6 s), after each
  sweep that finds nothing; a sweep that finds a frame (no ring announced it: a writer that does
  not ring, or one that rang just after the wait ended) and any change of the reader's journals
  set it back to FIRST_NAP. So an idle reader wakes about 0.6 times a second, not 10; a writer
  that does not ring is seen within 0.1 s while it keeps writing (its frames keep the nap short),
  and its first frame after an idle spell within `max_nap`. `Block(max_nap=0.1)` is the fixed
  0.1 s nap of earlier versions; a smaller `max_nap` bounds every nap.
  While rings keep ending the waits, every journal is polled once per SWEEP_PERIOD too (native:
  at the re-check before a wait, not after a wake, where it would delay the frame).
  A reader without a bell, and a pure-Python reader whose FIFO cannot be had (`_fifo`),
  polls in steps doubling from BOUNDED_SLEEP to POLL_STEP (0.1 s) while it finds nothing
  (`Naps.poll_step`); a reader with journals no doorbell covers (`merge.always`) waits on its bell
  for such a step at most, so a ring still wakes it at once. Each was said once (`_merge`: why no
  bell, why no slot in a list; `_no_fifo`). They polled every 1 ms: 2% of a core while idle.
* `timeout` (seconds without a frame, None: never) ends the iteration cleanly.
"""

from __future__ import annotations

import enum
import math
import os
import select
import stat
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .._errors import UsageError
from ._backend import native
from ._bell import BELL_MODE, BOUNDED_SLEEP, IN_LOOP, LONGEST_WAIT, ON_FUTEX, Bell, say_once
from ._merge import Merge
from ._times import float_seconds
from ._types import Frame

if TYPE_CHECKING:
    from ._reader import Reader

SPIN = 50e-6
FIRST_NAP = 0.1  # s: the first wait after a frame, a sweep that found one, or a change of journals
MAX_NAP = 1.6  # s: the longest, reached after four sweeps that found nothing (0.1 s doubled)
POLL_STEP = 0.1  # s: the longest sleep between two polls of a reader that no ring can wake


class Block:
    """`wait=Block(spin=..., max_nap=...)`: "block" with its knobs. `max_nap` bounds every wait: a
    writer that does not ring is seen within it (within FIRST_NAP while it keeps writing: `Naps`).
    `max_nap=None` waits for a ring however long it takes (no backstop: for writers that all ring,
    and for the lost-wake-up test).

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


class Naps:
    """How long the next wait lasts (at most; a ring ends it sooner): FIRST_NAP, doubled after each
    sweep that found nothing up to `longest`, back to FIRST_NAP after a sweep that found a frame
    (a writer that does not ring keeps it short) or a change of the reader's journals (a frame
    committed while a journal was subscribed may go unrung: docs/format.md, *Subscribing*).
    `longest` None: no limit (every wait waits for a ring)."""

    __slots__ = ("first", "longest", "nap", "count", "last", "uncovered", "sweeping", "step")

    def __init__(self, longest: float | None) -> None:
        self.longest = longest
        self.first = None if longest is None else min(FIRST_NAP, longest)
        self.nap = self.first
        self.count, self.last = -1, 0  # the reader's journals at the last wait: number, id of the last
        self.uncovered = 0  # and how many of them no doorbell covered (`Merge.always`)
        self.sweeping = False  # a wait ended with no ring: the next read polls every journal
        self.step = BOUNDED_SLEEP  # a reader no ring can wake (no FIFO): its sleep between polls

    def next(self, cursors: Sequence[object], uncovered: int = 0) -> float | None:
        """The next wait's length, for a reader following `cursors` (its merge's list), `uncovered`
        of them not subscribed: a change of their number, or of the last one (an add appends: a
        removal and an add change it), is a change of journals; so is a subscription at a retry
        (`Merge.sweep`), which `uncovered` falling shows."""
        last = id(cursors[-1]) if cursors else 0
        if len(cursors) != self.count or last != self.last or uncovered != self.uncovered:
            self.count, self.last, self.nap = len(cursors), last, self.first
            self.uncovered = uncovered
        return self.nap

    def poll_step(self, nap: float | None) -> float:
        """How long a reader that no ring can wake (its FIFO unusable: `_fifo`) sleeps before
        its next poll: BOUNDED_SLEEP, doubled after each poll that found nothing up to POLL_STEP
        (a 1 ms step was 1,000 wake-ups a second while idle), `nap` at most; `found` resets it."""
        step = self.step
        self.step = min(step * 2, POLL_STEP)
        return step if nap is None else min(step, nap)

    def found(self) -> None:
        """A poll without a ring found a frame: the next poll steps start at BOUNDED_SLEEP again."""
        self.step = BOUNDED_SLEEP

    def swept(self, found: bool) -> None:
        """After a wait that no ring ended, and the read that polled every journal: `found` a frame."""
        self.sweeping = False
        if self.nap is not None and self.longest is not None:
            self.nap = self.first if found else min(self.nap * 2, self.longest)


def block_frames(reader: Reader, merge: Merge, timeout: float | None, wait: Block) -> Iterator[Frame]:
    """`Reader.frames(wait="block")`, which returns this iterator itself (no generator of its own
    around it, to resume at every frame). Native: `BlockIter` (_native/_blockiter.c), whose Python
    half is `_Idle`; pure Python: the generator `_frames`, the same steps."""
    if native is not None:
        return native.BlockIter(reader, _Idle(reader, merge, timeout, wait))  # type: ignore[no-any-return]
    return _frames(reader, merge, timeout, wait)


class _Turn(enum.Enum):
    """What `_Idle.due` says besides a nap: read again (the spin window), or stop (the timeout)."""

    AGAIN = "again"
    STOP = "stop"


class _Idle:
    """The decisions about waiting, for both backends' iterators: `BlockIter` (native) calls
    `start`, `empty`, `nothing` and `found`; `_frames` (pure Python) `start`, `due` and `found`.
    They are taken on the way to sleep or after a frame is handed out, never between a wake and its
    frame."""

    __slots__ = ("reader", "merge", "timeout", "wait", "naps", "idle_since", "window")

    def __init__(self, reader: Reader, merge: Merge, timeout: float | None, wait: Block) -> None:
        self.reader, self.merge, self.timeout, self.wait = reader, merge, timeout, wait
        self.naps = Naps(wait.max_nap)
        self.idle_since: float | None = None
        self.window = wait.spin  # `spin`, or 0 after an idle spell between frames further apart

    def start(self) -> None:
        """At the first `next()`: `frames()`'s checks, in the thread that iterates."""
        self.timeout = self.reader._start_frames(self.timeout, self.wait)

    def due(self) -> float | None | _Turn:
        """After a read that found nothing: read again, stop, or sleep this long (None: until rung,
        what the timeout leaves included)."""
        naps = self.naps
        if naps.sweeping:
            naps.swept(False)
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        remaining = None if self.timeout is None else self.timeout - (now - self.idle_since)
        if remaining is not None and remaining <= 0:
            return _Turn.STOP
        if now - self.idle_since < self.window:
            return _Turn.AGAIN
        nap = naps.next(self.merge.cursors, len(self.merge.always))
        return remaining if nap is None else nap if remaining is None else min(remaining, nap)

    def empty(self) -> tuple[object, int, object] | bool | None:
        """`due` for `BlockIter`: None (read again), False (the timeout passed), or what
        `bell_block` needs to sleep (the bell, the wait's length in ns, the needy bytes' owner)."""
        nap = self.due()
        if nap is _Turn.AGAIN:
            return None
        if nap is _Turn.STOP:
            return False
        merge, bell = self.merge, self.merge.bell
        if bell is None:
            _sleep(self.reader, merge, nap, self.naps)  # a bounded sleep: it reads nothing
            return None
        return bell.mm, _announce(merge, _polled_nap(merge, nap, self.naps)), _needy(merge, bell)

    def nothing(self, rung: bool) -> None:
        """`bell_block` read nothing: `rung`, or no ring ended the wait."""
        _no_frame(rung, self.merge, self.naps)

    def found(self, gap_ns: int) -> None:
        """The frame handed out last ended an idle spell, `gap_ns` after the frame before it."""
        self.idle_since = None
        self.window = _window(self.wait.spin, gap_ns)
        self.naps.found()
        if self.naps.sweeping:
            self.naps.swept(True)


def _frames(reader: Reader, merge: Merge, timeout: float | None, wait: Block) -> Iterator[Frame]:
    """The pure-Python backend's `block_frames`: `BlockIter`'s loop, with `_sleep` where it calls
    `bell_block`. A frame is yielded first and accounted for after (the window), so that a woken
    reader's frame reaches its consumer with nothing in between."""
    idle = _Idle(reader, merge, timeout, wait)
    idle.start()
    last_nano, spell = 0, False  # spell: a read found nothing since the last frame
    while True:
        frame = reader.read()
        if frame is None:
            spell = True
            nap = idle.due()
            if nap is _Turn.STOP:
                return
            if nap is _Turn.AGAIN:
                continue
            frame = _sleep(reader, merge, nap, idle.naps)
            if frame is None:
                continue
        yield frame
        if spell:
            spell = False
            idle.found(frame.nano - last_nano)
        last_nano = frame.nano


def _seconds(value: object) -> bool:
    """A finite number of seconds (an int too large for a float is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return math.isfinite(float_seconds(value))


def _window(spin: float, gap_ns: int) -> float:
    """The spin window after an idle spell that ended with a frame `gap_ns` after the one before."""
    return spin if gap_ns < spin * 1e9 else 0.0


def _sleep(reader: Reader, merge: Merge, nap: float | None, naps: Naps) -> Frame | None:
    """Announce, re-check, wait (`nap` s at most, None: until rung): the frame the re-check or the
    read after a ring found, or None. A wait that no ring ended sets `naps.sweeping`: every journal
    is polled at the next read, whose result `block_frames` hands to `naps.swept` (off the path
    from the wake to the frame). Here: the pure-Python backend, and the bounded sleep of readers
    without a bell. Native: `bell_block` does all of it in one call, the read after the wake
    included, called by `BlockIter` with what `_Idle.empty` returns; the sweep every SWEEP_PERIOD
    while rings keep the reader busy comes before the announcement (`_announce`: the re-check then
    polls every journal), not after the wake, where it would delay the frame."""
    bell = merge.bell
    if bell is None:
        time.sleep(naps.poll_step(nap))
        merge.sweep()
        return None
    return _sleep_python(reader, merge, bell, _polled_nap(merge, nap, naps), naps)


def _polled_nap(merge: Merge, nap: float | None, naps: Naps) -> float | None:
    """The wait of a reader with a bell: `nap`, or a poll step if it follows journals that no
    doorbell covers (`merge.always`: found only by polling)."""
    return naps.poll_step(nap) if merge.always else nap


def _announce(merge: Merge, nap: float | None) -> int:
    """Before a native `bell_block`: the sweep due every SWEEP_PERIOD (the re-check then polls every
    journal); returns the wait's length in ns (-1: until rung)."""
    if merge.sweep_due():
        merge.sweep()
    return -1 if nap is None else int(min(nap, LONGEST_WAIT) * 1e9)


def _no_frame(rung: bool, merge: Merge, naps: Naps) -> None:
    """After a native `bell_block` that read nothing: `rung` (a first page may just have appeared),
    or a wait that no ring ended (look at everything once)."""
    if rung:
        if len(merge.cursors) == 1:
            merge.cursors[0].probe_at = 0
        return
    merge.sweep()
    naps.sweeping = True


def _needy(merge: Merge, bell: Bell) -> object:
    """What sets the reader's needy bytes as it announces sleep (native `bell_block`, `bell_sleep`):
    its C merge, which holds them (one call, however many journals), or None if it has none."""
    return merge.core if bell.needy else None


def _sleep_python(reader: Reader, merge: Merge, bell: Bell, nap: float | None, naps: Naps) -> Frame | None:
    """The pure-Python backend's sleep (no futex): on the bell's FIFO, as `aframes` waits, announced
    IN_LOOP, so a ringing writer writes a byte into it (docs/format.md, "Doorbells"); without a
    FIFO, in `Naps.poll_step` steps. The same order either way: announce, re-check, wait."""
    fd = _fifo(merge)
    seq = bell.sleep(IN_LOOP if fd >= 0 else ON_FUTEX)
    rung = False
    try:
        frame = reader.read()
        if frame is None and fd >= 0:
            rung = _wait_fifo(fd, LONGEST_WAIT if nap is None else min(nap, LONGEST_WAIT))
        elif frame is None:  # no ring can wake it: it polls, in steps that grow while idle
            time.sleep(naps.poll_step(nap))
            rung = not bell.mm.closed and bell.word() != seq  # closed: by a signal handler
    finally:
        bell.awake()  # also after an exception (a signal's, a read's): no writer rings for nothing
    if frame is not None:
        return frame
    if not rung:
        merge.sweep()  # no ring ended this wait: look at everything once
        naps.sweeping = True
    elif merge.sweep_due():
        merge.sweep()  # rings keep ending the waits: a writer that does not ring is not starved
    elif len(merge.cursors) == 1:
        merge.cursors[0].probe_at = 0  # a first page may just have appeared
    return None


def _fifo(merge: Merge) -> int:
    """The read end of the bell's FIFO (made on first use), or -1 (said once: `_no_fifo`); shared
    with `aframes` (_aio.py). Here, not there: a signal handler that slept in a reader during the
    first wait's import of _aio (and asyncio) met that module half made (ImportError)."""
    if merge.fifo >= 0 or merge.bell is None:
        return merge.fifo
    path = merge.bell.path + ".fifo"
    fd, why = _open_fifo(path)
    if fd < 0:
        _no_fifo(path, why)
        return -1
    merge.fifo = fd
    return fd


def _open_fifo(path: str) -> tuple[int, str]:
    """Our own FIFO at `path`, made if nothing is there, opened and set to BELL_MODE: (its read
    end, ""), or (-1, why not)."""
    try:
        if not os.path.lexists(path):
            os.mkfifo(path, BELL_MODE)
        # read-write: the reader is a writer of its own FIFO, so it never reads EOF (which would
        # leave it readable for good, a busy loop) once a ringing writer closes its end
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        return -1, exc.strerror or str(exc)
    why = _not_own_fifo(fd)  # a file found there is always readable: every wait a "ring", a busy loop
    if not why:
        try:
            os.fchmod(fd, BELL_MODE)  # the bell's mode exactly, whatever the umask
        except OSError as exc:
            why = f"cannot set its mode: {exc.strerror}"
    if why:
        os.close(fd)
        return -1, why
    return fd, ""


def _not_own_fifo(fd: int) -> str:
    """Why `fd` is not a FIFO of our user ("" if it is): a file, a device or another user's FIFO
    left at the bell's FIFO path (/dev/shm is everyone's, and the bells list names the bell)."""
    try:
        info = os.fstat(fd)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISFIFO(info.st_mode):
        return "it is not a FIFO"
    if info.st_uid != os.geteuid():
        return f"it is uid {info.st_uid}'s FIFO"
    return ""


def _no_fifo(path: str, why: str) -> None:
    """Say once that a reader cannot have its FIFO, and what it costs."""
    say_once(
        path,
        "cannot use the bell's FIFO %s: %s; no ring can wake this reader (asyncio, or pure-Python "
        "wait='block'): it polls in steps growing to %g s while idle, so frames may come that late",
        path,
        why,
        POLL_STEP,
    )


def _wait_fifo(fd: int, timeout: float) -> bool:
    """Wait up to `timeout` s for a byte in the FIFO: True (rung; the FIFO emptied) or False."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(math.ceil(timeout * 1000))
    if not events or not events[0][1] & select.POLLIN:
        return False  # POLLNVAL: a signal handler closed the reader (its FIFO) during the wait
    try:
        os.read(fd, 4096)  # rings write a byte each; one left over only ends the next wait at once
    except BlockingIOError:
        pass
    return True
