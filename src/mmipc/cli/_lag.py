"""What `mmipc status` adds for lag and retention: --watch, --prometheus, and the service's
--retain*, --metrics options (the rendering of journals' rates and readers' lag lives here)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .._errors import UsageError
from ..journal._metrics import FOREIGN_LIMIT
from ..service._prometheus import exposition, parse_loopback
from ..service._retention import Policy, parse_age, parse_dir_policy, parse_size
from ._args import count, seconds
from ._common import format_time
from ._errors import ArgumentsError

WATCH_CLEAR = "\x1b[H\x1b[2J"


def add_status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--watch", action="store_true", help="refresh every --interval seconds, like top")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("--prometheus", action="store_true", help="print the Prometheus text format")


def add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retain", metavar="AGE", help="remove pages whose newest frame is older (7d, 12h)")
    parser.add_argument("--retain-bytes", metavar="SIZE", help="keep at most SIZE per journal (50G, 512M)")
    parser.add_argument("--retain-pages", type=count, metavar="N", help="keep at most N pages per journal")
    parser.add_argument(
        "--retain-dir",
        action="append",
        default=[],
        metavar="DIR=RULES",
        help="a policy for the journals of DIR instead of the --retain* ones (repeatable); RULES: an "
        "age (7d), bytes:SIZE, pages:N, comma-separated, or none to keep everything",
    )
    parser.add_argument(
        "--retain-interval",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="seconds between two retention passes (default 60)",
    )
    parser.add_argument(
        "--foreign-reader-limit",
        type=seconds,
        default=FOREIGN_LIMIT,
        metavar="SECONDS",
        help="a reader of another pid namespace (a container) whose heartbeat is older is dead: its "
        f"pages and files go (default {FOREIGN_LIMIT:.0f}; one frozen longer loses its hold)",
    )
    parser.add_argument("--archive", metavar="DIR", help="move removed pages into DIR instead of deleting")
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (loopback only; off by default)",
    )


def retention_policy(args: argparse.Namespace) -> Policy | None:
    """The --retain* options as a policy (None without any); bad values are usage errors (exit 2)."""
    try:
        policy = Policy(
            max_age_ns=parse_age(args.retain) if args.retain else None,
            max_bytes=parse_size(args.retain_bytes) if args.retain_bytes else None,
            max_pages=args.retain_pages,
            archive=args.archive,
        )
    except UsageError as exc:
        raise ArgumentsError(str(exc)) from None
    return policy if policy else None


def retention_dirs(args: argparse.Namespace) -> dict[str, Policy]:
    """The --retain-dir options: directory -> policy (a later one for the same directory wins)."""
    try:
        return dict(parse_dir_policy(text, args.archive) for text in args.retain_dir)
    except UsageError as exc:
        raise ArgumentsError(str(exc)) from None


def check_metrics(args: argparse.Namespace) -> None:
    if args.metrics:
        parse_loopback(args.metrics)


def check_archive(args: argparse.Namespace) -> None:
    """--archive DIR: a directory this user can write, created if missing (0700, as retention
    would). /dev/null, a file or an unwritable path was accepted, then failed every retention pass."""
    if args.archive is None:
        return
    if os.path.lexists(args.archive) and not os.path.isdir(args.archive):
        raise ArgumentsError(f"--archive {args.archive}: not a directory")
    try:
        os.makedirs(args.archive, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ArgumentsError(
            f"--archive {args.archive}: cannot create the directory: {exc.strerror}"
        ) from None
    if not os.access(args.archive, os.W_OK | os.X_OK):
        raise ArgumentsError(f"--archive {args.archive}: not writable by this user")


def show(
    args: argparse.Namespace, fetch: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str]
) -> None:
    """Print the status once, or refresh it until Ctrl-C with --watch."""
    text = exposition if args.prometheus else render
    if not args.watch:
        print(text(fetch()), end="" if args.prometheus else "\n")
        return
    while True:
        sys.stdout.write(WATCH_CLEAR + text(fetch()) + "\n")
        sys.stdout.flush()
        time.sleep(max(0.1, args.interval))


_JOURNAL_HEAD = ("WRITER", "FRAMES/S", "BYTES/S", "AGE", "DISK", "FREE", "FULL IN", "JOURNAL", "LAST FRAME")
_JOURNAL_ROW = "{:>9} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8}  {:<{width}}  {}"
_READER_HEAD = ("READER", "PID", "STATE", "WAIT", "LAG FR", "LAG", "STALLED", "COMMITTED", "JOURNAL")
_READER_ROW = "{:<20} {:>7} {:<7} {:<8} {:>7} {:>8} {:>8} {:>16}  {}"


def journal_lines(journals: list[dict[str, Any]]) -> list[str]:
    """One line per journal: writer, rates, age of the last frame, disk, free space, time to full."""
    width = max([len(_JOURNAL_HEAD[7]), *(len(f"{j['directory']}/{j['name']}") for j in journals)])
    lines = [_JOURNAL_ROW.format(*_JOURNAL_HEAD, width=width)]
    for j in journals:
        writer = str(j["writer_pid"]) if j.get("writer_pid") is not None else "no writer"
        rate = f"{j.get('frames_per_s', 0):.1f}"
        lines.append(
            _JOURNAL_ROW.format(
                writer, rate, _size(j.get("bytes_per_s", 0)) + "/s", _secs(j.get("last_frame_age_s")),
                _size(j.get("disk_bytes", 0)), _size(j.get("free_bytes", 0)),
                _secs(j.get("time_to_full_s")), f"{j['directory']}/{j['name']}",
                format_time(j["last_nano"]) if j.get("last_nano") else "-", width=width,
            )
        )  # fmt: skip
        if j.get("retention_held_by"):
            lines.append(f"    retention stopped: {j['retention_held_by']}")
        if "error" in j:
            lines.append(f"    cannot read it: {j['error']}")
    return lines


def reader_lines(readers: list[dict[str, Any]]) -> list[str]:
    """One line per reader and journal: state, wait mode, lag in frames and time, stalled, committed."""
    lines = [_READER_ROW.format(*_READER_HEAD)]
    for r in readers:
        for i, row in enumerate(r.get("lag") or [{}]):
            who = (r["name"], r["pid"] or "-", r["state"], r.get("wait") or "-") if i == 0 else ("",) * 4
            lines.append(_READER_ROW.format(*who, *_lag_cells(row)))
    return lines


def _lag_cells(row: dict[str, Any]) -> tuple[str, ...]:
    if not row:
        return ("-",) * 5
    frames = "-" if row.get("lag_frames") is None else str(row["lag_frames"])
    lag = _secs(row["lag_ns"] / 1e9) if "lag_ns" in row else "-"
    committed = row.get("committed")
    where = "-"
    if committed:
        seq = committed.get("seq", -1)
        where = f"seq {seq}" if seq >= 0 else f"page {committed['page_no']} @{committed['offset']}"
    return frames, lag, _secs(row.get("stalled_s")), where, f"{row['directory']}/{row['name']}"


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms" if value else "0"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h" if value < 172800 else f"{value / 86400:.0f}d"
