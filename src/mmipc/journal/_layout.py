"""The on-disk format of an mmipc journal, written down once (docs/format.md says the same in prose).

All integers are little-endian. A journal is a sequence of page files; each page is a 4096-byte page
header followed by 8-byte-aligned frames. Pages are written in format version 2; version 1 pages
(bytes 120..127 of the page header and 24..31 of each frame header reserved, zero) stay readable.

Page header (PAGE_HEADER_SIZE = 4096 bytes)::

     0        8        10       12       16               24               32
     +--------+--------+--------+--------+----------------+----------------+
     | magic  |version |hdr_size| flags  |   page_size    |    page_no     |
     | 8s     | u16    | u16    | u32    |   u64          |    u64         |
     +--------+--------+--------+--------+----------------+----------------+
    32                40               48               56                120              128
     +----------------+----------------+----------------+-----------------+----------------+
     |  first_nano    |   last_nano    |  created_nano  | name (64s, NUL  |   first_seq    |
     |  i64           |   i64          |  i64           | padded ASCII)   |   u64 (v2)     |
     +----------------+----------------+----------------+-----------------+----------------+
    128 .. 256   reserved, zero
    256 .. 4096  time index: INDEX_SLOTS u32 frame offsets, 0 = not filled yet
    flags (v2): bit 0 CHECKSUMS = every data frame of the page carries the CRC-32 of its payload.

Frame header (FRAME_HEADER_SIZE = 32 bytes, at an 8-byte-aligned offset)::

     0        4        8                16       20       24       28       32
     +--------+--------+----------------+--------+--------+--------+--------+
     | length |msg_type|      nano      | source |pay_len |  seq   |checksum|
     | u32    | u32    |      i64       | u32    | u32    | u32 v2 | u32 v2 |
     +--------+--------+----------------+--------+--------+--------+--------+
     `length` is the commit word: FRAME_HEADER_SIZE + payload length, 0 while uncommitted.
     The payload follows at +32; the next frame starts at align8(offset + length).
     `seq` is the low 32 bits of the frame's per-journal sequence number; the full number is
     first_seq + ((seq - first_seq) mod 2**32). `checksum` is zlib.crc32(payload) on a CHECKSUMS
     page, else 0. Both are 0 in the end-of-page marker and in version 1 frames.

Only this module knows these offsets; everything else goes through its structs and helpers. The
decoders here work on buffers only and raise `CorruptJournalError`, never `struct.error`.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from enum import IntEnum, IntFlag
from typing import NamedTuple

from .._errors import CorruptJournalError, UsageError

Buffer = bytes | bytearray | memoryview | mmap.mmap

MAGIC = b"MMIPCJNL"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SEQ_MASK = 0xFFFF_FFFF
PAGE_HEADER_SIZE = 4096
FRAME_HEADER_SIZE = 32
FRAME_ALIGN = 8
INDEX_OFFSET = 256
INDEX_SLOTS = (PAGE_HEADER_SIZE - INDEX_OFFSET) // 4
NAME_FIELD_SIZE = 64

KIB = 1024
MIB = 1024 * KIB
MIN_PAGE_SIZE = 64 * KIB
MAX_PAGE_SIZE = 1024 * MIB
DEFAULT_PAGE_SIZE = 32 * MIB
PAGE_SIZE_MULTIPLE = 4096

# A page must always keep room for its end-of-page marker after the last data frame.
PAGE_END_RESERVE = FRAME_HEADER_SIZE
MAX_MSG_TYPE = 0xFFFE_FFFF
MAX_SOURCE = 0xFFFF_FFFF


class MsgType(IntEnum):
    """Message types reserved by mmipc; user types are 0 to MAX_MSG_TYPE.

    Example: ``frame.msg_type == MsgType.PAGE_END  # only in raw page walks; readers skip it``
    """

    PAGE_END = 0xFFFF_FFFF


class PageFlags(IntFlag):
    """Bits of a version 2 page header's `flags`."""

    CHECKSUMS = 1


KNOWN_FLAGS = CHECKSUMS_BIT = int(PageFlags.CHECKSUMS)  # plain ints: IntFlag arithmetic is slow


