"""`mmipc write` and `mmipc read`: the seed's market-data writer and latency-printing reader."""

from __future__ import annotations

import argparse
import json
import os
import random
import stat
import struct
import sys
import threading
import time
from typing import Any

from .. import Reader, Writer
from .._errors import UsageError
from ..ctp import LAYOUTS
from ..journal._cursor import Start
from ..journal._files import list_pages
from ..journal._layout import MAX_MSG_TYPE
from ..journal._schema import MAX_SCHEMA_BYTES, Field, Scalar, Struct, struct_from_json, to_struct
from ._args import (
    add_cpu,
    add_home,
    add_journals,
    add_wait,
    count,
    existing_directory,
    journals,
    pin,
    rate,
    seconds,
    service_of,
    time_arg,
)
from ._common import MSG_DEPTH_MARKET_DATA, MSG_END, add_struct, decode_payload, payload_line
from ._errors import ArgumentsError, CommandError
from ._stats import Latencies, Tally

COUNT = struct.Struct("<Q")
END_LAYOUT = Struct("DemoEnd", COUNT.size, (Field("count", 0, Scalar("u8")),))  # the end frame's payload
INSTRUMENTS = [(b"rb2601", 3700.0), (b"au2602", 612.5), (b"cu2601", 78250.0), (b"IF2612", 3950.2)]


def add_commands(commands: Any) -> None:
    write = commands.add_parser(
        "write",
        help="write CTP market-data frames, like the seed's mpcwriter",
        description="Write CTP depth-market-data frames to journal NAME of DIR at a set rate, then an "
        "end-of-demo frame carrying the count.",
    )
    add_journals(write, one=True)
    write.add_argument("--count", type=count, default=101, help="frames to write (default 101)")
    write.add_argument("--rate", type=rate, default=8.0, help="frames per second, 0 = flat out (default 8)")
    write.add_argument("--struct", choices=sorted(LAYOUTS), default="ctp", help="CTP layout (default ctp)")
    write.add_argument(
        "--schema",
        type=schema_arg,
        action="append",
        default=[],
        metavar="TYPE=LAYOUT",
        help="declare the payload layout of msg_type TYPE in the journal's schema file, as "
        "Writer.create(schemas=) does: LAYOUT is a name from mmipc.ctp (ctp, ctp-v6.6.1, "
        "DepthMarketDataV636, ...) or a JSON file holding one layout in the schema file's format "
        "(docs/format.md). Repeatable. The frames mmipc write writes are declared anyway: "
        f"{MSG_DEPTH_MARKET_DATA} as --struct, {MSG_END} as the end frame's count",
    )
    add_cpu(write)
    add_home(write, standalone=True)
    write.add_argument(
        "--mode",
        type=octal_mode,
        default=0o600,
        help="permission of the files created, in octal: 600 (owner only, the default), 640 (the group "
        "may read), 644 (everyone may read)",
    )
    write.set_defaults(run=run_write)
    read = commands.add_parser(
        "read",
        help="print frames with their latency, like the seed's mpcreader",
        description="Follow journals and print each frame with its latency "
        "(now minus the frame's timestamp); stop at every journal's end-of-demo frame. "
        "Ctrl-C prints the summary so far.",
    )
    add_journals(read)
    read.add_argument(
        "--since",
        type=time_arg,
        help="start at this time, 0 for the beginning (default: live frames only, from now on; "
        "a --durable reader resumes after its last committed frame, or starts at the beginning)",
    )
    read.add_argument("--count", type=count, help="stop after this many frames")
    read.add_argument("--timeout", type=seconds, help="stop after this many idle seconds")
    read.add_argument("--name", help="reader name (default mmipc-read-PID)")
    read.add_argument(
        "--durable",
        action="store_true",
        help="keep this reader's position (needs --name): it commits what it printed every 0.5 s "
        "and on exit; restarted with the same --name it resumes after the last commit",
    )
    add_wait(read)
    read.add_argument("--quiet", action="store_true", help="no line per frame, only the summary")
    read.add_argument("--histogram", action="store_true", help="end with a latency histogram")
    add_struct(read)
    add_cpu(read)
    add_home(read, standalone=True)
    read.set_defaults(run=run_read)


