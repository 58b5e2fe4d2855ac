"""`mmipc ls`, `mmipc inspect` and `mmipc check`: looking inside journals on disk (read-only)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from .. import MsgType
from ..journal._files import check_name, list_pages
from ..journal._layout import FRAME_HEADER_SIZE, FrameInfo
from ..tools import check_journal, last_written_page, list_journals, open_page, page_frames, summarize
from ._args import add_journals, add_json, existing_directory, natural
from ._common import Bar, add_struct, decode_payload, format_time, payload_line, to_json
from ._errors import CommandError


def add_commands(commands: Any) -> None:
    ls = commands.add_parser(
        "ls",
        help="list the journals in a directory",
        description="List the journals in DIR with pages, bytes on disk, frames, "
        "and first and last frame times (walks every frame).",
    )
    ls.add_argument("directory", metavar="DIR")
    add_json(ls, "print a JSON list on stdout (and nothing else there)")
    ls.set_defaults(run=run_ls)
    inspect = commands.add_parser(
        "inspect",
        help="show page and frame headers",
        description="Show the page headers of a journal, and the frame headers "
        "of one page (the last one written, or --page N).",
    )
    add_journals(inspect, one=True)
    inspect.add_argument("--page", type=natural, help="the page whose frames to show (default: the last)")
    inspect.add_argument("--limit", type=natural, default=20, help="frames to show (default 20)")
    add_struct(inspect)
    add_json(inspect)
    inspect.set_defaults(run=run_inspect)
    check = commands.add_parser(
        "check",
        help="verify a journal end to end",
        description="Verify headers, lengths, ordering, end-of-page markers and "
        "time indexes. Exit 0 if intact, else 1 with the first problem: file, offset, "
        "what is wrong.",
    )
    add_journals(check, one=True)
    add_json(check)
    check.set_defaults(run=run_check)


def run_ls(args: argparse.Namespace) -> int:
    names = list_journals(existing_directory(args.directory))
    if not args.json:
        print(f"{'JOURNAL':<32} {'PAGES':>6} {'BYTES':>14} {'FRAMES':>12}  {'FIRST FRAME':<29}  LAST FRAME")
    rows = []
    for name in names:
        bar = Bar(f"ls {name}")
        s = summarize(args.directory, name, bar)
        bar.close()
        rows.append(asdict(s))
        if not args.json:
            first = format_time(s.first_nano) if s.frames else "-"
            last = format_time(s.last_nano) if s.frames else "-"
            print(f"{name:<32} {s.pages:>6} {s.bytes:>14,} {s.frames:>12,}  {first:<29}  {last}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def journal_pages(directory: str, name: str) -> list[int]:
    """The journal's page numbers; `InvalidNameError` for a name no journal can have (as every
    other command says it), a `CommandError` if the directory or the journal is not there."""
    pages = list_pages(existing_directory(directory), check_name(name))
    if not pages:
        raise CommandError(
            f"no journal {name} in {directory} (no page files; `mmipc ls {directory}` lists them)"
        )
    return pages


def run_inspect(args: argparse.Namespace) -> int:
    pages = journal_pages(args.directory, args.name)
    chosen = args.page if args.page is not None else last_written_page(args.directory, args.name)
    if chosen not in pages:
        raise CommandError(
            f"journal {args.name} in {args.directory} has pages {pages[0]}..{pages[-1]}: no page {chosen}"
        )
    headers = [_page_row(args.directory, args.name, number) for number in pages]
    page = open_page(args.directory, args.name, chosen)
    try:
        first = zip(range(args.limit + 1), page.frames(), strict=False)
        frames = [_frame_row(args, page, info) for _, info in first]
        path = page.path
    finally:
        page.release()
    if args.json:
        shown = {"directory": args.directory, "name": args.name, "pages": headers, "page": chosen}
        print(to_json({**shown, "path": path, "frames": frames[: args.limit]}, indent=2))
        return 0
    _print_pages(headers, chosen, path, frames, args.limit)
    return 0


def _print_pages(
    headers: list[dict[str, Any]], chosen: int, path: str, frames: list[dict[str, Any]], limit: int
) -> None:
    print(f"{'PAGE':>6} {'SIZE':>12} {'FRAMES':>9} {'FIRST FRAME':<29}  {'LAST FRAME':<29}  CREATED")
    for h in headers:
        print(
            f"{h['page_no']:>6} {h['page_size']:>12,} {h['frames']:>9,} {_time(h['first_nano']):<29}  "
            f"{_time(h['last_nano']):<29}  {_time(h['created_nano'])}"
        )
    print(f"\nframes of page {chosen} ({path}):")
    print(f"{'OFFSET':>10} {'LENGTH':>8} {'TYPE':>10} {'SOURCE':>8}  {'TIME':<29}  PAYLOAD")
    for info in frames[:limit]:
        kind = "PAGE_END" if info["msg_type"] == MsgType.PAGE_END else str(info["msg_type"])
        when = format_time(info["nano"])
        text = _payload_text(info["payload"])
        print(f"{info['offset']:>10} {info['length']:>8} {kind:>10} {info['source']:>8}  {when:<29}  {text}")
    if len(frames) > limit:
        print("...")


def _frame_row(args: argparse.Namespace, page: Any, info: FrameInfo) -> dict[str, Any]:
    """A frame's header, and its payload: decoded with the layout the journal declares for its type
    (or --struct), else as hex (None for the end-of-page marker)."""
    row: dict[str, Any] = info._asdict()
    if info.msg_type == MsgType.PAGE_END:
        row["payload"] = None
        return row
    start = info.offset + FRAME_HEADER_SIZE
    data = bytes(page.view[start : start + info.payload_len])
    decoded = decode_payload(args.directory, args.name, info.msg_type, data, args.struct)
    row["payload"] = decoded if decoded is not None else data.hex()
    return row


def _payload_text(payload: dict[str, Any] | str | None) -> str:
    if payload is None:
        return ""
    if isinstance(payload, dict):
        return payload_line(payload)
    return " ".join(payload[i : i + 2] for i in range(0, min(len(payload), 32), 2)) + (
        " ..." if len(payload) > 32 else ""
    )


def _page_row(directory: str, name: str, number: int) -> dict[str, Any]:
    """A page's header, with what the page holds: its frame count, and its first and last frame's
    times read from the frames (the header has them only once the page is closed)."""
    page = open_page(directory, name, number)
    try:
        h = page.header
        frames = first = last = 0
        for info in page_frames(page):
            frames += 1
            first = first or info.nano
            last = info.nano
    finally:
        page.release()
    return {
        "page_no": h.page_no,
        "page_size": h.page_size,
        "version": h.version,
        "frames": frames,
        "first_nano": h.first_nano or first,
        "last_nano": h.last_nano or last,
        "created_nano": h.created_nano,
    }


def run_check(args: argparse.Namespace) -> int:
    journal_pages(args.directory, args.name)
    bar = Bar(f"check {args.name}")
    result = check_journal(args.directory, args.name, bar)
    bar.close()
    if args.json:
        problem = asdict(result.problem) if result.problem is not None else None
        record = {"directory": args.directory, "name": args.name, "ok": result.ok}
        print(json.dumps({**record, "pages": result.pages, "frames": result.frames, "problem": problem}))
    elif result.problem is not None:
        print(f"corrupt: {result.problem}")
        print(f"checked {result.pages} page(s) and {result.frames} frame(s) before it")
    else:
        print(f"ok: {args.name} in {args.directory}: {result.pages} page(s), {result.frames} frame(s) intact")
    return 0 if result.ok else 1


def _time(nano: int) -> str:
    return format_time(nano) if nano else "-"
