"""Rows (numpy, from _scan) to Arrow record batches, typed from the journal's schema.

* `nano` becomes timestamp[ns] without a copy; `journal` a dictionary over the journal names.
* A char field becomes a string: the bytes before its first NUL, as C reads it. Its offsets and data
  buffers are built with numpy, not a Python loop. Bytes that are not UTF-8 fall back to a per-value
  decode with replacement characters, so nothing is lost silently and nothing raises.
* A top-level char field is dictionary-encoded when its values repeat (at most one distinct value
  per `DICTIONARY_RATIO` rows in the first batch): instrument and exchange ids do, free text does
  not. The choice is made once, on the first batch, so that every batch has the same schema.
* A payload field named like a column mmipc adds (nano, journal, source) is the column
  `payload_NAME` (`_scan.payload_columns`), in numpy as in Arrow.
* Fixed arrays become fixed-size lists (nested for several dimensions), nested structs structs.
  Padding has no field in the schema, so it never becomes a column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..journal._schema import Char, Scalar, Struct, text_of
from ._scan import HEADER_COLUMNS, payload_columns

DICTIONARY_RATIO = 4
METADATA_KEY = b"mmipc"


class Converter:
    """Turns rows of one query into record batches that all share one schema."""

    def __init__(self, layout: Struct, names: Sequence[str], meta: dict[str, Any]) -> None:
        self.layout = layout
        self.fields = list(zip(payload_columns(layout), layout.fields, strict=True))
        self.names = pa.array(list(names), pa.string())
        self.meta = {METADATA_KEY: json.dumps(meta).encode()}
        self.dictionary: set[str] | None = None

    def batch(self, rows: Any) -> Any:
        if self.dictionary is None and len(rows):
            self.dictionary = {name for name, f in self.fields if _repeats(f.kind, f.shape, rows[name])}
        columns = [
            pa.array(rows["nano"], pa.timestamp("ns")),
            pa.DictionaryArray.from_arrays(pa.array(rows["journal"].astype(np.int32)), self.names),
            pa.array(rows["source"], pa.uint32()),
        ]
        names = list(HEADER_COLUMNS)
        for name, field in self.fields:
            column = to_arrow_column(rows[name], field.kind, field.shape)
            if self.dictionary and name in self.dictionary:
                column = column.dictionary_encode()
            columns.append(column)
            names.append(name)
        return pa.RecordBatch.from_arrays(columns, names=names).replace_schema_metadata(self.meta)


def _repeats(kind: Any, shape: tuple[int, ...], column: Any) -> bool:
    return isinstance(kind, Char) and not shape and len(np.unique(column)) * DICTIONARY_RATIO <= len(column)


def to_arrow_column(column: Any, kind: Scalar | Char | Struct, shape: tuple[int, ...]) -> Any:
    """One numpy column (rows, *shape) of `kind` as an Arrow array of len(rows)."""
    flat = column.reshape(-1)
    if isinstance(kind, Scalar):
        array = pa.array(np.ascontiguousarray(flat))
    elif isinstance(kind, Char):
        array = text_column(flat)
    else:
        parts = [to_arrow_column(flat[f.name], f.kind, f.shape) for f in kind.fields]
        array = pa.StructArray.from_arrays(parts, names=[f.name for f in kind.fields])
    for dim in reversed(shape):
        array = pa.FixedSizeListArray.from_arrays(array, dim)
    return array


def text_column(flat: Any) -> Any:
    """Fixed-width C strings (numpy 'S' values) as an Arrow string array, cut at the first NUL."""
    width = flat.dtype.itemsize
    raw = np.ascontiguousarray(flat).view(np.uint8).reshape(len(flat), width)
    nul = raw == 0
    lengths = np.where(nul.any(axis=1), nul.argmax(axis=1), width)
    offsets = np.zeros(len(flat) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = raw[np.arange(width) < lengths[:, None]]
    array = pa.StringArray.from_buffers(len(flat), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        array = pa.array([text_of(bytes(value)) for value in np.ascontiguousarray(flat)], pa.string())
    return array