def octal_mode(text: str) -> int:
    """`--mode 640`: a file mode in octal (Writer.create checks which modes are allowed)."""
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode such as 600 or 640") from None


def schema_arg(text: str) -> tuple[int, Struct]:
    """`--schema TYPE=LAYOUT`: a msg_type and the layout a name of mmipc.ctp or a JSON file gives."""
    kind, sep, layout = text.partition("=")
    if not sep or not kind.isdigit() or int(kind) > MAX_MSG_TYPE or not layout:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not TYPE=LAYOUT (a msg_type 0..{MAX_MSG_TYPE}, then a name from mmipc.ctp "
            "or a JSON layout file), like 101=ctp"
        )
    try:
        return int(kind), _layout_file(layout) if layout.endswith(".json") else to_struct(layout)
    except (UsageError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from None


def _layout_file(path: str) -> Struct:
    """One layout, as the schema file writes it under a msg_type ({"name", "size", "fields"})."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:  # a FIFO must not block
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise OSError(0, "not a regular file")
            raw = json.loads(file.read(MAX_SCHEMA_BYTES + 1))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    return struct_from_json(raw, path)


def _schemas(args: argparse.Namespace) -> dict[int, Struct]:
    """What `mmipc write` declares: the layouts of its own frames, and those of --schema."""
    own = {MSG_DEPTH_MARKET_DATA: to_struct(LAYOUTS[args.struct]), MSG_END: END_LAYOUT}
    declared = dict(own)
    for msg_type, layout in args.schema:
        if msg_type in own and layout != own[msg_type]:
            hint = " (choose it with --struct)" if msg_type == MSG_DEPTH_MARKET_DATA else ""
            raise ArgumentsError(
                f"--schema {msg_type}={layout.name}: mmipc write writes msg_type {msg_type} as "
                f"{own[msg_type].name}{hint}"
            )
        if declared.get(msg_type, layout) != layout:
            raise ArgumentsError(f"--schema declares msg_type {msg_type} twice, with different layouts")
        declared[msg_type] = layout
    return declared


def run_write(args: argparse.Namespace) -> int:
    pin(args.cpu)
    [(directory, name)] = journals(args)
    schemas = _schemas(args)
    field = LAYOUTS[args.struct]()
    field.TradingDay, field.ExchangeID = time.strftime("%Y%m%d").encode(), b"SHFE"
    prices = [price for _, price in INSTRUMENTS]
    rng = random.Random(1)
    sent = 0
    try:
        with Writer.create(
            directory, name, service=service_of(args), mode=args.mode, schemas=dict(schemas)
        ) as writer:
            start = time.monotonic()
            for seq in range(args.count):
                if args.rate > 0:
                    _wait_until(start + seq / args.rate)
                i = seq % len(INSTRUMENTS)
                prices[i] = round(prices[i] * (1 + rng.gauss(0, 0.0005)), 1)
                _fill(field, INSTRUMENTS[i][0], prices[i], seq)
                writer.write(field, msg_type=MSG_DEPTH_MARKET_DATA)
                sent += 1
            writer.write(COUNT.pack(args.count), msg_type=MSG_END)
    finally:
        if sent:  # also after Ctrl-C: what was written so far
            print(f"wrote {sent} frames to {directory}/{name}", flush=True)
    return 0


def _fill(field: Any, instrument: bytes, price: float, seq: int) -> None:
    now = time.time()
    field.InstrumentID = instrument
    field.LastPrice, field.Volume = price, 10 * seq
    field.BidPrice1, field.BidVolume1 = round(price - 0.1, 1), 5 + seq % 7
    field.AskPrice1, field.AskVolume1 = round(price + 0.1, 1), 3 + seq % 5
    field.UpdateTime = time.strftime("%H:%M:%S", time.localtime(now)).encode()
    field.UpdateMillisec = int(now * 1000) % 1000


def _wait_until(deadline: float) -> None:
    left = deadline - time.monotonic()
    if left > 0.002:
        time.sleep(left - 0.001)
    while time.monotonic() < deadline:
        pass


def run_read(args: argparse.Namespace) -> int:
    pin(args.cpu)
    named = journals(args)
    for directory, _ in named:
        existing_directory(directory)
    if args.durable and not args.name:
        raise ArgumentsError("--durable needs --name: the name is what a restarted reader resumes")
    name = args.name or f"mmipc-read-{os.getpid()}"
    tally = Tally(Latencies(), from_start=args.since == 0)
    start: Start | None = "begin" if args.since == 0 else args.since
    if start is None and not args.durable:
        start = "end"  # live frames only; a durable reader resumes (start None)
    every = 0.5 if args.durable else None
    with Reader.create(name, service=service_of(args), durable=args.durable, commit_every=every) as reader:
        for directory, journal in named:
            reader.add_journal(directory, journal, start=start)
        print(f"reader {name} following {len(named)} journal(s)", flush=True)
        waiting = say_waiting("read", named)
        try:
            _follow(reader, args, tally, len(named))
        finally:
            waiting.cancel()
            print(tally.summary(), flush=True)
            if args.histogram:
                print(tally.latencies.histogram(), flush=True)
    never = [f"{j} in {d}" for d, j in named if not list_pages(d, j)]
    if never:
        raise CommandError(f"journal {', '.join(never)} never appeared (check the name, or start its writer)")
    return 1 if tally.lost() else 0


WAITING_GRACE = 1.0  # seconds a journal may take to appear before we say we wait (a writer starting)


def say_waiting(command: str, named: list[tuple[str, str]]) -> threading.Timer:
    """Say once, on stderr, which journals still have no page after WAITING_GRACE (a typo shows,
    and a writer that is just starting does not); cancel the returned timer when done."""

    def say() -> None:
        for directory, journal in named:
            if not list_pages(directory, journal):
                print(
                    f"mmipc {command}: journal {journal} in {directory} has no pages yet; "
                    "waiting for it to appear",
                    file=sys.stderr,
                    flush=True,
                )

    timer = threading.Timer(WAITING_GRACE, say)
    timer.daemon = True
    timer.start()
    return timer


def _follow(reader: Reader, args: argparse.Namespace, tally: Tally, journals: int) -> None:
    """Read until every journal sent its end frame, or --count frames, or --timeout idle seconds."""
    for frame in reader.frames(timeout=args.timeout, wait=args.wait):
        now = time.time_ns()
        if frame.msg_type == MSG_END:
            tally.end(frame, COUNT.unpack(frame.data)[0] if len(frame.data) == COUNT.size else None)
            if tally.ended == journals:
                return
            continue
        latency_us = (now - frame.nano) / 1000
        tally.add(frame, latency_us)
        if not args.quiet:
            print(_line(frame, latency_us, args.struct), flush=True)
        if args.count is not None and tally.latencies.count >= args.count:
            return


def _line(frame: Any, latency_us: float, struct: str | None) -> str:
    """A frame decoded with its journal's declared layout (or --struct), and its latency."""
    journal = frame.journal
    payload = decode_payload(journal.directory, journal.name, frame.msg_type, frame.data, struct)
    if payload is None and struct is None and frame.msg_type == MSG_DEPTH_MARKET_DATA:
        payload = _guess_ctp(frame.data)
    if payload is not None:
        return f"{payload_line(payload)}  latency {latency_us:9.1f} us"
    size = len(frame.data)
    return f"{journal.name:<12} type {frame.msg_type:<5} {size:>6} bytes  latency {latency_us:9.1f} us"


def _guess_ctp(data: memoryview) -> dict[str, Any] | None:
    """A tick of a journal written before journals declared their layouts, told by its size."""
    for name in ("ctp", "ctp-v6.6.1"):
        payload = decode_payload("", "", 0, data, name)
        if payload is not None:
            return payload
    return None
