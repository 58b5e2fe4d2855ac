"""What the commands share: time and frame rendering, a progress bar. (Flags: `_args`.)"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from .. import Frame
from .._schema import decode_declared
from ..ctp import LAYOUTS, to_dict

# Message types of the demo's frames (the seed's market-data writer and latency reader).
MSG_DEPTH_MARKET_DATA = 101
MSG_END = 199  # payload: the number of frames the writer sent, u64 little-endian


def format_time(nano: int) -> str:
    """Local time with nanoseconds, as every command prints a frame's time."""
    seconds, ns = divmod(nano, 1_000_000_000)
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") + f".{ns:09d}"


def render(frame: Frame, struct: str | None, as_json: bool) -> str:
    """One line for a frame: hex payload, or decoded with --struct, or a JSON object with --json."""
    payload: Any = _decode(frame, struct)
    if as_json:
        record = {
            "time": format_time(frame.nano),
            "nano": frame.nano,
            "journal": str(frame.journal),
            "msg_type": frame.msg_type,
            "source": frame.source,
            "size": len(frame.data),
            "payload": payload if isinstance(payload, dict) else bytes(frame.data).hex(),
        }
        return json.dumps(record)
    head = (
        f"{format_time(frame.nano)}  {frame.journal.name:<16} type={frame.msg_type:<5} src={frame.source:<4}"
    )
    if isinstance(payload, dict):
        return f"{head} {_ctp_line(payload) if _CTP_KEYS <= payload.keys() else _fields_line(payload)}"
    data = bytes(frame.data[:32]).hex(" ")
    return f"{head} len={len(frame.data):<6} {data}{' ...' if len(frame.data) > 32 else ''}"


def _decode(frame: Frame, struct: str | None) -> dict[str, Any] | None:
    if struct is None:  # the layout the journal declares (NAME.schema.json), if any
        return decode_declared(frame.journal.directory, frame.journal.name, frame.msg_type, frame.data)
    cls = LAYOUTS[struct]
    try:
        return to_dict(frame.as_struct(cls))
    except ValueError:
        return None  # not this struct (another message type): shown as hex


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
