"""Self-describing journals: the payload layout of each msg_type, stored beside the journal.

Rules:

* A writer may declare, per msg_type, the C struct its payloads follow: a ctypes Structure, a numpy
  structured dtype, or the name of a layout of `mmipc.ctp` ("ctp", "ctp-v6.6.1",
  "DepthMarketDataV636", ...). The declaration is stored in ``NAME.schema.json`` next to the pages
  (docs/format.md, "Schema file"), so any tool decodes the payloads without the writer's code.
* Only the journal's writer writes the file, while it holds the journal's lock, with
  `_files.write_atomically` (a temporary file, O_EXCL, the writer's mode, fsynced, renamed over the
  old one, the directory fsynced), so a reader sees the old file or the new one, never half of one.
  It is opened with O_NOFOLLOW on both sides.
* A declaration is forever: frames already on disk follow it. Declaring another layout for a
  msg_type that has one raises `UsageError` (use a new msg_type for a new layout); declaring the same
  one again is a no-op.
* Only this module knows the file's format. It is pure standard library: the numpy dtype is built
  on demand by `numpy_dtype`, which imports numpy then.

A layout is a `Struct`: its byte size and its fields. A field has a name, a byte offset, a type
(`Scalar`, `Char` text of a fixed width, or a nested `Struct`) and a shape (() or the dimensions of a
fixed array). Bytes no field covers are padding: no tool ever shows them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

from .._errors import CorruptJournalError, StorageError, UsageError
from ._files import DEFAULT_MODE, write_atomically
from ._layout import MAX_MSG_TYPE
from ._page import require_regular_file

SCHEMA_VERSION = 1
SCHEMA_SUFFIX = ".schema.json"
MAX_SCHEMA_BYTES = 4 * 1024 * 1024
MAX_DIMENSIONS = 32  # of a fixed array field: numpy's limit
MAX_NESTING = 32  # structs inside structs: deeper ones exhaust Python's stack in numpy and pyarrow

# Scalar type codes: numpy's little-endian type strings, and the struct codes that decode them.
SCALARS: dict[str, str] = {
    "bool": "?",
    "i1": "b",
    "u1": "B",
    "i2": "h",
    "u2": "H",
    "i4": "i",
    "u4": "I",
    "i8": "q",
    "u8": "Q",
    "f4": "f",
    "f8": "d",
}


@dataclass(frozen=True)
class Scalar:
    code: str  # a key of SCALARS

    @property
    def size(self) -> int:
        return struct.calcsize("<" + SCALARS[self.code])


@dataclass(frozen=True)
class Char:
    """A C char array, shown as the text before its first NUL."""

    size: int


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    kind: Scalar | Char | Struct
    shape: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    fields: tuple[Field, ...]


Declaration = Any  # a ctypes Structure class, a numpy dtype, a Struct or a name from mmipc.ctp


def schema_path(directory: str, name: str) -> str:
    return os.path.join(directory, name + SCHEMA_SUFFIX)


# -- building a Struct from what the user declares ------------------------------------------------


def to_struct(declared: Declaration) -> Struct:
    """The layout `declared` describes; `UsageError` if it is not one mmipc can store."""
    if isinstance(declared, Struct):
        return declared
    if isinstance(declared, str):
        return _from_ctp_name(declared)
    if isinstance(declared, type) and issubclass(declared, ctypes.Structure):
        return _from_ctypes(declared)
    if type(declared).__module__.startswith("numpy") and hasattr(declared, "fields"):
        return _from_dtype(declared, "record")
    raise UsageError(
        f"cannot use {declared!r} as a schema: give a ctypes Structure, a numpy structured dtype "
        "or the name of a layout in mmipc.ctp"
    )


def _from_ctp_name(name: str) -> Struct:
    from .. import ctp

    cls = ctp.LAYOUTS.get(name) or getattr(ctp, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ctypes.Structure)):
        known = ", ".join(sorted([*ctp.LAYOUTS, "DepthMarketDataV636", "DepthMarketDataV661"]))
        raise UsageError(f"no layout {name!r} in mmipc.ctp (known: {known})")
    return _from_ctypes(cls)


def _from_ctypes(cls: type[ctypes.Structure]) -> Struct:
    if issubclass(cls, ctypes.BigEndianStructure):
        raise UsageError(f"{cls.__name__} is big-endian; mmipc schemas are little-endian")
    fields = []
    for entry in cls._fields_:
        if len(entry) == 3:
            raise UsageError(f"{cls.__name__}.{entry[0]} is a bit field; schemas cannot describe those")
        name, ctype = entry
        kind, shape = _ctypes_kind(ctype, f"{cls.__name__}.{name}")
        fields.append(Field(name, getattr(cls, name).offset, kind, shape))
    return Struct(cls.__name__, ctypes.sizeof(cls), tuple(fields))


def _ctypes_kind(kind: Any, where: str) -> tuple[Scalar | Char | Struct, tuple[int, ...]]:
    shape: list[int] = []
    while isinstance(kind, type) and issubclass(kind, ctypes.Array):
        item: Any = kind._type_
        length: int = kind._length_  # type: ignore[assignment]  # typeshed types it as a property
        if item is ctypes.c_char:
            return Char(length), tuple(shape)
        shape.append(length)
        kind = item
    if kind is ctypes.c_char:
        return Char(1), tuple(shape)
    if isinstance(kind, type) and issubclass(kind, ctypes.Structure):
        return _from_ctypes(kind), tuple(shape)
    code = _ctypes_code(kind)
    if code is not None:
        return Scalar(code), tuple(shape)
    raise UsageError(f"{where} has type {getattr(kind, '__name__', kind)}, which schemas cannot describe")


def _ctypes_code(kind: Any) -> str | None:
    """The scalar code of a simple ctypes type (c_int, c_long, c_double, ...), None for others."""
    code = getattr(kind, "_type_", None)
    if not isinstance(code, str) or isinstance(kind, type) and issubclass(kind, ctypes.Array):
        return None
    if code in "bBhHiIlLqQ":
        return f"{'i' if code.islower() else 'u'}{ctypes.sizeof(kind)}"
    return {"f": "f4", "d": "f8", "?": "bool"}.get(code)


def _from_dtype(dtype: Any, name: str) -> Struct:
    if dtype.fields is None:
        raise UsageError(f"numpy dtype {dtype} has no named fields; give a structured dtype")
    fields = []
    for field_name in dtype.names:
        sub, offset = dtype.fields[field_name][:2]
        shape = tuple(int(d) for d in sub.shape)
        fields.append(Field(field_name, int(offset), _dtype_kind(sub.base, field_name), shape))
    return Struct(name, int(dtype.itemsize), tuple(fields))


def _dtype_kind(base: Any, where: str) -> Scalar | Char | Struct:
    if base.fields is not None:
        return _from_dtype(base, where)
    if base.kind == "S":
        return Char(int(base.itemsize))
    if base.byteorder == ">":
        raise UsageError(f"field {where} is big-endian; mmipc schemas are little-endian")
    code = "bool" if base.kind == "b" else f"{base.kind}{base.itemsize}"
    if code not in SCALARS:
        raise UsageError(f"field {where} has numpy type {base}, which schemas cannot describe")
    return Scalar(code)


# -- the file: JSON, written atomically -----------------------------------------------------------


def struct_to_json(layout: Struct) -> dict[str, Any]:
    return {"name": layout.name, "size": layout.size, "fields": [_field_to_json(f) for f in layout.fields]}


def _field_to_json(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"name": field.name, "offset": field.offset}
    if isinstance(field.kind, Scalar):
        out["type"] = field.kind.code
    elif isinstance(field.kind, Char):
        out["type"], out["size"] = "char", field.kind.size
    else:
        out["type"], out["struct"] = "struct", struct_to_json(field.kind)
    if field.shape:
        out["shape"] = list(field.shape)
    return out


def struct_from_json(raw: Any, where: str, depth: int = 0) -> Struct:
    """Decode and check one layout; `ValueError` naming the problem if it is not a valid one."""
    if not isinstance(raw, dict) or not isinstance(raw.get("fields"), list):
        raise ValueError(f"{where} is not a layout object with a list of fields")
    if depth > MAX_NESTING:
        raise ValueError(f"{where} has structs nested more than {MAX_NESTING} deep")
    size = raw.get("size")
    if not _is_int(size) or not 0 < size <= 1 << 30:
        raise ValueError(f"{where} has an invalid size {size!r}")
    layout = Struct(
        str(raw.get("name", "record")), size, tuple(_field_from_json(f, where, depth) for f in raw["fields"])
    )
    names = [field.name for field in layout.fields]
    if len(set(names)) != len(names) or "" in names:
        raise ValueError(f"{where} has an empty or repeated field name")
    for field in layout.fields:
        if field.offset < 0 or field.offset + _width(field) > size:
            raise ValueError(f"{where}: field {field.name} lies outside the {size}-byte struct")
    return layout


def _field_from_json(raw: Any, where: str, depth: int) -> Field:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not _is_int(raw.get("offset")):
        raise ValueError(f"{where} has a field without a name and an offset")
    name, kind = raw["name"], raw.get("type")
    if not name.isprintable():  # not UTF-8 ("\udcff"), or a newline that would forge output lines
        raise ValueError(f"{where}: field name {name!r} is not printable text")
    shape = raw.get("shape", [])
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMENSIONS
        or not all(_is_int(d) and d > 0 for d in shape)
    ):
        raise ValueError(f"{where}: field {name} has an invalid shape {shape!r}")
    parsed: Scalar | Char | Struct
    if isinstance(kind, str) and kind in SCALARS:  # a list or an object is no type (and unhashable)
        parsed = Scalar(kind)
    elif kind == "char" and _is_int(raw.get("size")) and raw["size"] > 0:
        parsed = Char(raw["size"])
    elif kind == "struct":
        parsed = struct_from_json(raw.get("struct"), f"{where}.{name}", depth + 1)
        if not parsed.fields:  # Arrow and Parquet have no column for it: declare it as padding
            raise ValueError(f"{where}: field {name} is a struct with no field")
    else:
        raise ValueError(f"{where}: field {name} has an unknown type {kind!r}")
    return Field(name, raw["offset"], parsed, tuple(shape))


def _is_int(value: object) -> TypeGuard[int]:
    """A JSON integer: `true` and `false` are not (Python takes them for 1 and 0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _width(field: Field) -> int:
    return field.kind.size * field.count


def load_schemas(directory: str, name: str, own: bool = False) -> dict[int, Struct]:
    """The layouts declared for journal `name`, by msg_type; {} if it declares none.

    A damaged file raises `CorruptJournalError` naming it; with `own` (the writer, which merges it
    into its own), a file of another user raises `StorageError`, as its lock and pages do."""
    path = schema_path(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptJournalError(
                path, 0, "the schema file is a symbolic link; mmipc does not follow it"
            ) from None
        raise StorageError(f"cannot open schema file {path}: {exc.strerror}") from exc
    try:
        require_regular_file(fd, path)
        owner = os.fstat(fd).st_uid
        if own and owner != os.geteuid():
            raise StorageError(
                f"refusing schema file {path}: it is owned by uid {owner}, not by this user "
                f"(uid {os.geteuid()}); someone else can write that directory: remove the file, and "
                "keep journal directories writable by their writer's user only"
            )
    except BaseException:
        os.close(fd)
        raise
    try:
        with os.fdopen(fd, "rb") as file:
            text = file.read(MAX_SCHEMA_BYTES + 1)
        if len(text) > MAX_SCHEMA_BYTES:
            raise ValueError(f"file is larger than {MAX_SCHEMA_BYTES} bytes")
        return _decode_file(json.loads(text))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CorruptJournalError(path, 0, f"bad schema file: {exc}") from None


def _decode_file(raw: Any) -> dict[int, Struct]:
    if (
        not isinstance(raw, dict)
        or raw.get("version") != SCHEMA_VERSION
        or not isinstance(raw.get("types"), dict)
    ):
        raise ValueError(f"not an mmipc schema file of version {SCHEMA_VERSION}")
    out = {}
    for key, layout in raw["types"].items():
        if not key.isdigit():
            raise ValueError(f"msg_type {key!r} is not a number")
        out[int(key)] = struct_from_json(layout, f"msg_type {key}")
    return out


def declare_schemas(
    directory: str, name: str, declared: dict[int, Declaration], mode: int = DEFAULT_MODE
) -> None:
    """Store the layouts `declared` for journal `name` (the caller holds its writer lock), in a file of
    the writer's `mode` (readers who may read its pages may read its schemas)."""
    wanted = {_check_msg_type(t): storable(to_struct(d)) for t, d in declared.items()}
    current = load_schemas(directory, name, own=True)
    for msg_type, layout in wanted.items():
        if msg_type in current and not same_layout(current[msg_type], layout):
            raise UsageError(
                f"journal {name} in {directory} already declares msg_type {msg_type} as "
                f"{current[msg_type].name}, not {layout.name}: frames on disk follow that layout; "
                "use a new msg_type for a new layout"
            )
    if all(t in current for t in wanted):
        return
    merged = {**current, **wanted}
    document = {
        "version": SCHEMA_VERSION,
        "types": {str(t): struct_to_json(merged[t]) for t in sorted(merged)},
    }
    _write_schema_file(schema_path(directory, name), json.dumps(document, indent=1).encode(), mode)


def same_layout(a: Struct, b: Struct) -> bool:
    """Whether `a` and `b` decode bytes the same way: their fields and sizes, not the names of their
    structs (a ctypes Structure and the numpy dtype of the same struct are one layout)."""
    return anonymous(a) == anonymous(b)


def anonymous(layout: Struct) -> Struct:
    """`layout` with every struct's name blank: what `same_layout` compares."""
    fields = tuple(
        dataclasses.replace(f, kind=anonymous(f.kind)) if isinstance(f.kind, Struct) else f
        for f in layout.fields
    )
    return Struct("", layout.size, fields)


def storable(layout: Struct) -> Struct:
    """`layout` if the schema file can hold it (it reads back as valid), else `UsageError`: what a
    writer declares, and what `mmipc.analysis` is given as `schema=`."""
    try:
        struct_from_json(struct_to_json(layout), layout.name)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"cannot use layout {layout.name}: {exc}") from None
    return layout


def _check_msg_type(msg_type: object) -> int:
    if isinstance(msg_type, bool) or not isinstance(msg_type, int) or not 0 <= msg_type <= MAX_MSG_TYPE:
        raise UsageError(f"schemas are keyed by msg_type, an int in 0..{MAX_MSG_TYPE}, not {msg_type!r}")
    return msg_type


def _write_schema_file(path: str, data: bytes, mode: int) -> None:
    try:
        write_atomically(path, data, mode=mode)
    except OSError as exc:
        raise StorageError(f"cannot write schema file {path}: {exc.strerror}") from exc


# -- decoding without numpy (for the CLI) and the numpy dtype (for mmipc.analysis) ----------------


def decode(layout: Struct, payload: bytes | memoryview) -> dict[str, Any]:
    """A payload as {field: value}: char fields as text, fixed arrays as lists, nested structs as dicts.

    A layout is compiled once into one `struct.Struct` for the whole payload (fields in offset order,
    padding skipped) and a builder of the dict, so a payload costs one unpack, not one per field;
    a layout whose fields overlap is decoded field by field (`_decode_at`, the reference)."""
    if len(payload) != layout.size:
        raise ValueError(f"payload is {len(payload)} bytes, {layout.name} is {layout.size}")
    compiled = _compiled(layout)
    if compiled is None:
        return _decode_at(layout, payload, 0)
    unpacker, build = compiled
    fields: dict[str, Any] = build(iter(unpacker.unpack_from(payload)))
    return fields


Builder = Callable[[Iterator[Any]], Any]
_COMPILED: dict[int, tuple[Struct, tuple[struct.Struct, Builder] | None]] = {}


def _compiled(layout: Struct) -> tuple[struct.Struct, Builder] | None:
    """The unpacker and builder of `layout`, made once per layout object (None if its fields overlap)."""
    entry = _COMPILED.get(id(layout))
    if entry is None or entry[0] is not layout:
        made = _fragment(layout)
        entry = layout, (struct.Struct("<" + made[0]), made[1]) if made is not None else None
        if len(_COMPILED) > 1024:
            _COMPILED.clear()
        _COMPILED[id(layout)] = entry
    return entry[1]


def _fragment(layout: Struct) -> tuple[str, Builder] | None:
    """The struct format of `layout` (exactly its size, padding as `x`) and the builder of its dict."""
    parts, fields, pos = [], [], 0
    for field in sorted(layout.fields, key=lambda f: f.offset):
        one = _kind_fragment(field.kind)
        if field.offset < pos or one is None:
            return None
        parts.append(f"{field.offset - pos}x" if field.offset > pos else "")
        parts.append(one[0] * field.count)
        fields.append((field.name, one[1], field.shape, field.count))
        pos = field.offset + field.kind.size * field.count
    parts.append(f"{layout.size - pos}x" if layout.size > pos else "")
    order = [field.name for field in layout.fields]  # the dict keeps the layout's order

    def build(values: Iterator[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, one, shape, count in fields:
            out[name] = _nest([one(values) for _ in range(count)], shape) if shape else one(values)
        return {name: out[name] for name in order}

    return "".join(parts), build


def _kind_fragment(kind: Scalar | Char | Struct) -> tuple[str, Builder] | None:
    if isinstance(kind, Scalar):
        return SCALARS[kind.code], next
    if isinstance(kind, Char):
        return f"{kind.size}s", lambda values: text_of(next(values))
    return _fragment(kind)


def _decode_at(layout: Struct, buf: bytes | memoryview, base: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in layout.fields:
        size = field.kind.size
        values = [_decode_one(field.kind, buf, base + field.offset + i * size) for i in range(field.count)]
        out[field.name] = _nest(values, field.shape) if field.shape else values[0]
    return out


def _decode_one(kind: Scalar | Char | Struct, buf: bytes | memoryview, at: int) -> Any:
    if isinstance(kind, Scalar):
        return struct.unpack_from("<" + SCALARS[kind.code], buf, at)[0]
    if isinstance(kind, Char):
        return text_of(bytes(buf[at : at + kind.size]))
    return _decode_at(kind, buf, at)


def text_of(raw: bytes) -> str:
    """A C char array as text: the bytes before the first NUL, UTF-8 (undecodable bytes replaced)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _nest(values: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return values
    step = len(values) // shape[0]
    return [_nest(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def numpy_dtype(layout: Struct) -> Any:
    """The numpy dtype of `layout` (needs numpy): same offsets and size, padding unnamed."""
    import numpy as np

    formats = [
        _numpy_format(f.kind) if not f.shape else (_numpy_format(f.kind), f.shape) for f in layout.fields
    ]
    return np.dtype(
        {
            "names": [f.name for f in layout.fields],
            "formats": formats,
            "offsets": [f.offset for f in layout.fields],
            "itemsize": layout.size,
        }
    )


def _numpy_format(kind: Scalar | Char | Struct) -> Any:
    if isinstance(kind, Scalar):
        return "?" if kind.code == "bool" else "<" + kind.code
    if isinstance(kind, Char):
        return f"S{kind.size}"
    return numpy_dtype(kind)


# (directory, name) -> (the schema file's identity when read, its layouts): for the CLI's decoding.
_DECLARED: dict[tuple[str, str], tuple[tuple[int, int, int] | None, dict[int, Struct]]] = {}


def declared_layout(directory: str, name: str, msg_type: int) -> Struct | None:
    """The layout journal `name` declares for `msg_type`, or None. A layout once found is kept (a
    declaration is forever); a msg_type not found makes it look at the file again if it changed, so
    a command that follows a journal sees what a writer declares later (a restarted writer, a new
    msg_type). A damaged file raises its `CorruptJournalError` once: until it changes again, it
    declares nothing beyond the layouts already found (so `tail` reports it once and goes on)."""
    cached = _DECLARED.get((directory, name))
    if cached is not None and msg_type in cached[1]:
        return cached[1][msg_type]
    identity = _file_identity(schema_path(directory, name))
    if cached is None or cached[0] != identity:
        known = cached[1] if cached is not None else {}
        _DECLARED[(directory, name)] = identity, known  # kept if the file is damaged: raised once
        cached = identity, {**known, **load_schemas(directory, name)} if identity is not None else known
        _DECLARED[(directory, name)] = cached
    return cached[1].get(msg_type)


def _file_identity(path: str) -> tuple[int, int, int] | None:
    """What changes when the schema file is replaced (its inode, time and size); None if absent."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot open schema file {path}: {exc.strerror}") from exc
    return info.st_ino, info.st_mtime_ns, info.st_size


def decode_declared(
    directory: str, name: str, msg_type: int, payload: bytes | memoryview
) -> dict[str, Any] | None:
    """The payload decoded with the layout its journal declares for `msg_type`, or None if it declares
    none or the size differs."""
    layout = declared_layout(directory, name, msg_type)
    if layout is None or len(payload) != layout.size:
        return None
    return decode(layout, payload)
