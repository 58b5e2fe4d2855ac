"""The CTP market-data layouts are pinned field by field, and survive a trip through a journal."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mmipc import Reader, Writer
from mmipc.ctp import DepthMarketDataV636, DepthMarketDataV661, numpy_dtype, to_dict

# From shared/reference/ctp-depth-market-data.md (ThostFtdcUserApiStruct.h).
V636 = {
    "TradingDay": 0,
    "InstrumentID": 9,
    "ExchangeID": 40,
    "ExchangeInstID": 49,
    "LastPrice": 80,
    "PreSettlementPrice": 88,
    "PreClosePrice": 96,
    "PreOpenInterest": 104,
    "OpenPrice": 112,
    "HighestPrice": 120,
    "LowestPrice": 128,
    "Volume": 136,
    "Turnover": 144,
    "OpenInterest": 152,
    "ClosePrice": 160,
    "SettlementPrice": 168,
    "UpperLimitPrice": 176,
    "LowerLimitPrice": 184,
    "PreDelta": 192,
    "CurrDelta": 200,
    "UpdateTime": 208,
    "UpdateMillisec": 220,
    **{f"BidPrice{i}": 224 + 32 * (i - 1) for i in range(1, 6)},
    **{f"BidVolume{i}": 232 + 32 * (i - 1) for i in range(1, 6)},
    **{f"AskPrice{i}": 240 + 32 * (i - 1) for i in range(1, 6)},
    **{f"AskVolume{i}": 248 + 32 * (i - 1) for i in range(1, 6)},
    "AveragePrice": 384,
    "ActionDay": 392,
}
V661 = {
    **{k: v for k, v in V636.items() if k not in ("InstrumentID", "ExchangeInstID")},
    "reserve1": 9,
    "reserve2": 49,
    "InstrumentID": 401,
    "ExchangeInstID": 482,
    "BandingUpperPrice": 568,
    "BandingLowerPrice": 576,
}


@pytest.mark.parametrize(
    ("cls", "size", "offsets"), [(DepthMarketDataV636, 408, V636), (DepthMarketDataV661, 584, V661)]
)
def test_layout_is_pinned(cls: type[ctypes.Structure], size: int, offsets: dict[str, int]) -> None:
    assert ctypes.sizeof(cls) == size
    assert {field[0]: getattr(cls, field[0]).offset for field in cls._fields_} == offsets
    dtype = numpy_dtype(cls)
    assert dtype.itemsize == size and {n: dtype.fields[n][1] for n in dtype.names} == offsets


def test_a_ctp_frame_round_trips_through_a_journal(jdir: str) -> None:
    tick = DepthMarketDataV636(TradingDay=b"20261126", InstrumentID=b"rb2601", LastPrice=3712.0, Volume=42)
    tick.BidPrice1, tick.AskVolume5, tick.UpdateTime, tick.UpdateMillisec = 3711.0, 9, b"09:30:00", 500
    with Writer.create(jdir, "md") as writer:
        writer.write(tick, msg_type=101)
    with Reader.create("ctp-check") as reader:
        reader.add_journal(jdir, "md")
        frame = reader.read()
        assert frame is not None
        back = frame.as_struct(DepthMarketDataV636)
        assert bytes(back) == bytes(tick) and back.InstrumentID == b"rb2601" and back.AskVolume5 == 9
        record = np.frombuffer(frame.data, numpy_dtype())[0]  # zero-copy view of the page
        assert record["LastPrice"] == 3712.0 and record["InstrumentID"] == b"rb2601"
        assert to_dict(back)["UpdateTime"] == "09:30:00"
        with pytest.raises(ValueError, match="584"):
            frame.as_struct(DepthMarketDataV661)
