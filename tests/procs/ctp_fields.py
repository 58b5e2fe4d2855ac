"""Deterministic CTP market data for the analysis tests: every field of frame `seq` is a known value."""

from __future__ import annotations

import ctypes
from typing import Any

from mmipc.ctp import LAYOUTS

INSTRUMENTS = [b"rb2601", b"au2602", b"cu2601", b"IF2612"]
MD_MSG = 101
OTHER_MSG = 7


def tick(layout: str, seq: int) -> ctypes.Structure:
    """Frame `seq`: doubles, ints and char fields all derived from `seq` and the field's position."""
    field: Any = LAYOUTS[layout]()
    for i, (name, kind) in enumerate(field._fields_):
        if issubclass(kind, ctypes.Array):
            text = f"{name[:4]}{seq % 97}".encode()
            if name == "InstrumentID":
                text = INSTRUMENTS[seq % len(INSTRUMENTS)]
            setattr(field, name, text[: ctypes.sizeof(kind) - 1])
        elif kind is ctypes.c_double:
            setattr(field, name, seq * 1.25 + i / 8)
        else:
            setattr(field, name, seq * 7 + i)
    return field  # type: ignore[no-any-return]


def other(seq: int) -> bytes:
    """A frame of another msg_type and a varying size, to make a journal mixed."""
    return bytes([seq % 251]) * (seq * 13 % 90)
