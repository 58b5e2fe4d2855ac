"""`mmipc write` and `mmipc read`: the seed's market-data writer and latency-printing reader."""

from __future__ import annotations

import argparse
import os
import random
import struct
import time
from typing import Any

from .. import DEFAULT_HOME, Reader, Writer
from ..ctp import LAYOUTS
from ._common import (
    MSG_DEPTH_MARKET_DATA,
    MSG_END,
    cpu_arg,
    journal_arg,
    parse_time,
    pin,
    service_arg,
)
from ._stats import Latencies

COUNT = struct.Struct("<Q")
INSTRUMENTS = [(b"rb2601", 3700.0), (b"au2602", 612.5), (b"cu2601", 78250.0), (b"IF2612", 3950.2)]


def add_commands(commands: Any) -> None:
    write = commands.add_parser(
        "write",
        help="write CTP market-data frames, like the seed's mpcwriter",
        description="Write CTP depth-market-data frames at a set rate, then an "
        "end-of-demo frame carrying the count.",
    )
    journal_arg(write)
    write.add_argument("--count", type=int, default=101, help="frames to write (default 101)")
    write.add_argument("--rate", type=float, default=8.0, help="frames per second, 0 = flat out (default 8)")
    write.add_argument("--struct", choices=sorted(LAYOUTS), default="ctp", help="CTP layout (default ctp)")
    cpu_arg(write)
    service_arg(write)
    write.set_defaults(run=run_write)
    read = commands.add_parser(
        "read",
        help="print frames with their latency, like the seed's mpcreader",
        description="Follow journals and print each frame with its latency "
        "(now minus the frame's timestamp); stop at every journal's end-of-demo frame.",
    )
    journal_arg(read)
    read.add_argument("--since", type=parse_time, help="start at this time (default: the beginning)")
    read.add_argument("--count", type=int, help="stop after this many frames")
    read.add_argument("--timeout", type=float, help="stop after this many idle seconds")
    read.add_argument("--name", help="reader name (default mmipc-read-PID)")
    read.add_argument("--spin", action="store_true", help="busy-poll for the lowest latency (uses a core)")
    read.add_argument("--quiet", action="store_true", help="no line per frame, only the summary")
    read.add_argument("--histogram", action="store_true", help="end with a latency histogram")
    cpu_arg(read)
    service_arg(read)
    read.set_defaults(run=run_read)


def run_write(args: argparse.Namespace) -> int:
    pin(args.cpu)
    [(directory, name)] = args.journal
    field = LAYOUTS[args.struct]()
    field.TradingDay, field.ExchangeID = time.strftime("%Y%m%d").encode(), b"SHFE"
    prices = [price for _, price in INSTRUMENTS]
    rng = random.Random(1)
    with Writer.create(directory, name, service=None if args.standalone else DEFAULT_HOME) as writer:
        start = time.monotonic()
        for seq in range(args.count):
            if args.rate > 0:
                _wait_until(start + seq / args.rate)
            i = seq % len(INSTRUMENTS)
            prices[i] = round(prices[i] * (1 + rng.gauss(0, 0.0005)), 1)
            _fill(field, INSTRUMENTS[i][0], prices[i], seq)
            writer.write(field, msg_type=MSG_DEPTH_MARKET_DATA)
        writer.write(COUNT.pack(args.count), msg_type=MSG_END)
    print(f"wrote {args.count} frames to {directory}/{name}", flush=True)
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
    name = args.name or f"mmipc-read-{os.getpid()}"
    reader = Reader.create(name, service=None if args.standalone else DEFAULT_HOME)
    for directory, journal in args.journal:
        reader.add_journal(directory, journal, start=args.since if args.since is not None else "begin")
    print(f"reader {name} following {len(args.journal)} journal(s)", flush=True)
    stats = Latencies()
    sent = _follow(reader, args, stats)
    print(stats.summary(sent), flush=True)
    if args.histogram:
        print(stats.histogram(), flush=True)
    reader.close()
    return 0 if sent is None or sent == stats.count else 1


def _follow(reader: Reader, args: argparse.Namespace, stats: Latencies) -> int | None:
    """Read until every journal sent its end frame (return how many frames they said they sent)."""
    ended: set[object] = set()
    sent = 0
    for frame in reader.frames(timeout=args.timeout, wait="spin" if args.spin else "backoff"):
        now = time.time_ns()
        if frame.msg_type == MSG_END:
            ended.add(frame.journal)
            sent += COUNT.unpack(frame.data)[0] if len(frame.data) == COUNT.size else 0
            if len(ended) == len(args.journal):
                return sent
            continue
        latency_us = (now - frame.nano) / 1000
        stats.add(latency_us)
        if not args.quiet:
            print(_line(frame, latency_us), flush=True)
        if args.count is not None and stats.count >= args.count:
            break
    return None


def _line(frame: Any, latency_us: float) -> str:
    if frame.msg_type == MSG_DEPTH_MARKET_DATA and len(frame.data) in (408, 584):
        cls = LAYOUTS["ctp"] if len(frame.data) == 408 else LAYOUTS["ctp-v6.6.1"]
        tick = frame.as_struct(cls)
        return f"{tick.InstrumentID.decode():<8} last {tick.LastPrice:>10.1f}  latency {latency_us:9.1f} us"
    size = len(frame.data)
    return f"{frame.journal.name:<12} type {frame.msg_type:<5} {size:>6} bytes  latency {latency_us:9.1f} us"
