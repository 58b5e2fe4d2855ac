"""Retention: remove (or move to an archive directory) a journal's oldest pages.

Rules:

* Only whole pages, oldest first, and only a prefix of the journal: the pages left are always
  consecutive, so a reader walking from page to page never meets a hole.
* Only finished pages: a page is finished when its end-of-page marker is written. The writer's
  current page and the page prepared ahead of it have none, so they are never removed.
* Never a page a reader still needs: a durable reader holds every page from its committed page on
  (its cursor file under the home's ``cursors/``), a live reader every page from the one it stands
  on (its published position). `plan` reports who holds retention back. A cursor file that cannot
  be read (damaged, not a regular file) holds every page of every journal: its reader may need any.
  So does a live reader's counter file caught in the middle of an update (its publisher thread
  waits for the GIL between the seqlock's two stores, or its process is stopped there): skipping
  it, as retention did, let the torture remove pages under a reader that then met a gap.
* A reader that places itself publishes, then checks that its page is still there (`Board.hold`);
  `apply` reads the holds again just before it removes each page, oldest first. So a page P+1 goes
  only after P went and no reader held P or less: a reader that published P before that sees P
  kept, and one that published P after it finds P gone, and places itself again.
* Reading the holds again is cheap (`Counters`): a counter file (up to 64 MiB) is read in full only
  when its stamp moved since it was last read: the seqlock generation, and what tells one file and
  one writer from another (device, inode, change time, the writer's pid and start), since a reader
  started again under its name makes a new file whose inode number may be the old one's and whose
  generation starts over. Otherwise its header is all that is read (the stamp, and the heartbeat,
  which is written outside the seqlock). The publisher moves the generation with every position it
  writes, so a position published since is always read. Cursor files (small) are read each time.
* A reader that has a removed page mapped reads it to its end: on Linux the file's data live until
  the last mapping goes. A reader that had not reached the page yet would find it gone.
* A retention pass (`Monitor.retain_all`) lists each journal directory once (`one_listing`): a
  listing per journal made a pass over hundreds of journals in one directory O(journals^2). The
  listing is older than the pass's reads, which is safe: pages are only ever removed oldest first
  and never renumbered, so a stale listing lacks pages made since (fewer pages counted, fewer
  removed, and those are not finished) or holds pages removed since (the finished-page check finds
  them gone and stops, `apply` skips them); a page's holds and its end marker are read afresh.
  The readers' holds (the home's cursors/ and readers/, each file in them) are listed and read
  once per pass too, for `plan`: a listing per journal read every cursor file once per journal.
  `apply` reads them afresh before each page it removes (the rule above: a reader placed since
  the pass began must be seen), which costs a listing per page removed, none when none goes.
* Policy: a page goes when its newest frame is older than `max_age_ns`, or when the journal holds
  more than `max_bytes` (allocated on disk) or more than `max_pages`; whichever says so first.
* Age is not the wall clock's alone: the service measures it against `journal_clock`, the wall
  clock or the journal's newest frame, whichever is earlier. The wall clock may be stepped forward
  (a bad NTP step, an operator) and a replay writer stamps frames with past times (`write_at`): by
  the wall clock alone either makes every finished page "old" at once. So a page goes only when it
  is `max_age_ns` older than the journal's own newest frame too: a journal keeps the last max_age of
  its own history (an idle journal keeps its pages; bound those by bytes or pages). A frame stamped
  in the future moves nothing forward: the wall clock is the earlier then. The writer's current
  page is never removed (it is not finished). `mmipc prune --before T` takes its T as given.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from typing import Any

from .._errors import StorageError, UsageError
from ..journal._durable import list_cursors
from ..journal._files import page_path
from ..journal._layout import MsgType
from ..journal._metrics import FOREIGN_LIMIT, HEADER, Owner, counters_owner, list_counters, read_counters
from ._lag import journal_tail
from ._status import page_end, pages_of, pass_memo

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_age(text: str) -> int:
    """'7d', '12h', '30m', '90s', '2w' as ns."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if match is None:
        raise UsageError(f"not an age: {text!r} (try 7d, 12h, 30m)")
    return int(float(match.group(1)) * _UNITS[match.group(2)] * 1_000_000_000)


