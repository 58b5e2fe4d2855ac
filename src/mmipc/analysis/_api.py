"""The public functions of `mmipc.analysis`: journals to numpy, Arrow, pandas and polars.

Every function takes the same selection, checked once by `select` into a `Query`: a directory, one
journal name or several (merged in timestamp order as `Reader` merges them), and the keywords of
`Selection`: the msg_type to read (optional when the journals declare exactly one), `since`/`until`
in ns (both inclusive), and `schema` to override or supply the payload layout (a ctypes Structure, a
numpy dtype or a name from mmipc.ctp). A keyword that is not one of these is a `UsageError`, not
silently ignored. Each function reads what is committed when it is called, also on a live journal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from .._errors import UsageError
from ..journal._schema import Declaration, struct_to_json
from ._scan import Query, make_query, merged_rows, output_dtype, page_indexes, payload_columns, read_rows

if TYPE_CHECKING:
    from typing_extensions import Unpack

Names = str | Sequence[str]
Directory = str | os.PathLike[str]


class Selection(TypedDict, total=False):
    """The keywords every function of `mmipc.analysis` takes (see the module's docstring)."""

    msg_type: int | None
    since: int | None
    until: int | None
    schema: Declaration | None


SELECTION_KEYWORDS = ("msg_type", "since", "until", "schema")


def select(directory: Directory, names: Names, selection: Mapping[str, Any]) -> Query:
    """The checked `Query` for these arguments; `UsageError` naming what is wrong."""
    unknown = sorted(set(selection) - set(SELECTION_KEYWORDS))
    if unknown:
        raise UsageError(
            f"unknown keyword(s) {', '.join(unknown)}: the selection takes {', '.join(SELECTION_KEYWORDS)}"
        )
    get = selection.get
    return make_query(directory, names, get("msg_type"), get("since"), get("until"), get("schema"))


def to_numpy(directory: Directory, names: Names, **selection: Unpack[Selection]) -> Any:
    """A structured array: `nano` (datetime64[ns]), `journal` (index into `names`), `source`, then the
    payload fields (char fields as numpy bytes; a field named nano, journal or source is the column
    `payload_nano`, ...). Memory: the result plus one mapped page (see
    `mmipc.analysis._scan` for the exact bound)."""
    return read_all(select(directory, names, selection))


def read_all(query: Query) -> Any:
    """Every selected row: the frames are counted first, the result allocated once, then filled one
    page at a time."""
    if len(query.names) == 1:
        indexes = [index.compact() for index in page_indexes(query, query.names[0])]
        out = np.empty(sum(len(index.offsets) for index in indexes), output_dtype(query.layout))
        start = 0
        for index in indexes:
            read_rows(query.names[0], index, 0, out[start : start + len(index.offsets)])
            start += len(index.offsets)
        return out
    return _read_merged(query)


def _read_merged(query: Query) -> Any:
    """Several journals: each page's rows go where a stable sort of all the timestamps puts them."""
    indexes = [list(page_indexes(query, name)) for name in query.names]
    nanos = np.concatenate([index.nanos for pages in indexes for index in pages] or [np.empty(0, np.int64)])
    indexes = [[index.compact() for index in pages] for pages in indexes]
    where = np.empty(len(nanos), np.int64)
    where[np.argsort(nanos, kind="stable")] = np.arange(len(nanos))  # row i of the journals goes there
    del nanos
    out = np.empty(len(where), output_dtype(query.layout))
    start = 0
    for j, pages in enumerate(indexes):
        for index in pages:
            rows = np.empty(len(index.offsets), out.dtype)
            read_rows(query.names[j], index, j, rows)
            out[where[start : start + len(rows)]] = rows
            start += len(rows)
    return out


def iter_arrays(
    directory: Directory, names: Names, *, batch_frames: int | None = None, **selection: Unpack[Selection]
) -> Iterator[Any]:
    """`to_numpy`'s rows in merge order, one array per page (or per at most `batch_frames` rows)."""
    check_batch_frames(batch_frames)
    return rechunk(merged_rows(select(directory, names, selection)), batch_frames)


def check_batch_frames(batch_frames: int | None) -> None:
    if batch_frames is not None and (
        isinstance(batch_frames, bool) or not isinstance(batch_frames, int) or batch_frames < 1
    ):
        raise UsageError(f"batch_frames must be a positive int, not {batch_frames!r}")


def rechunk(arrays: Iterator[Any], batch_frames: int | None) -> Iterator[Any]:
    check_batch_frames(batch_frames)
    for rows in arrays:
        step = batch_frames or len(rows)
        for start in range(0, len(rows), step):
            yield rows[start : start + step]


def iter_batches(
    directory: Directory, names: Names, *, batch_frames: int | None = None, **selection: Unpack[Selection]
) -> Iterator[Any]:
    """`pyarrow.RecordBatch`es in merge order, one per page or per at most `batch_frames` frames:
    memory stays flat however large the journals."""
    check_batch_frames(batch_frames)
    query = select(directory, names, selection)
    return arrow_batches(query, rechunk(merged_rows(query), batch_frames))


def arrow_batches(query: Query, arrays: Iterator[Any]) -> Iterator[Any]:
    converter = _arrow().Converter(query.layout, query.names, metadata(query))
    for rows in arrays:
        yield converter.batch(rows)


def to_arrow(directory: Directory, names: Names, **selection: Unpack[Selection]) -> Any:
    """A `pyarrow.Table`: `nano` is timestamp[ns], `journal` a dictionary of the names, char arrays
    strings (dictionary-encoded when their values repeat), fixed arrays fixed-size lists, nested
    structs structs. The layout and the query are in the schema's metadata under b"mmipc"."""
    arrow = _arrow()
    query = select(directory, names, selection)
    converter = arrow.Converter(query.layout, query.names, metadata(query))
    batches = [converter.batch(rows) for rows in merged_rows(query)]
    if not batches:
        batches = [converter.batch(np.empty(0, output_dtype(query.layout)))]
    return arrow.pa.Table.from_batches(batches)


def to_pandas(directory: Directory, names: Names, **selection: Unpack[Selection]) -> Any:
    """A `pandas.DataFrame` (through Arrow): `nano` is datetime64[ns], repeated strings categorical."""
    return to_arrow(directory, names, **selection).to_pandas()


def to_polars(directory: Directory, names: Names, **selection: Unpack[Selection]) -> Any:
    """A `polars.DataFrame` (through Arrow): `nano` is Datetime("ns"), repeated strings Categorical.
    Needs polars, which the `analysis` extra does not install: `pip install 'mmipc[polars]'`."""
    try:
        import polars
    except ImportError:
        raise UsageError("to_polars needs polars: pip install 'mmipc[polars]'") from None
    return polars.from_arrow(to_arrow(directory, names, **selection))


def _arrow() -> Any:
    try:
        from . import _arrow
    except ImportError as exc:
        raise ImportError(f"Arrow output needs pyarrow ({exc}): pip install 'mmipc[analysis]'") from None
    return _arrow


def metadata(query: Query) -> dict[str, Any]:
    """What an exported file records about where its rows came from (and, under "renamed", the
    payload fields whose column is not their name: {field: column})."""
    columns = zip(query.layout.fields, payload_columns(query.layout), strict=True)
    renamed = {field.name: column for field, column in columns if field.name != column}
    return {
        "directory": query.directory,
        "journals": list(query.names),
        "msg_type": query.msg_type,
        "since": query.since,
        "until": query.until,
        "schema": struct_to_json(query.layout),
        **({"renamed": renamed} if renamed else {}),
    }
