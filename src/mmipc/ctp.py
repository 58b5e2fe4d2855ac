"""CTP market data (`CThostFtdcDepthMarketDataField`) as ctypes Structures, for the demo and examples.

Two layouts, from the public CTP API header `ThostFtdcUserApiStruct.h`, natural alignment (x86-64):

* `DepthMarketDataV636` (CTP v6.3.6): 408 bytes, `InstrumentID` at 9.
* `DepthMarketDataV661` (CTP v6.6.1_P1): 584 bytes; offsets 9 and 49 become `reserve1` and
  `reserve2`, and `InstrumentID` (81 chars), `ExchangeInstID`, `BandingUpperPrice` and
  `BandingLowerPrice` are appended.

Write one with `writer.write(field)`. Read one back with `frame.as_struct(DepthMarketDataV636)`:
a frame's payload is a read-only view of the page and ctypes maps only writable memory, so this
copies the 408 or 584 bytes (the method's documentation says so). `numpy_dtype()` gives the same
layout as a numpy dtype, which maps the read-only view without a copy (`np.frombuffer`).
"""

from __future__ import annotations

import ctypes
from typing import Any

Fields = list[tuple[str, Any]]

_HEAD: Fields = [
    ("TradingDay", ctypes.c_char * 9),
    ("InstrumentID", ctypes.c_char * 31),
    ("ExchangeID", ctypes.c_char * 9),
    ("ExchangeInstID", ctypes.c_char * 31),
]
_PRICES: Fields = [
    ("LastPrice", ctypes.c_double),
    ("PreSettlementPrice", ctypes.c_double),
    ("PreClosePrice", ctypes.c_double),
    ("PreOpenInterest", ctypes.c_double),
    ("OpenPrice", ctypes.c_double),
    ("HighestPrice", ctypes.c_double),
    ("LowestPrice", ctypes.c_double),
    ("Volume", ctypes.c_int),
    ("Turnover", ctypes.c_double),
    ("OpenInterest", ctypes.c_double),
    ("ClosePrice", ctypes.c_double),
    ("SettlementPrice", ctypes.c_double),
    ("UpperLimitPrice", ctypes.c_double),
    ("LowerLimitPrice", ctypes.c_double),
    ("PreDelta", ctypes.c_double),
    ("CurrDelta", ctypes.c_double),
    ("UpdateTime", ctypes.c_char * 9),
    ("UpdateMillisec", ctypes.c_int),
]
_BOOK: Fields = [
    (f"{side}{what}{level}", kind)
    for level in range(1, 6)
    for side in ("Bid", "Ask")
    for what, kind in (("Price", ctypes.c_double), ("Volume", ctypes.c_int))
]
_TAIL: Fields = [("AveragePrice", ctypes.c_double), ("ActionDay", ctypes.c_char * 9)]


class DepthMarketDataV636(ctypes.Structure):
    """CThostFtdcDepthMarketDataField of CTP v6.3.6 (408 bytes)."""

    _fields_ = _HEAD + _PRICES + _BOOK + _TAIL


class DepthMarketDataV661(ctypes.Structure):
    """CThostFtdcDepthMarketDataField of CTP v6.6.1_P1 (584 bytes)."""

    _fields_ = (
        [
            (("reserve1" if n == "InstrumentID" else "reserve2" if n == "ExchangeInstID" else n), t)
            for n, t in _HEAD
        ]
        + _PRICES
        + _BOOK
        + _TAIL
        + [
            ("InstrumentID", ctypes.c_char * 81),
            ("ExchangeInstID", ctypes.c_char * 81),
            ("BandingUpperPrice", ctypes.c_double),
            ("BandingLowerPrice", ctypes.c_double),
        ]
    )


CThostFtdcDepthMarketDataField = DepthMarketDataV636
LAYOUTS: dict[str, type[ctypes.Structure]] = {"ctp": DepthMarketDataV636, "ctp-v6.6.1": DepthMarketDataV661}


def to_dict(field: ctypes.Structure) -> dict[str, Any]:
    """Field name to value, with char arrays decoded as text (for JSON output)."""
    out: dict[str, Any] = {}
    for name, *_ in field._fields_:
        value = getattr(field, name)
        out[name] = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return out


def numpy_dtype(cls: type[ctypes.Structure] = DepthMarketDataV636) -> Any:
    """The numpy dtype of the same layout (needs numpy); `np.frombuffer(frame.data, dtype)` is zero-copy."""
    import numpy as np

    names, formats, offsets = [], [], []
    for name, kind, *_ in cls._fields_:
        names.append(name)
        formats.append(f"S{ctypes.sizeof(kind)}" if issubclass(kind, ctypes.Array) else np.dtype(kind))
        offsets.append(getattr(cls, name).offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": ctypes.sizeof(cls)})