def parse_size(text: str) -> int:
    """'50G', '512M', '1T', '4096' as bytes (powers of 1024)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgt]?)i?b?", text.strip().lower())
    if match is None:
        raise UsageError(f"not a size: {text!r} (try 50G, 512M)")
    return int(float(match.group(1)) * _SIZES[match.group(2)])


@dataclass(frozen=True)
class Policy:
    """What to keep; None means no limit of that kind. `archive`: move pages there instead."""

    max_age_ns: int | None = None
    max_bytes: int | None = None
    max_pages: int | None = None
    archive: str | None = None

    def __bool__(self) -> bool:
        return any(x is not None for x in (self.max_age_ns, self.max_bytes, self.max_pages))


def parse_dir_policy(text: str, archive: str | None = None) -> tuple[str, Policy]:
    """``DIR=RULE[,RULE...]`` as (absolute DIR, its policy). A RULE is an age (7d: as --retain),
    ``bytes:SIZE`` (as --retain-bytes), ``pages:N`` (as --retain-pages), or ``none`` (keep all)."""
    directory, sep, rules = text.rpartition("=")
    if not sep or not directory or not rules:
        raise UsageError(f"--retain-dir wants DIR=RULE[,RULE...], for example /data/md=7d, not {text!r}")
    fields: dict[str, int] = {}
    for rule in rules.split(","):
        try:
            fields.update(_rule(rule.strip()))
        except UsageError as exc:
            raise UsageError(f"--retain-dir {text!r}: {exc}") from None
    return os.path.abspath(directory), Policy(**fields, archive=archive)


def _rule(rule: str) -> dict[str, int]:
    kind, _, value = rule.rpartition(":")
    if rule == "none":
        return {}
    if kind == "":
        return {"max_age_ns": parse_age(value)}
    if kind == "bytes":
        return {"max_bytes": parse_size(value)}
    if kind == "pages" and value.isdigit() and int(value) > 0:
        return {"max_pages": int(value)}
    raise UsageError(f"{rule!r} is not a rule (an age like 7d, bytes:50G, pages:N, or none)")


# A counter file's (device, inode, change time, writer's pid, its start, seqlock generation): a
# reader started again under the same name makes a new file, whose inode may be the old one's
# number again and whose generation starts over, so the generation alone could match a stale copy.
_Stamp = tuple[int, int, int, int, int, int]


class Counters:
    """Counter files as read last, each read again only when its stamp moved (see the rules).

    `full_reads` counts the whole-file reads, for the tests and the curious."""

    def __init__(self) -> None:
        self._read: dict[str, tuple[_Stamp, dict[str, Any]]] = {}
        self.full_reads = 0

    def listed(self, home: str) -> dict[str, str]:
        """`list_counters(home)`, forgetting the files gone since."""
        found = list_counters(home)
        for path in set(self._read) - set(found.values()):
            del self._read[path]
        return found

    def read(self, path: str) -> dict[str, Any] | None:
        """`read_counters(path)`, from memory while the file's stamp is the one it was read at (with
        the heartbeat read now: the publisher writes it outside the seqlock, and it tells whether
        a reader of another pid namespace lives)."""
        before, beat = _stamp(path)
        known = self._read.get(path)
        if before is not None and known is not None and known[0] == before:
            return {**known[1], "heartbeat_ns": beat}
        self.full_reads += 1
        counters = read_counters(path)
        self._read.pop(path, None)
        if counters is not None and before is not None and _stamp(path)[0] == before:
            self._read[path] = (before, counters)  # unchanged across the read: that snapshot is before's
        return counters


def _stamp(path: str) -> tuple[_Stamp | None, int]:
    """A counter file's stamp (`_Stamp`), None if it is not a regular file or is being written;
    and its heartbeat."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError:
        return None, 0
    try:
        st = os.fstat(fd)
        head = os.pread(fd, HEADER.size, 0) if stat.S_ISREG(st.st_mode) else b""
    except OSError:
        return None, 0
    finally:
        os.close(fd)
    if len(head) < HEADER.size:
        return None, 0
    _, _, pid, generation, beat, started = HEADER.unpack(head)[:6]
    if generation % 2:
        return None, beat
    return (st.st_dev, st.st_ino, st.st_ctime_ns, pid, started, generation), beat


@dataclass
class Plan:
    """The pages to remove, and the readers that keep later pages."""

    directory: str
    name: str
    remove: list[int] = field(default_factory=list)
    held_by: list[dict[str, Any]] = field(default_factory=list)
    kept_for: str = ""
    counters: Counters = field(default_factory=Counters, repr=False, compare=False)


