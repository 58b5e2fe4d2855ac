"""What the commands share: time and frame rendering, a progress bar. (Flags: `_args`.)"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from datetime import datetime
from typing import Any

from .. import Frame
from ..ctp import LAYOUTS
from ..journal._schema import Struct, decode, decode_declared, to_struct

# Message types of the demo's frames (the seed's market-data writer and latency reader).
MSG_DEPTH_MARKET_DATA = 101
MSG_END = 199  # payload: the number of frames the writer sent, u64 little-endian


def format_time(nano: int) -> str:
    """Local time with nanoseconds, as every command prints a frame's time."""
    seconds, ns = divmod(nano, 1_000_000_000)
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") + f".{ns:09d}"


def render(frame: Frame, struct: str | None, as_json: bool) -> str:
    """One line for a frame: decoded with the layout its journal declares (or --struct), as a JSON
    object with --json, else hex."""
    payload = decode_payload(frame.journal.directory, frame.journal.name, frame.msg_type, frame.data, struct)
    if as_json:
        record = {
            "time": format_time(frame.nano),
            "nano": frame.nano,
            "journal": str(frame.journal),
            "msg_type": frame.msg_type,
            "source": frame.source,
            "size": len(frame.data),
            "payload": payload if payload is not None else bytes(frame.data).hex(),
        }
        return to_json(record)
    head = (
        f"{format_time(frame.nano)}  {frame.journal.name:<16} type={frame.msg_type:<5} src={frame.source:<4}"
    )
    if payload is not None:
        return f"{head} {payload_line(payload)}"
    data = bytes(frame.data[:32]).hex(" ")
    return f"{head} len={len(frame.data):<6} {data}{' ...' if len(frame.data) > 32 else ''}"


def to_json(value: Any, indent: int | None = None) -> str:
    """`value` as standard JSON: a float that is NaN or infinite (a price not set yet) is written as
    the string "NaN", "Infinity" or "-Infinity" (as protobuf's JSON does), not as the bare NaN that
    json.dumps writes and no strict parser (jq, Go, JavaScript) reads."""
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def decode_payload(
    directory: str, name: str, msg_type: int, data: bytes | memoryview, struct: str | None
) -> dict[str, Any] | None:
    """A payload as {field: value} (char fields as text, fixed arrays as lists, nested structs as
    dicts): with the CTP layout `struct` (--struct) if given, else with the layout journal `name`
    declares for `msg_type` (NAME.schema.json); None if that layout does not fit the payload."""
    if struct is None:
        return decode_declared(directory, name, msg_type, memoryview(data))
    layout = _ctp_layout(struct)
    if len(data) != layout.size:
        return None  # not this struct (another message type): shown as hex
    return decode(layout, data)


@functools.lru_cache(maxsize=8)
def _ctp_layout(struct: str) -> Struct:
    return to_struct(LAYOUTS[struct])


def add_struct(parser: argparse.ArgumentParser) -> None:
    """`--struct LAYOUT`: decode payloads as this CTP layout instead of the journal's declared ones."""
    parser.add_argument(
        "--struct",
        choices=sorted(LAYOUTS),
        help="decode payloads as this CTP layout (default: the layouts the journal declares)",
    )


def payload_line(payload: dict[str, Any]) -> str:
    """A decoded payload on one line: a tick's main fields, else the first fields."""
    return _ctp_line(payload) if _CTP_KEYS <= payload.keys() else _fields_line(payload)


# The fields `_ctp_line` shows: a declared layout that has them all is shown as a tick.
_CTP_KEYS = frozenset(
    "InstrumentID LastPrice Volume BidPrice1 BidVolume1 AskPrice1 AskVolume1 UpdateTime "
    "UpdateMillisec".split()
)


def _fields_line(fields: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in list(fields.items())[:8])


def _ctp_line(f: dict[str, Any]) -> str:
    return (
        f"{f['InstrumentID']:<8} last={f['LastPrice']:<10g} vol={f['Volume']:<8} "
        f"bid={f['BidPrice1']:g}x{f['BidVolume1']} ask={f['AskPrice1']:g}x{f['AskVolume1']} "
        f"{f['UpdateTime']}.{f['UpdateMillisec']:03d}"
    )


class Bar:
    """A progress bar on stderr when it is a terminal; silent in a pipe."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.enabled and total:
            filled = int(30 * done / total)
            sys.stderr.write(
                f"\r{self.label} [{'#' * filled}{' ' * (30 - filled)}] {100 * done // total:3d}%"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * (len(self.label) + 40) + "\r")
            sys.stderr.flush()
