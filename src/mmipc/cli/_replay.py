"""`mmipc replay`: write recorded journals into new ones, at their recorded pace or faster."""

from __future__ import annotations

import argparse
from typing import Any

from .. import UsageError
from ..tools._replay import parse_speed, replay
from ._args import add_home, add_journals, check_time_range, journals_in_one_directory, service_of, time_arg
from ._common import format_time


def add_commands(commands: Any) -> None:
    cmd = commands.add_parser(
        "replay",
        help="replay journals into another directory at recorded speed",
        description="Write the frames of journals of DIR, merged by time, into journals of the "
        "same names in --to, keeping their recorded spacing (divided by --speed) and, unless "
        "--retime, their recorded timestamps.",
    )
    add_journals(cmd, elsewhere=False)
    cmd.add_argument("--to", required=True, metavar="DIR2", help="the directory of the new journals")
    cmd.add_argument("--speed", type=_speed, default=1.0, help="1x (default), 10x, ... or max")
    cmd.add_argument("--retime", action="store_true", help="stamp frames from now on, keeping their spacing")
    cmd.add_argument("--since", type=time_arg, help="from this time on")
    cmd.add_argument("--until", type=time_arg, help="up to this time (inclusive)")
    add_home(cmd, standalone=True)
    cmd.set_defaults(run=run_replay)


def _speed(text: str) -> float | None:
    try:
        return parse_speed(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_replay(args: argparse.Namespace) -> int:
    check_time_range(args)
    done = replay(
        args.directory,
        journals_in_one_directory(args),
        args.to,
        speed=args.speed,
        retime=args.retime,
        since=args.since,
        until=args.until,
        service=service_of(args),
    )
    span = f"{format_time(done.first_nano)} to {format_time(done.last_nano)}" if done.frames else "no frame"
    print(f"replayed {done.frames} frame(s) ({span}) into {args.to}")
    return 0