def holds(
    home: str | None,
    directory: str,
    name: str,
    foreign_limit: float = FOREIGN_LIMIT,
    counters: Counters | None = None,
    fresh: bool = False,
) -> list[dict[str, Any]]:
    """Readers that need pages of this journal: {"reader", "page_no", "kind"} (durable or live). A
    live reader of another pid namespace holds while its heartbeat is younger than `foreign_limit`
    seconds (`_metrics.Owner.alive`). `counters`: the files as read before (each file is read again
    only if it changed since); a fresh `Counters` reads every one. Within a pass (`one_listing`)
    the home's cursors/ and readers/ are listed and read once for all its journals, unless `fresh`
    (`apply`, just before it removes a page: a reader placed since must be seen)."""
    if home is None:
        return []
    counters = counters if counters is not None else Counters()
    memo = None if fresh else pass_memo()
    key = ("holds", home, foreign_limit)
    entries: list[_Entry] | None = None if memo is None else memo.get(key)
    if entries is None:
        entries = _hold_entries(home, foreign_limit, counters)
        if memo is not None:
            memo[key] = entries
    journal = (os.path.realpath(directory), name)
    return [dict(hold) for where, hold in entries if where is None or where == journal]


# A hold, and the journal it holds: (real directory, name), or None for every journal.
_Entry = tuple[tuple[str, object] | None, dict[str, Any]]


def _hold_entries(home: str, foreign_limit: float, counters: Counters) -> list[_Entry]:
    """Every hold of the home's readers, durable first, in `holds`' order."""
    found: list[_Entry] = []
    for cursor in list_cursors(os.path.join(home, "cursors")):
        if "error" in cursor:  # its reader may need any page of any journal: hold them all
            reader = f"{cursor['name']} (its cursor file cannot be read: repair or reset it)"
            error = cursor["error"]
            found.append((None, {"reader": reader, "page_no": 0, "kind": "durable", "error": error}))
        for j in cursor.get("journals", []):
            where = (os.path.realpath(str(j.get("directory"))), j.get("name"))
            found.append((where, {"reader": cursor["name"], "page_no": int(j["page_no"]), "kind": "durable"}))
    for reader, path in counters.listed(home).items():
        published = counters.read(path)
        if published is None:
            found.extend((None, hold) for hold in _hold_unread(reader, path, foreign_limit))
            continue
        if not Owner.of(published).alive(foreign_limit):
            continue  # dead, or its pid reused by another process: it holds nothing
        for p in published["positions"]:
            found.append(((os.path.realpath(p.directory), p.name), _live_hold(reader, p.page_no)))
    return found


def _live_hold(reader: str, page_no: int) -> dict[str, Any]:
    """What a live reader's published slot holds. A slot with no page yet (-1: the journal had none
    when the reader added it, or its cursor is between positions) holds every page: the reader will
    start at the oldest page it finds, and it may already be reading there, unpublished until its
    publisher's next tick (found by `mmipc torture --seed 7`: a reader stopped before that tick lost
    pages 0 to 7 to the service's retention, "got seq 2220, expected 832 (a gap)")."""
    if page_no >= 0:
        return {"reader": reader, "page_no": page_no, "kind": "live"}
    return {"reader": f"{reader} (not on a page yet: every page held)", "page_no": 0, "kind": "live"}


def _hold_unread(reader: str, path: str, foreign_limit: float) -> list[dict[str, Any]]:
    """A live reader whose counter file reads as being written (its publisher thread is waiting
    for the GIL mid-update, or its process is stopped there) holds every page until it can be
    read: its positions are unknown, and a page removed under it is a gap it can never fill."""
    owner = counters_owner(path)
    if owner is None or not owner.alive(foreign_limit):
        return []
    who = f"{reader} (its positions are being written: every page held)"
    return [{"reader": who, "page_no": 0, "kind": "live"}]


def plan(
    home: str | None,
    directory: str,
    name: str,
    policy: Policy,
    now_ns: int,
    foreign_limit: float = FOREIGN_LIMIT,
    counters: Counters | None = None,
) -> Plan:
    """Which of the journal's oldest pages the policy removes (nothing is touched). `counters`: the
    counter files as read before (the service keeps one `Counters` for all its passes)."""
    result = Plan(directory, name, counters=counters if counters is not None else Counters())
    pages = pages_of(directory, name)  # within a pass (`one_listing`), its one listing of `directory`
    result.held_by = holds(home, directory, name, foreign_limit, result.counters)
    limit = min((h["page_no"] for h in result.held_by), default=None)
    sizes = {no: _allocated(page_path(directory, name, no)) for no in pages}
    total, count = sum(sizes.values()), len(pages)
    for page_no in pages:
        newest = _finished_at(directory, name, page_no)
        if newest is None:
            result.kept_for = f"page {page_no} is not finished (the writer's current or next page)"
            break
        if not _too_old(policy, newest, now_ns) and not _too_many(policy, total, count):
            break
        if limit is not None and page_no >= limit:
            who = ", ".join(h["reader"] for h in result.held_by if h["page_no"] == limit)
            result.kept_for = f"page {page_no} is held by reader {who}"
            break
        result.remove.append(page_no)
        total, count = total - sizes[page_no], count - 1
    return result


