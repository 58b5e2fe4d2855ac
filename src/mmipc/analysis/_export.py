"""`export`: journals to a Parquet, Arrow IPC, CSV or .npy file, in constant memory.

Rules:

* Streamed: one batch (a page, or at most `batch_frames` frames) is in memory at a time, whatever the
  size of the journals; the .npy header is written first with room for the final row count.
* Atomic: the output is written to a temporary file beside it and renamed over `path` only when
  complete, so a failure (a corrupt page, a full disk) never leaves a half file under the name asked
  for. An existing `path` is replaced only with `force=True` (`UsageError` otherwise), and only if it
  is a regular file. A path named as a page, lock, schema or bells file of a journal (any journal,
  in any directory) is refused, existing or not: taking it would drop that journal's frames.
* Private: the output (and its sidecar) is created `0600` whatever the umask, like the journals.
* Self-describing: the file records the directory, the journals, the msg_type, the time range asked
  for and the one exported, the frame count and the payload layout, as JSON under the key "mmipc":
  in the Arrow schema (of an Arrow IPC file, and of a Parquet file, whose footer holds it too), and
  for CSV and .npy (which have no room for it) in a sidecar file `PATH.meta.json`. The frame count
  and the first and last timestamps are counted before the rows are written (the schema comes
  first), on the query `pinned` to the journals' ends at the start, so they are the rows written.
* Arrow IPC files allow one dictionary per column for the whole file, so dictionary-encoded columns
  are written there as plain strings; CSV has no nested types, so structs become `parent.child`
  columns and fixed arrays `name[i]` columns.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import StorageError, UsageError
from ..journal._files import NAME_PATTERN, PAGE_SUFFIX
from ..journal._schema import SCHEMA_SUFFIX
from ._api import _arrow, metadata, rechunk
from ._scan import Query, count_rows, merged_rows, output_dtype, pinned, time_span

FORMATS = ("parquet", "arrow", "csv", "npy")
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".csv": "csv",
    ".npy": "npy",
}
DEFAULT_BATCH_FRAMES = 65_536
JOURNAL_FILE = re.compile(  # a journal's own files (docs/format.md): an export never takes their names
    rf"(?P<name>{NAME_PATTERN.pattern})(?P<kind>\.[0-9]{{8}}{re.escape(PAGE_SUFFIX)}|\.lock|\.bells|"
    rf"{re.escape(SCHEMA_SUFFIX)})"
)
JOURNAL_FILE_KINDS = {".lock": "lock", ".bells": "bells file", SCHEMA_SUFFIX: "schema file"}
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Exported:
    path: str
    frames: int
    first_nano: int
    last_nano: int


def pick_format(path: str, fmt: str | None) -> str:
    if fmt is None:
        fmt = SUFFIXES.get(os.path.splitext(path)[1].lower())
        if fmt is None:
            raise UsageError(
                f"cannot tell the format of {path} from its suffix: pass one of {', '.join(FORMATS)}"
            )
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def export(
    query: Query,
    path: str,
    fmt: str,
    *,
    force: bool = False,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    progress: Progress | None = None,
) -> Exported:
    """Write the rows of `query` to `path` in format `fmt` (see the module's rules)."""
    _check_layout(query, fmt)
    sidecar = path + ".meta.json" if fmt in ("csv", "npy") else None
    for target in (path, sidecar):
        if target is not None:
            _refuse_journal_file(target)  # existing or not: a page made ahead must not be taken
        if target is not None and os.path.lexists(target):
            if not force:
                raise UsageError(f"{target} exists: pass --force (force=True) to overwrite it")
            _refuse_special_file(target)
    query = pinned(query)  # the rows counted below are the rows written, also on a live journal
    span = time_span(query)
    query, counted = _counted(query)  # (and what it found of each page: not scanned again below)
    info = {**metadata(query), "journal_span": list(span), **counted}
    tracker = _Tracker(rechunk(merged_rows(query), batch_frames), span, progress)
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.tmp")
    try:
        _create_private(tmp)
        _WRITERS[fmt](query, tmp, tracker, info)
        done = {**info, **tracker.summary()}
        if sidecar is not None:
            _write_sidecar(sidecar, done)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Exported(path, tracker.frames, tracker.first, tracker.last)


def _counted(query: Query) -> tuple[Query, dict[str, int]]:
    query, frames, first, last = count_rows(query)
    return query, {"frames": frames, "first_nano": first, "last_nano": last}


def _check_layout(query: Query, fmt: str) -> None:
    """`UsageError` if format `fmt` cannot hold the layout: .npy cannot describe overlapping fields."""
    if fmt != "npy":
        return
    try:
        np.lib.format.dtype_to_descr(output_dtype(query.layout))
    except ValueError:
        raise UsageError(
            f"layout {query.layout.name} has fields that overlap, which .npy cannot describe: "
            "export to parquet, arrow or csv"
        ) from None


def _refuse_journal_file(target: str) -> None:
    """`UsageError` if `target` is named as a page, the lock, the schema or the bells file of any
    journal, in any directory: the export is renamed over its path, which would drop that file (a
    journal's page, and the frames in it) with `--force`, or take its place."""
    found = JOURNAL_FILE.fullmatch(os.path.basename(target))
    if found is not None:
        raise UsageError(
            f"{target} is a file of journal {found['name']} (by its name, its "
            f"{JOURNAL_FILE_KINDS.get(found['kind'], 'page file')}): an export never replaces a journal's "
            "files; choose another path"
        )


def _refuse_special_file(target: str) -> None:
    """`UsageError` unless `target` is a regular file: the export is renamed over it, and `--force` on
    /dev/null or /dev/stdout (a symlink) must not replace them."""
    mode = os.lstat(target).st_mode
    if not stat.S_ISREG(mode):
        kind = (
            "symbolic link" if stat.S_ISLNK(mode) else "directory" if stat.S_ISDIR(mode) else "special file"
        )
        raise UsageError(f"{target} is a {kind}: an export replaces regular files only; choose another path")


def _create_private(path: str) -> None:
    """Create `path` empty, owner-only whatever the umask, like the journals it is exported from (the
    format writers then open it by name and keep its mode); never through a planted symlink."""
    try:
        os.unlink(path)  # left by a killed export of the same pid (a symlink is removed, not followed)
    except FileNotFoundError:
        pass
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    os.chmod(path, 0o600)


class _Tracker:
    """Counts the rows streaming through and reports progress along the time span."""

    def __init__(self, arrays: Iterator[Any], span: tuple[int, int], progress: Progress | None) -> None:
        self.arrays, self.span, self.progress = arrays, span, progress
        self.frames = self.first = self.last = 0

    def __iter__(self) -> Iterator[Any]:
        for rows in self.arrays:
            nanos = rows["nano"].view("i8")
            self.first = self.first or int(nanos[0])
            self.last = int(nanos[-1])
            self.frames += len(rows)
            if self.progress is not None:
                self.progress(self.last - self.span[0], max(self.span[1] - self.span[0], 1))
            yield rows

    def summary(self) -> dict[str, Any]:
        return {"frames": self.frames, "first_nano": self.first, "last_nano": self.last}


def _write_parquet(query: Query, tmp: str, rows: _Tracker, info: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    converter = _arrow().Converter(query.layout, query.names, info)
    writer = None
    try:
        for array in rows:
            batch = converter.batch(array)
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema, compression="zstd")
            writer.write_batch(batch)
        if writer is None:
            empty = converter.batch(np.empty(0, output_dtype(query.layout)))
            writer = pq.ParquetWriter(tmp, empty.schema, compression="zstd")
        writer.add_key_value_metadata({"mmipc": json.dumps({**info, **rows.summary()})})
    finally:
        if writer is not None:
            writer.close()


def _write_arrow(query: Query, tmp: str, rows: _Tracker, info: dict[str, Any]) -> None:
    arrow = _arrow()
    pa = arrow.pa
    converter = arrow.Converter(query.layout, query.names, info)
    converter.dictionary = set()  # one dictionary per column per file: plain strings instead
    schema = converter.batch(np.empty(0, output_dtype(query.layout))).schema
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for array in rows:
            writer.write_batch(converter.batch(array))


def _write_csv(query: Query, tmp: str, rows: _Tracker, info: dict[str, Any]) -> None:
    import pyarrow.csv as csv

    converter = _arrow().Converter(query.layout, query.names, info)
    writer = None
    try:
        for array in rows:
            batch = _flat(converter.batch(array))
            if writer is None:
                writer = csv.CSVWriter(tmp, batch.schema)
            writer.write_batch(batch)
        if writer is None:
            writer = csv.CSVWriter(
                tmp, _flat(converter.batch(np.empty(0, output_dtype(query.layout)))).schema
            )
    finally:
        if writer is not None:
            writer.close()


def _flat(batch: Any) -> Any:
    """A batch with only flat columns: structs split into `parent.child`, fixed arrays into `name[i]`."""
    pa = _arrow().pa
    names: list[str] = []
    columns: list[Any] = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        _flatten_into(pa, name, column, names, columns)
    return pa.RecordBatch.from_arrays(columns, names=names)


def _flatten_into(pa: Any, name: str, column: Any, names: list[str], columns: list[Any]) -> None:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            _flatten_into(pa, f"{name}.{kind.field(i).name}", column.field(i), names, columns)
    elif pa.types.is_fixed_size_list(kind):
        values = column.flatten()
        for i in range(kind.list_size):
            _flatten_into(pa, f"{name}[{i}]", values[i :: kind.list_size], names, columns)
    else:
        names.append(name)
        columns.append(column)


def _write_npy(query: Query, tmp: str, rows: _Tracker, info: dict[str, Any]) -> None:
    dtype = output_dtype(query.layout)
    with open(tmp, "wb") as file:
        file.write(_npy_header(dtype, 10**18))  # room for any count; rewritten with the real one
        for array in rows:
            file.write(np.ascontiguousarray(array).tobytes())
        file.seek(0)
        file.write(_npy_header(dtype, rows.frames, len(_npy_header(dtype, 10**18))))


def _npy_header(dtype: Any, count: int, size: int | None = None) -> bytes:
    """A .npy header for `count` rows of `dtype`, padded with spaces to `size` bytes: version 2.0
    (Latin-1), or 3.0 (UTF-8) when a field name is not Latin-1 (a Chinese field name, say)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count,)})
    try:
        raw, version = text.encode("latin1"), b"\x02\x00"
    except UnicodeEncodeError:
        raw, version = text.encode("utf-8"), b"\x03\x00"
    total = size if size is not None else -(-(12 + len(raw) + 1) // 64) * 64
    raw = raw + b" " * (total - 12 - len(raw) - 1) + b"\n"
    return b"\x93NUMPY" + version + len(raw).to_bytes(4, "little") + raw


def _write_sidecar(path: str, info: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    _create_private(tmp)
    try:
        with open(tmp, "w") as file:
            json.dump({"mmipc": info}, file, indent=1)
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written sidecar is left on it
        os.unlink(tmp)
        raise


_WRITERS: dict[str, Callable[[Query, str, _Tracker, dict[str, Any]], None]] = {
    "parquet": _write_parquet,
    "arrow": _write_arrow,
    "csv": _write_csv,
    "npy": _write_npy,
}
