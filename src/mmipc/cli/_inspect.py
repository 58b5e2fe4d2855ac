"""`mmipc ls`, `mmipc inspect` and `mmipc check`: looking inside journals on disk (read-only)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import MsgType
from .._files import list_pages
from ..tools import check_journal, last_written_page, list_journals, open_page, summarize
from ._common import Bar, format_time


def add_commands(commands: Any) -> None:
    ls = commands.add_parser(
        "ls",
        help="list the journals in a directory",
        description="List the journals in DIR with pages, bytes on disk, frames, "
        "and first and last frame times (walks every frame).",
    )
    ls.add_argument("directory", metavar="DIR")
    ls.set_defaults(run=run_ls)
    inspect = commands.add_parser(
        "inspect",
        help="show page and frame headers",
        description="Show the page headers of a journal, and the frame headers "
        "of one page (the last one written, or --page N).",
    )
    inspect.add_argument("directory", metavar="DIR")
    inspect.add_argument("name", metavar="NAME")
    inspect.add_argument("--page", type=int, help="the page whose frames to show (default: the last)")
    inspect.add_argument("--limit", type=int, default=20, help="frames to show (default 20)")
    inspect.set_defaults(run=run_inspect)
    check = commands.add_parser(
        "check",
        help="verify a journal end to end",
        description="Verify headers, lengths, ordering, end-of-page markers and "
        "time indexes. Exit 0 if intact, else 1 with the first problem: file, offset, "
        "what is wrong.",
    )
    check.add_argument("directory", metavar="DIR")
    check.add_argument("name", metavar="NAME")
    check.set_defaults(run=run_check)


def run_ls(args: argparse.Namespace) -> int:
    names = list_journals(args.directory)
    print(f"{'JOURNAL':<32} {'PAGES':>6} {'BYTES':>14} {'FRAMES':>12}  {'FIRST FRAME':<29}  LAST FRAME")
    for name in names:
        bar = Bar(f"ls {name}")
        s = summarize(args.directory, name, bar)
        bar.close()
        first = format_time(s.first_nano) if s.frames else "-"
        last = format_time(s.last_nano) if s.frames else "-"
        print(f"{name:<32} {s.pages:>6} {s.bytes:>14,} {s.frames:>12,}  {first:<29}  {last}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    pages = list_pages(args.directory, args.name)
    if not pages:
        print(f"mmipc: no journal {args.name} in {args.directory}", file=sys.stderr)
        return 1
    print(f"{'PAGE':>6} {'SIZE':>12} {'FIRST FRAME':<29}  {'LAST FRAME':<29}  CREATED")
    for number in pages:
        page = open_page(args.directory, args.name, number)
        h = page.header
        print(
            f"{h.page_no:>6} {h.page_size:>12,} {_time(h.first_nano):<29}  {_time(h.last_nano):<29}  "
            f"{_time(h.created_nano)}"
        )
        page.release()
    chosen = args.page if args.page is not None else last_written_page(args.directory, args.name)
    assert chosen is not None
    page = open_page(args.directory, args.name, chosen)
    print(f"\nframes of page {chosen} ({page.path}):")
    print(f"{'OFFSET':>10} {'LENGTH':>8} {'TYPE':>10} {'SOURCE':>8}  TIME")
    for shown, info in enumerate(page.frames()):
        if shown >= args.limit:
            print("...")
            break
        kind = "PAGE_END" if info.msg_type == MsgType.PAGE_END else str(info.msg_type)
        print(f"{info.offset:>10} {info.length:>8} {kind:>10} {info.source:>8}  {format_time(info.nano)}")
    page.release()
    return 0


def run_check(args: argparse.Namespace) -> int:
    bar = Bar(f"check {args.name}")
    result = check_journal(args.directory, args.name, bar)
    bar.close()
    if result.problem is not None:
        print(f"corrupt: {result.problem}")
        print(f"checked {result.pages} page(s) and {result.frames} frame(s) before it")
        return 1
    print(f"ok: {args.name} in {args.directory}: {result.pages} page(s), {result.frames} frame(s) intact")
    return 0


def _time(nano: int) -> str:
    return format_time(nano) if nano else "-"