# (field, offset, struct code) tables; the structs below are built from them and docs/format.md
# lists the same rows (tests/test_layout.py checks both).
PAGE_HEADER_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("magic", 0, "8s"),
    ("version", 8, "H"),
    ("header_size", 10, "H"),
    ("flags", 12, "I"),
    ("page_size", 16, "Q"),
    ("page_no", 24, "Q"),
    ("first_nano", 32, "q"),
    ("last_nano", 40, "q"),
    ("created_nano", 48, "q"),
    ("name", 56, "64s"),
    ("first_seq", 120, "Q"),
)
FRAME_HEADER_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("length", 0, "I"),
    ("msg_type", 4, "I"),
    ("nano", 8, "q"),
    ("source", 16, "I"),
    ("payload_len", 20, "I"),
    ("seq", 24, "I"),
    ("checksum", 28, "I"),
)


def _struct_of(fields: tuple[tuple[str, int, str], ...]) -> struct.Struct:
    return struct.Struct("<" + "".join(code for _, _, code in fields))


PAGE_HEADER = _struct_of(PAGE_HEADER_FIELDS)
FRAME_HEADER = _struct_of(FRAME_HEADER_FIELDS)
# The commit word alone: '<I' packs through CPython's native memcpy packer on little-endian hosts,
# one aligned 4-byte store (see docs/format.md, "Memory ordering").
COMMIT = struct.Struct("<I")
# The frame header after the commit word: msg_type, nano, source, payload_len, seq, checksum.
FRAME_BODY = struct.Struct("<IqIIII")
FRAME_BODY_OFFSET = 4
# The hot paths' view of the same 28 bytes, seq and checksum as one u64: on a page without checksums
# the checksum is 0, so that u64 is the stored seq, packed and unpacked as one value instead of two.
FRAME_BODY_FAST = struct.Struct("<IqIIQ")
NANO_FIELD = struct.Struct("<q")
FIRST_NANO_OFFSET = 32
LAST_NANO_OFFSET = 40
FIRST_SEQ_OFFSET = 120
SEQ_FIELD = struct.Struct("<Q")
INDEX_SLOT = struct.Struct("<I")
INDEX_TABLE = struct.Struct(f"<{INDEX_SLOTS}I")


class PageHeader(NamedTuple):
    """A decoded page header."""

    magic: bytes
    version: int
    header_size: int
    flags: int
    page_size: int
    page_no: int
    first_nano: int
    last_nano: int
    created_nano: int
    name: str
    first_seq: int  # 0 in version 1 pages, which number no frame

    @property
    def checksums(self) -> bool:
        return self.flags & CHECKSUMS_BIT != 0


def align8(n: int) -> int:
    return (n + FRAME_ALIGN - 1) & ~(FRAME_ALIGN - 1)


def max_payload(page_size: int) -> int:
    """The largest payload one frame can carry in a page of `page_size` bytes.

    Example: ``max_payload(DEFAULT_PAGE_SIZE)  # the largest frame a default journal takes``
    """
    return page_size - PAGE_HEADER_SIZE - FRAME_HEADER_SIZE - PAGE_END_RESERVE


