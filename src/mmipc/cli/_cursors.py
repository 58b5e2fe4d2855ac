"""`mmipc cursors` (durable readers' committed positions, and their reset) and `mmipc prune`."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from ..journal._durable import cursor_dir_for, list_cursors, reset
from ..journal._files import check_name
from ..service._home import resolve_home
from ..service._retention import Policy, prune
from ._args import add_home, add_journals, add_json, existing_directory, time_arg
from ._common import format_time
from ._errors import ArgumentsError

Commands = Any  # argparse's private _SubParsersAction


def add_commands(commands: Commands) -> None:
    cursors = commands.add_parser(
        "cursors",
        help="list durable readers and their committed positions, or reset one",
        description="List the durable readers of a home (their cursor files in HOME/cursors) with "
        "each journal's committed position. --reset NAME forgets a reader's positions (it starts "
        "again from the beginning), or with --to T moves them to the first frame at or after T. "
        "The reader must not be running.",
    )
    add_home(cursors)
    cursors.add_argument("--cursor-dir", help="the cursor files' directory (default: HOME/cursors)")
    add_json(cursors)
    cursors.add_argument("--reset", metavar="NAME", help="reset this durable reader's positions")
    cursors.add_argument("--to", type=time_arg, metavar="T", help="with --reset: move to time T")
    cursors.set_defaults(run=run_cursors)
    pruner = commands.add_parser(
        "prune",
        help="remove a journal's pages older than a time",
        description="Remove (or move to --archive) the journal's whole pages whose newest frame is "
        "older than T, oldest first. Never the writer's current page or the one prepared next, and "
        "never a page a durable reader (of --home) has not committed past or a live reader stands on.",
    )
    add_journals(pruner, one=True)
    pruner.add_argument("--before", type=time_arg, metavar="T", help="remove pages older than T (required)")
    pruner.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    pruner.add_argument("--archive", metavar="DIR", help="move the pages into DIR instead of deleting them")
    add_home(pruner)
    pruner.set_defaults(run=run_prune)


def run_cursors(args: argparse.Namespace) -> int:
    directory = cursor_dir_for(args.cursor_dir, args.home)
    if args.to is not None and args.reset is None:
        raise ArgumentsError("--to needs --reset NAME")
    if args.reset is not None:
        file = reset(directory, args.reset, args.to)
        where = f"to {format_time(args.to)}" if args.to is not None else "to the beginning (file removed)"
        print(f"reset durable reader {file.name} {where}")
        return 0
    found = list_cursors(directory)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(_ROW.format("READER", "JOURNAL", "PAGE", "OFFSET", "SEQ", "LAST ACKNOWLEDGED FRAME"))
    for cursor in found:
        if "error" in cursor:
            print(f"{cursor['name']:<24} cannot read it: {cursor['error']}")
        for j in cursor.get("journals", []):
            journal = os.path.join(j["directory"], j["name"])
            nano = format_time(j["nano"]) if j["nano"] else "-"
            seq = j["seq"] if j.get("seq", -1) >= 0 else "-"  # -1: a version-1 page, or no frame yet
            print(_ROW.format(cursor["name"], journal, j["page_no"], j["offset"], seq, nano))
    return 0


_ROW = "{:<24} {:<48} {:>6} {:>10} {:>12}  {}"


def run_prune(args: argparse.Namespace) -> int:
    if args.before is None:
        raise ArgumentsError("prune needs --before T: the time before which pages go")
    check_name(args.name)  # not "removed 0 page(s) of DIR/../x": nothing was pruned, say why
    now = time.time_ns()
    policy = Policy(max_age_ns=max(0, now - args.before), archive=args.archive)
    directory = os.path.abspath(existing_directory(args.directory))
    result, done = prune(resolve_home(args.home), directory, args.name, policy, now, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else ("archived" if args.archive else "removed")
    pages = result.remove if args.dry_run else done
    print(f"{verb} {len(pages)} page(s) of {directory}/{args.name}")
    for page in pages:
        print(f"  {page}")
    if result.kept_for:
        print(f"stopped: {result.kept_for}")
    return 0
