"""`mmipc tail`: like `tail -f`, across journals merged by time."""

from __future__ import annotations

import argparse
import os
from collections import deque
from typing import Any

from .. import Frame, Reader
from ..ctp import LAYOUTS
from ..tools import nth_last_nano
from ._common import parse_time, render


def add_commands(commands: Any) -> None:
    tail = commands.add_parser(
        "tail",
        help="print the last frames and follow, across journals",
        description="Print the last frames of one or more journals of DIR, merged by "
        "time, then follow new ones (like tail -f).",
    )
    tail.add_argument("directory", metavar="DIR")
    tail.add_argument("names", nargs="+", metavar="NAME")
    tail.add_argument("-n", type=int, default=20, help="frames to print first (default 20)")
    tail.add_argument("--since", type=parse_time, help="print from this time on instead of the last N")
    tail.add_argument("--until", type=parse_time, help="stop at this time")
    tail.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="go on printing new frames (default: follow)",
    )
    tail.add_argument("--struct", choices=sorted(LAYOUTS), help="decode payloads as a CTP layout")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(run=run_tail)


def run_tail(args: argparse.Namespace) -> int:
    reader = Reader.create(f"mmipc-tail-{os.getpid()}", service=None)
    for name in args.names:
        reader.add_journal(args.directory, name, start=_start(args, name))
    show = _printer(args)
    if args.since is not None:
        backlog: Any = iter(reader.read, None)  # streamed: a long --since is never held in memory
    else:
        backlog = deque(iter(reader.read, None), maxlen=max(args.n, 0))
    for frame in backlog:
        if not show(frame):
            return 0
    if args.follow:
        for frame in reader.frames():
            if not show(frame):
                break
    return 0


def _start(args: argparse.Namespace, name: str) -> Any:
    if args.since is not None:
        return args.since
    nano = nth_last_nano(args.directory, name, max(args.n, 1))
    return "begin" if nano is None else nano


def _printer(args: argparse.Namespace) -> Any:
    def show(frame: Frame) -> bool:
        if args.until is not None and frame.nano > args.until:
            return False
        print(render(frame, args.struct, args.json), flush=True)
        return True

    return show
