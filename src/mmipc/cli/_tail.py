"""`mmipc tail`: like `tail -f`, across journals merged by time."""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from .. import Frame, Reader
from .._errors import CorruptJournalError
from ..journal._files import list_pages
from ..tools import nth_last_nano
from ._args import add_journals, check_time_range, existing_directory, journals, natural, time_arg
from ._common import Bar, add_struct, render
from ._errors import CommandError
from ._rw import say_waiting

PROGRESS_EVERY = 4096  # frames between progress-bar updates of a long --since walk


def add_commands(commands: Any) -> None:
    tail = commands.add_parser(
        "tail",
        help="print the last frames and follow, across journals",
        description="Print the last frames of one or more journals of DIR, merged by "
        "time, then follow new ones (like tail -f).",
    )
    add_journals(tail)
    tail.add_argument("-n", type=natural, default=20, help="frames to print first (default 20)")
    tail.add_argument("--since", type=time_arg, help="print from this time on instead of the last N")
    tail.add_argument("--until", type=time_arg, help="stop at this time")
    tail.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="go on printing new frames (default: follow)",
    )
    add_struct(tail)
    tail.add_argument("--json", action="store_true", help="one JSON object per frame on stdout, nothing else")
    tail.set_defaults(run=run_tail)


def run_tail(args: argparse.Namespace) -> int:
    check_time_range(args)
    named = journals(args)
    for directory, _ in named:
        existing_directory(directory)
    missing = [] if args.follow else _no_pages(named)
    waiting = say_waiting("tail", named) if args.follow else None
    with Reader.create(f"mmipc-tail-{os.getpid()}", service=None) as reader:
        for directory, name in named:
            reader.add_journal(directory, name, start=_start(args, directory, name))
        show = _printer(args, following=False)
        if args.since is not None:  # streamed: a long --since is never held in memory
            backlog: Iterable[Frame] = _with_progress(iter(reader.read, None), args.since, named)
        else:
            backlog = deque(iter(reader.read, None), maxlen=min(args.n, sys.maxsize)) if args.n else ()
        for frame in backlog:
            if not show(frame):
                return 0
        try:
            show = _printer(args, following=True)
            for frame in reader.frames() if args.follow else ():
                if not show(frame):
                    break
        finally:
            if waiting is not None:
                waiting.cancel()
    return 1 if missing else 0


def _no_pages(named: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Without --follow, a journal with no pages is an error (all of them) or a warning (some)."""
    missing = [(d, j) for d, j in named if not list_pages(d, j)]
    problem = ", ".join(f"journal {j} in {d} has no pages" for d, j in missing)
    if missing and len(missing) == len(named):
        raise CommandError(f"{problem} (check the name, or start its writer)")
    if missing:
        print(f"mmipc tail: {problem}", file=sys.stderr, flush=True)
    return missing


def _start(args: argparse.Namespace, directory: str, name: str) -> Any:
    if args.since is not None:
        return args.since
    nano = nth_last_nano(directory, name, max(args.n, 1))
    return "begin" if nano is None else nano


def _with_progress(frames: Iterator[Frame], since: int, named: list[tuple[str, str]]) -> Iterator[Frame]:
    """The frames, with a progress bar on stderr when stdout is not a terminal (a long walk to a file)."""
    last = max((nth_last_nano(d, j, 1) or 0 for d, j in named), default=0)
    bar = Bar("tail")
    bar.enabled = bar.enabled and not sys.stdout.isatty() and last > since
    try:
        for shown, frame in enumerate(frames):
            if shown % PROGRESS_EVERY == 0:
                bar(frame.nano - since, last - since)
            yield frame
    finally:
        bar.close()


def _printer(args: argparse.Namespace, following: bool) -> Any:
    """Prints a frame, until --until. A damaged schema file stops the command before it follows (one
    line); once following, it is reported once and the frames it would decode are printed raw: a
    `tail -f` left running must not end because a file beside the journal went bad."""

    def show(frame: Frame) -> bool:
        if args.until is not None and frame.nano > args.until:
            return False
        try:
            line = render(frame, args.struct, args.json)
        except CorruptJournalError as exc:  # raised once per damaged file (`declared_layout`)
            if not following:
                raise
            print(f"mmipc tail: {exc}; printing the frames it would decode raw", file=sys.stderr, flush=True)
            line = render(frame, args.struct, args.json)
        print(line, flush=True)
        return True

    return show
