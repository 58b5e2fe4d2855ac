"""The public functions of `mmipc.analysis`: journals to numpy, Arrow, pandas and polars.

Every function takes the same selection: a directory, one journal name or several (merged in
timestamp order as `Reader` merges them), the msg_type to read (optional when the journals declare
exactly one), `since`/`until` in ns (both inclusive), and `schema` to override or supply the payload
layout (a ctypes Structure, a numpy dtype or a name from mmipc.ctp). Each reads what is committed
when it is called, also on a live journal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._errors import UsageError
from .._schema import Declaration, struct_to_json
from ._scan import Query, make_query, merged_rows, output_dtype, page_indexes, read_rows

Names = str | Sequence[str]
Directory = str | os.PathLike[str]


def to_numpy(
    directory: Directory,
    names: Names,
    *,
    msg_type: int | None = None,
    since: int | None = None,
    until: int | None = None,
    schema: Declaration | None = None,
) -> Any:
    """A structured array: `nano` (datetime64[ns]), `journal` (index into `names`), `source`, then the
    payload fields (char fields as numpy bytes). Memory: the result plus one page and a 16-byte index
    entry per selected frame."""
    query = make_query(directory, names, msg_type, since, until, schema)
    return read_all(query)


def read_all(query: Query) -> Any:
    indexes = [list(page_indexes(query, name)) for name in query.names]
    sizes = [len(index.offsets) for pages in indexes for index in pages]
    out = np.empty(sum(sizes), output_dtype(query.layout))
    if len(query.names) == 1:
        start = 0
        for index in indexes[0]:
            read_rows(query, query.names[0], index, 0, out[start : start + len(index.offsets)])
            start += len(index.offsets)
        return out
    nanos = np.concatenate([index.nanos for pages in indexes for index in pages] or [np.empty(0, np.int64)])
    where = np.empty(len(nanos), np.int64)
    where[np.argsort(nanos, kind="stable")] = np.arange(len(nanos))  # row i of the journals goes there
    start = 0
    for j, pages in enumerate(indexes):
        for index in pages:
            rows = np.empty(len(index.offsets), out.dtype)
            read_rows(query, query.names[j], index, j, rows)
            out[where[start : start + len(rows)]] = rows
            start += len(rows)
    return out


def iter_arrays(
    directory: Directory,
    names: Names,
    *,
    msg_type: int | None = None,
    since: int | None = None,
    until: int | None = None,
    schema: Declaration | None = None,
    batch_frames: int | None = None,
) -> Iterator[Any]:
    """`to_numpy`'s rows in merge order, one array per page (or per at most `batch_frames` rows)."""
    query = make_query(directory, names, msg_type, since, until, schema)
    return rechunk(merged_rows(query), batch_frames)


def rechunk(arrays: Iterator[Any], batch_frames: int | None) -> Iterator[Any]:
    if batch_frames is not None and (isinstance(batch_frames, bool) or batch_frames < 1):
        raise UsageError(f"batch_frames must be a positive int, not {batch_frames!r}")
    for rows in arrays:
        step = batch_frames or len(rows)
        for start in range(0, len(rows), step):
            yield rows[start : start + step]


def iter_batches(
    directory: Directory,
    names: Names,
    *,
    msg_type: int | None = None,
    since: int | None = None,
    until: int | None = None,
    schema: Declaration | None = None,
    batch_frames: int | None = None,
) -> Iterator[Any]:
    """`pyarrow.RecordBatch`es in merge order, one per page or per at most `batch_frames` frames:
    memory stays flat however large the journals."""
    query = make_query(directory, names, msg_type, since, until, schema)
    return arrow_batches(query, rechunk(merged_rows(query), batch_frames))


def arrow_batches(query: Query, arrays: Iterator[Any]) -> Iterator[Any]:
    converter = _arrow().Converter(query.layout, query.names, metadata(query))
    for rows in arrays:
        yield converter.batch(rows)


def to_arrow(
    directory: Directory,
    names: Names,
    *,
    msg_type: int | None = None,
    since: int | None = None,
    until: int | None = None,
    schema: Declaration | None = None,
) -> Any:
    """A `pyarrow.Table`: `nano` is timestamp[ns], `journal` a dictionary of the names, char arrays
    strings (dictionary-encoded when their values repeat), fixed arrays fixed-size lists, nested
    structs structs. The layout and the query are in the schema's metadata under b"mmipc"."""
    arrow = _arrow()
    query = make_query(directory, names, msg_type, since, until, schema)
    converter = arrow.Converter(query.layout, query.names, metadata(query))
    batches = [converter.batch(rows) for rows in merged_rows(query)]
    if not batches:
        batches = [converter.batch(np.empty(0, output_dtype(query.layout)))]
    return arrow.pa.Table.from_batches(batches)


def to_pandas(
    directory: Directory,
    names: Names,
    *,
    msg_type: int | None = None,
    since: int | None = None,
    until: int | None = None,
    schema: Declaration | None = None,
) -> Any:
    """A `pandas.DataFrame` (through Arrow): `nano` is datetime64[ns], repeated strings categorical."""
    table = to_arrow(directory, names, msg_type=msg_type, since=since, until=until, schema=schema)
    return table.to_pandas()


def to_polars(
    directory: Directory,
    names: Names,
    *,
    msg_type: int | None = None,
    since: int | None = None,
    until: int | None = None,
    schema: Declaration | None = None,
) -> Any:
    """A `polars.DataFrame` (through Arrow); needs polars, which the extra does not install."""
    try:
        import polars
    except ImportError:
        raise UsageError("to_polars needs polars: pip install polars") from None
    table = to_arrow(directory, names, msg_type=msg_type, since=since, until=until, schema=schema)
    return polars.from_arrow(table)


def _arrow() -> Any:
    try:
        from . import _arrow
    except ImportError as exc:
        raise ImportError(f"Arrow output needs pyarrow ({exc}): pip install 'mmipc[analysis]'") from None
    return _arrow


def metadata(query: Query) -> dict[str, Any]:
    """What an exported file records about where its rows came from."""
    return {
        "directory": query.directory,
        "journals": list(query.names),
        "msg_type": query.msg_type,
        "since": query.since,
        "until": query.until,
        "schema": struct_to_json(query.layout),
    }


def metadata_json(query: Query, **extra: Any) -> str:
    return json.dumps({**metadata(query), **extra})