def journal_clock(directory: str, name: str, now_ns: int) -> int:
    """The time the service ages the journal's pages against: `now_ns` (the wall clock) or the
    journal's newest frame's timestamp, whichever is earlier (0 while it has no frame)."""
    tail = journal_tail(directory, name)
    return min(now_ns, tail.last_nano if tail is not None else 0)


def _too_old(policy: Policy, newest: int, now_ns: int) -> bool:
    return policy.max_age_ns is not None and newest < now_ns - policy.max_age_ns


def _too_many(policy: Policy, total: int, count: int) -> bool:
    return (policy.max_bytes is not None and total > policy.max_bytes) or (
        policy.max_pages is not None and count > policy.max_pages
    )


def _finished_at(directory: str, name: str, page_no: int) -> int | None:
    """The timestamp of the page's end marker (its newest frame's), or None if it is not finished;
    read by `page_end` (within a pass, the pass's one read of that page's end)."""
    found = page_end(directory, name, page_no)
    if found is None or found.last is None or found.last.msg_type != MsgType.PAGE_END:
        return None
    return found.last.nano


def _allocated(path: str) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def apply(
    result: Plan, archive: str | None, home: str | None = None, foreign_limit: float = FOREIGN_LIMIT
) -> list[str]:
    """Remove (or move to `archive`) the planned pages, oldest first, each unless a reader of `home`
    holds it by now; return the paths done."""
    done = []
    if archive is not None and result.remove:
        _make_archive(archive)
    for page_no in result.remove:
        held = holds(home, result.directory, result.name, foreign_limit, result.counters, fresh=True)
        now_held = [h for h in held if h["page_no"] <= page_no]
        if now_held:
            who = ", ".join(h["reader"] for h in now_held)
            result.kept_for = f"page {page_no} is held by reader {who}"
            break
        path = page_path(result.directory, result.name, page_no)
        try:
            if archive is None:
                os.unlink(path)
            else:
                _archive(path, archive)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(path):
                continue  # removed meanwhile (another prune)
            verb = "remove" if archive is None else "archive"
            raise StorageError(f"cannot {verb} page {path}: {exc.strerror} ({exc.filename})") from exc
        done.append(path)
    return done


def _make_archive(archive: str) -> None:
    try:
        os.makedirs(archive, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot use archive directory {archive}: {exc.strerror}") from exc


def _archive(path: str, archive: str) -> None:
    """Move a page into the archive: a rename, or (another file system) a copy made under a
    temporary name, synced, then renamed into place before the page is unlinked. A copy that failed
    (a full archive disk, a kill) left a partial page under the page's name: never overwritten,
    it blocked every later pass, and it looked archived."""
    target = os.path.join(archive, os.path.basename(path))
    if _archived_already(path, target):  # a pass killed between its rename and its unlink
        os.unlink(path)
        return
    if os.path.lexists(target):
        raise StorageError(f"cannot archive page {path}: {target} exists already (never overwritten)")
    try:
        os.rename(path, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = target + ".partial"  # ours: one a killed pass left is replaced
    try:
        _copy_synced(path, partial)
        os.rename(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    os.unlink(path)


def _archived_already(path: str, target: str) -> bool:
    """Whether `target` is a regular file, not `path` itself, holding exactly `path`'s bytes."""
    try:
        page, copy = os.stat(path), os.lstat(target)
    except OSError:
        return False
    if not stat.S_ISREG(copy.st_mode) or copy.st_size != page.st_size or os.path.samestat(page, copy):
        return False
    return filecmp.cmp(path, target, shallow=False)


def _copy_synced(path: str, copy: str) -> None:
    """Copy a page to a new file `copy` (never through a link planted there), times and mode kept,
    and sync it: the page is unlinked next."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(copy)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(path, "rb") as source, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        shutil.copystat(path, copy)
        os.fsync(out.fileno())


def prune(
    home: str | None, directory: str, name: str, policy: Policy, now_ns: int, dry_run: bool = False
) -> tuple[Plan, list[str]]:
    """Plan and (unless `dry_run`) apply `policy` to one journal."""
    result = plan(home, directory, name, policy, now_ns)
    return result, ([] if dry_run else apply(result, policy.archive, home))
