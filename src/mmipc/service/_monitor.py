"""The service's monitor thread: journal rates, reader lag, retention, dead readers' files.

Rules:

* It runs on its own thread and never under the service's lock while it reads files: it samples
  every known journal's tail every SAMPLE_INTERVAL and applies the retention policy every
  `retain_interval` seconds. Whatever it meets on disk is logged and counted, never raised: the
  thread always lives on. A task that fails is logged when it starts failing and when it works
  again, not at every pass (a journal directory replaced by a file was a warning a second, for ever).
* A journal stays known from the moment a writer or a reader names it until the service stops, so a
  journal whose writer has exited is still listed ("no writer").
* Readers are the union of the live registrations, the counter files in ``<home>/readers`` and the
  durable cursor files in ``<home>/cursors``. A reader whose process is gone is shown as dead until
  its counter file is DEAD_LINGER seconds older than its death was noticed, then the file goes; a
  durable reader without a process stays listed (offline) with its committed position, because it
  holds retention back.
* A reader killed with -9 leaves its doorbell and FIFO in /dev/shm (RAM): every SAMPLE_INTERVAL the
  monitor removes those of dead readers (`sweep_dead_bells`: our user's only, by pid and start time).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .._errors import MmipcError
from ..journal._bell import sweep_dead_bells
from ..journal._durable import list_cursors
from ..journal._files import pid_alive
from ..journal._metrics import (
    DEAD_LINGER,
    FOREIGN_LIMIT,
    Published,
    counters_owner,
    list_counters,
    read_counters,
)
from ._lag import SAMPLE_INTERVAL, Rates, Tail, count_frames, disk_usage, journal_tail, reader_lag
from ._retention import Counters, Plan, Policy, journal_clock, plan
from ._retention import apply as apply_plan
from ._status import one_listing

log = logging.getLogger("mmipc.service")
JournalKey = tuple[str, str]


class Monitor:
    """Samples journals and applies retention on a thread; `journal`/`readers` report for `status`."""

    def __init__(
        self,
        home: str,
        known: Callable[[], list[JournalKey]],
        policy: Policy | None = None,
        policies: dict[str, Policy] | None = None,
        retain_interval: float = 60.0,
        foreign_limit: float = FOREIGN_LIMIT,
    ) -> None:
        self.home = home
        self.foreign_limit = foreign_limit  # seconds: see _metrics.Owner.alive
        self._known = known
        self.policy = policy or Policy()
        self.policies = {os.path.realpath(d): p for d, p in (policies or {}).items()}
        self.retain_interval = retain_interval
        self._rates: dict[JournalKey, Rates] = {}
        self._frames: dict[JournalKey, int] = {}
        self._dead_since: dict[str, float] = {}
        self._stopped: frozenset[tuple[int, int, int]] = frozenset()  # see _forget_dead
        self._guard = threading.Lock()
        self._failing: dict[tuple[str, tuple[Any, ...]], str] = {}  # the monitor thread's only
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pages_removed = 0
        self.ticks = 0
        self.retention_errors = 0
        self.last_retention_error = ""
        self.held: dict[JournalKey, str] = {}
        self._counters = Counters()  # the readers' counter files, read again only when they change
        self.on_tick: Callable[[], None] = lambda: None  # the service's lazy page preparation

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mmipc-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        """Sample every SAMPLE_INTERVAL, retain every `retain_interval`, whichever is shorter."""
        now = time.monotonic()
        next_sample, next_retention = now + SAMPLE_INTERVAL, now + min(self.retain_interval, SAMPLE_INTERVAL)
        while not self._stop.wait(max(0.0, min(next_sample, next_retention) - time.monotonic())):
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + SAMPLE_INTERVAL
                self._tick()
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + self.retain_interval
                self.retain_all()

    def _tick(self) -> None:
        self.ticks += 1
        self._guarded(self.on_tick)
        with one_listing():  # each journal directory listed once per tick, not once per journal
            for key in self._known():
                self._guarded(self._sample, key)
        self._guarded(self._forget_dead)
        self._guarded(self._sweep_bells)

    def _guarded(self, what: Callable[..., object], *args: Any) -> None:
        """Run `what(*args)`; log when it starts failing and when it works again, not at every pass."""
        task = (what.__name__, args)
        try:
            what(*args)
        except Exception as exc:  # nothing on disk may end this thread
            if task in self._failing:
                log.debug("monitor: %s%s still failing: %s", *task, exc)
            else:
                log.warning("monitor: %s%s failed: %s (logged once until it recovers)", *task, exc)
            self._failing[task] = str(exc)
        else:
            if self._failing.pop(task, None) is not None:
                log.info("monitor: %s%s recovered", *task)

    # -- journals --------------------------------------------------------------------------------

    def _sample(self, key: JournalKey) -> None:
        tail = journal_tail(*key)
        if tail is None:
            return
        with self._guard:
            rates = self._rates.setdefault(key, Rates())
            previous = rates.samples[-1][1] if rates.samples else None
        frames = self._frames.get(key, 0)
        if previous is not None:
            frames += count_frames(key[0], key[1], previous, tail)
        self._frames[key] = frames
        with self._guard:
            rates.add(time.monotonic(), tail, frames)

    def journal(self, key: JournalKey) -> dict[str, Any]:
        """Rates, age of the last frame, disk use, free space and time to full of one journal."""
        with self._guard:
            rates = self._rates.get(key)
            frames_per_s, bytes_per_s = rates.rates() if rates is not None else (0.0, 0.0)
        tail: Tail | None = _safely(journal_tail, key, None)
        used, free = _safely(disk_usage, key, (0, 0))
        last = tail.last_nano if tail is not None else 0
        return {
            "frames_per_s": round(frames_per_s, 3),
            "bytes_per_s": round(bytes_per_s, 3),
            "last_frame_age_s": round(max(0, time.time_ns() - last) / 1e9, 3) if last else None,
            "next_seq": tail.next_seq if tail is not None and tail.next_seq >= 0 else None,
            "disk_bytes": used,
            "free_bytes": free,
            "time_to_full_s": round(free / bytes_per_s, 1) if bytes_per_s > 0 else None,
            "retention_held_by": self.held.get(key, ""),
        }

    # -- retention -------------------------------------------------------------------------------

    def policy_for(self, directory: str) -> Policy:
        return self.policies.get(os.path.realpath(directory), self.policy)

    def retain_all(self) -> None:
        """One retention pass over every known journal, each journal directory listed once."""
        with one_listing():
            for key in self._known():
                self._guarded(self.retain, key)

    def retain(self, key: JournalKey) -> list[str]:
        policy = self.policy_for(key[0])
        if not policy:
            return []
        result = Plan(*key)
        try:  # a page that cannot be read is a retention error (counted in status), not a silent stop
            clock = _clock(key, policy)
            result = plan(self.home, key[0], key[1], policy, clock, self.foreign_limit, self._counters)
            done = apply_plan(result, policy.archive, self.home, self.foreign_limit)
        except Exception as exc:
            self.retention_errors += 1
            self.last_retention_error = str(exc)
            raise
        finally:
            self.held[key] = result.kept_for if "held by" in result.kept_for else ""
        if done:
            self.pages_removed += len(done)
            log.info("retention: %s %s", "archived" if policy.archive else "removed", ", ".join(done))
        return done

    # -- readers ---------------------------------------------------------------------------------

    def readers(self, live: dict[str, tuple[int, list[JournalKey]]]) -> list[dict[str, Any]]:
        """Every reader known to the home: live, dead or offline (durable, no process)."""
        counters = {name: read_counters(path) for name, path in list_counters(self.home).items()}
        committed = {c["name"]: c for c in list_cursors(os.path.join(self.home, "cursors"))}
        tails: dict[JournalKey, Tail | None] = {}
        out = []
        for name in sorted(set(live) | set(counters) | set(committed)):
            info = counters.get(name)
            pid = live[name][0] if name in live else (info["pid"] if info else None)
            state = "live" if name in live else ("dead" if info else "offline")
            if state == "live" and pid is not None and not pid_alive(pid):
                state = "dead"
            entry: dict[str, Any] = {
                "name": name,
                "pid": pid,
                "state": state,
                "durable": name in committed or bool(info and info["durable"]),
                "wait": info["wait"] if info else None,
                "journals": self._reader_journals(name, live, info, committed.get(name), tails),
            }
            if name in committed and "error" in committed[name]:
                entry["cursor_error"] = committed[name]["error"]
            out.append(entry)
        return out

    def _reader_journals(
        self,
        name: str,
        live: dict[str, tuple[int, list[JournalKey]]],
        info: dict[str, Any] | None,
        cursor: dict[str, Any] | None,
        tails: dict[JournalKey, Tail | None],
    ) -> list[dict[str, Any]]:
        published = {(os.path.realpath(p.directory), p.name): p for p in (info["positions"] if info else [])}
        commits = {
            (os.path.realpath(j["directory"]), j["name"]): j for j in (cursor or {}).get("journals", [])
        }
        keys = sorted(set(live.get(name, (0, []))[1]) | set(published) | set(commits))
        now = time.time_ns()
        rows = []
        for key in keys:
            if key not in tails:
                tails[key] = _safely(journal_tail, key, None)
            at = published.get(key)
            if at is None and key in commits:
                c = commits[key]
                at = Published(key[0], key[1], c["page_no"], c["offset"], c["nano"], 0)
            row: dict[str, Any] = {"directory": key[0], "name": key[1]}
            if at is not None:
                lag = _safely(functools.partial(reader_lag, at=at, tail=tails[key]), key, {})
                if not lag:
                    rows.append({**row, "error": "cannot read the journal"})
                    continue
                stalled = (now - at.changed_ns) / 1e9 if lag["lag_bytes"] and at.changed_ns else 0.0
                row.update(page_no=at.page_no, offset=at.offset, nano=at.nano, **lag)
                row["stalled_s"] = round(max(0.0, stalled), 3)
            if key in commits:
                row["committed"] = {k: commits[key][k] for k in ("page_no", "offset", "nano", "seq")}
                if key not in published:
                    _exact_lag(row, row["committed"]["seq"], tails[key])
            rows.append(row)
        return rows

    def _forget_dead(self) -> None:
        """Remove the counter files of readers dead for DEAD_LINGER seconds, by the owner in the
        header (pid, start time, pid namespace, heartbeat), read whatever the seqlock's generation:
        a reader stopped between its seqlock's two stores may be alive, and holds every page through
        it (`_retention._hold_unread`). Remember the owners of another pid namespace whose heartbeat
        stopped, for `_sweep_bells`: nothing else can tell those are dead. A reader whose file is
        gone is forgotten: with readers that come and go, nothing here grows for the service's
        lifetime (retention's `Counters` forgets files gone at each `listed`, too)."""
        now = time.monotonic()
        stopped = set()
        listed = list_counters(self.home)
        for name in self._dead_since.keys() - listed.keys():
            del self._dead_since[name]  # its file went (removed by hand, `mmipc prune`): forgotten
        for name, path in listed.items():
            owner = counters_owner(path)  # the header's owner, whatever the seqlock's generation
            if owner is not None and owner.alive(self.foreign_limit):
                self._dead_since.pop(name, None)
                continue
            if owner is not None and owner.foreign():
                stopped.add((owner.pid, owner.start_ticks, owner.pid_ns))
            since = self._dead_since.setdefault(name, now)
            if now - since >= DEAD_LINGER:
                try:
                    os.unlink(path)
                except OSError:
                    pass
                self._dead_since.pop(name, None)
        self._stopped = frozenset(stopped)

    def _sweep_bells(self) -> None:
        """The bells of dead readers, and of the readers of another namespace whose heartbeat stopped."""
        sweep_dead_bells(self._stopped)


def _clock(key: JournalKey, policy: Policy) -> int:
    """The time pages age against: an age rule counts on the journal's own newest frame too
    (`journal_clock`, which reads its last page); bytes and pages need no clock, nor that page."""
    now = time.time_ns()
    return journal_clock(key[0], key[1], now) if policy.max_age_ns is not None else now


def _exact_lag(row: dict[str, Any], seq: int, tail: Tail | None) -> None:
    """An offline durable reader's lag in frames from its committed seq, without opening a page."""
    if seq >= 0 and tail is not None and tail.next_seq >= 0 and "lag_bytes" in row:
        row["lag_frames"] = max(0, tail.next_seq - seq - 1) if row["lag_bytes"] else 0


def _safely(read: Callable[[str, str], Any], key: JournalKey, default: Any) -> Any:
    """`read(directory, name)`, or `default` if what is on disk cannot be read (status never fails)."""
    try:
        return read(*key)
    except (MmipcError, OSError, ValueError) as exc:
        log.debug("monitor: cannot read %s/%s: %s", key[0], key[1], exc)
        return default