def index_stride(page_size: int) -> int:
    """Bytes of page covered by one time-index slot."""
    body = page_size - PAGE_HEADER_SIZE
    return align8(-(-body // INDEX_SLOTS))


def check_page_size(page_size: int) -> None:
    if not isinstance(page_size, int) or isinstance(page_size, bool):
        raise UsageError(
            f"page_size must be an int number of bytes, not {type(page_size).__name__} {page_size!r} "
            "(for 1 MiB pass 1 << 20)"
        )
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE or page_size % PAGE_SIZE_MULTIPLE:
        raise UsageError(
            f"page_size {page_size} is invalid: it must be a multiple of {PAGE_SIZE_MULTIPLE} "
            f"between {MIN_PAGE_SIZE} and {MAX_PAGE_SIZE} bytes"
        )


def encode_page_header(name: str, page_no: int, page_size: int, created_nano: int, flags: int = 0) -> bytes:
    """A version 2 page header; first_seq 0 (the writer stores it when it starts using the page)."""
    if flags & ~KNOWN_FLAGS:
        raise UsageError(f"page flags {flags:#x} are not supported (known: {KNOWN_FLAGS:#x})")
    return PAGE_HEADER.pack(
        MAGIC, VERSION, PAGE_HEADER_SIZE, flags, page_size, page_no, 0, 0, created_nano, name.encode(), 0
    )


def decode_page_header(buf: Buffer, path: str) -> PageHeader:
    """Decode and validate a page header; raise `CorruptJournalError` naming `path` otherwise."""
    if len(buf) < PAGE_HEADER_SIZE:
        raise CorruptJournalError(path, len(buf), "file is shorter than a page header (truncated)")
    raw = PAGE_HEADER.unpack_from(buf, 0)
    if raw[0] != MAGIC:
        raise CorruptJournalError(path, 0, f"bad magic {raw[0]!r}, not an mmipc page")
    if raw[1] not in READABLE_VERSIONS:
        raise CorruptJournalError(
            path, 8, f"format version {raw[1]} is not supported (this mmipc reads versions 1 and 2)"
        )
    if raw[2] != PAGE_HEADER_SIZE:
        raise CorruptJournalError(path, 10, f"header size {raw[2]} is not {PAGE_HEADER_SIZE}")
    page_size = raw[4]
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE or page_size % PAGE_SIZE_MULTIPLE:
        raise CorruptJournalError(path, 16, f"page size {page_size} is out of range")
    try:
        name = raw[9].rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise CorruptJournalError(path, 56, "journal name is not ASCII") from None
    flags = raw[3] if raw[1] >= 2 else 0  # version 1 reserved the field: nothing there has a meaning
    if flags & ~KNOWN_FLAGS:
        raise CorruptJournalError(
            path, 12, f"page flags {flags:#x} are not supported (this mmipc knows {KNOWN_FLAGS:#x})"
        )
    first_seq = raw[10] if raw[1] >= 2 else 0
    return PageHeader(
        raw[0], raw[1], raw[2], flags, page_size, raw[5], raw[6], raw[7], raw[8], name, first_seq
    )


class FrameInfo(NamedTuple):
    """A committed frame's header, as decoded and checked by `decode_frame`."""

    offset: int
    length: int
    msg_type: int
    nano: int
    source: int
    payload_len: int
    seq: int = 0  # the low 32 bits, as stored
    checksum: int = 0

    @property
    def end(self) -> int:
        return self.offset + align8(self.length)


def decode_frame(
    buf: Buffer, offset: int, page_size: int, path: str, checksums: bool | None = None
) -> FrameInfo | None:
    """The committed frame at `offset`, or None if its commit word is still 0.

    Reads the commit word first and the rest of the header only once it is non-zero. `checksums` is
    the page's CHECKSUMS flag: if True, a data frame's payload must match its checksum; if False,
    the checksum must be 0; None (a caller that did not look) checks neither.
    """
    if offset + FRAME_HEADER_SIZE > page_size or offset % FRAME_ALIGN:
        raise CorruptJournalError(path, offset, "frame offset lies outside the page")
    length = COMMIT.unpack_from(buf, offset)[0]
    if length == 0:
        return None
    msg_type, nano, source, payload_len, seq, checksum = FRAME_BODY.unpack_from(
        buf, offset + FRAME_BODY_OFFSET
    )
    check_frame(offset, length, msg_type, payload_len, page_size, path)
    if checksums and msg_type != MsgType.PAGE_END:
        check_checksum(buf, offset, length, checksum, path)
    elif checksum and checksums is not None:
        raise CorruptJournalError(
            path, offset, f"frame has checksum {checksum:#010x} on a page without checksums"
        )
    return FrameInfo(offset, length, msg_type, nano, source, payload_len, seq, checksum)


def check_checksum(buf: Buffer, offset: int, length: int, checksum: int, path: str) -> None:
    """Raise `CorruptJournalError` unless the payload of the frame at `offset` has CRC-32 `checksum`."""
    with memoryview(buf) as view:
        actual = zlib.crc32(view[offset + FRAME_HEADER_SIZE : offset + length])
    if actual != checksum:
        raise CorruptJournalError(
            path, offset, f"payload checksum {actual:#010x} does not match the frame's {checksum:#010x}"
        )


def full_seq(first_seq: int, seq32: int) -> int:
    """A frame's 64-bit sequence number from its page's first_seq and its stored low 32 bits."""
    return first_seq + ((seq32 - first_seq) & SEQ_MASK)


def check_frame(offset: int, length: int, msg_type: int, payload_len: int, page_size: int, path: str) -> None:
    """Raise `CorruptJournalError` unless the header fields describe a frame that fits the page."""
    if length != FRAME_HEADER_SIZE + payload_len:
        raise CorruptJournalError(
            path, offset, f"frame length {length} disagrees with payload length {payload_len}"
        )
    if msg_type == MsgType.PAGE_END:
        if payload_len:
            raise CorruptJournalError(path, offset, "end-of-page marker carries a payload")
        return
    if offset + align8(length) + PAGE_END_RESERVE > page_size:
        raise CorruptJournalError(path, offset, f"frame length {length} runs past the page end")
