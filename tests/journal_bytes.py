"""Decode journal pages straight from their bytes, per docs/format.md and the format v2 spec (BRIEF).

Independent of mmipc's own decoders on purpose: the tests of the C core check its files against the
written format, not against the code it mirrors. v1 frames are also checked with `_layout.decode_frame`.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

from mmipc.journal._layout import decode_frame

PAGE_HEADER = struct.Struct("<8sHHIQQqqq64sQ")  # ... name at 56, first_seq (v2) at 120
FRAME = struct.Struct("<IIqIIII")  # length, msg_type, nano, source, payload_len, seq, checksum
INDEX = struct.Struct("<960I")
PAGE_END = 0xFFFF_FFFF
CHECKSUMS = 1


@dataclass
class Page:
    path: str
    version: int
    flags: int
    page_size: int
    page_no: int
    first_nano: int
    last_nano: int
    name: str
    first_seq: int
    slots: list[int]
    zero_after_end: bool = False
    frames: list[tuple[int, int, int, int, int, int, int, bytes]] = field(default_factory=list)


def read_page(path: str) -> Page:
    with open(path, "rb") as f:
        buf = f.read()
    magic, version, hsize, flags, size, page_no, first, last, _created, name, first_seq = (
        PAGE_HEADER.unpack_from(buf, 0)
    )
    assert magic == b"MMIPCJNL" and hsize == 4096 and size == len(buf), path
    slots = [s for s in INDEX.unpack_from(buf, 256) if s]
    page = Page(path, version, flags, size, page_no, first, last, name.rstrip(b"\0").decode(), 0, slots)
    page.first_seq = first_seq if version >= 2 else 0
    if version == 1:
        assert buf[120:256] == bytes(136), "v1 reserved header bytes must be zero"
    offset = 4096
    while True:
        length, msg_type, nano, source, n, seq, checksum = FRAME.unpack_from(buf, offset)
        if length == 0:
            break
        info = decode_frame(buf, offset, size, path)  # the v1 decoder's checks hold in v2 too
        assert info is not None and (info.length, info.msg_type, info.nano) == (length, msg_type, nano)
        page.frames.append(
            (offset, msg_type, nano, source, n, seq, checksum, buf[offset + 32 : offset + 32 + n])
        )
        offset += (length + 7) & ~7
        if msg_type == PAGE_END:
            break
    page.zero_after_end = buf[offset:] == bytes(len(buf) - offset)
    return page


def read_journal(directory: str, name: str) -> list[Page]:
    files = sorted(f for f in os.listdir(directory) if f.startswith(name + ".") and f.endswith(".journal"))
    return [read_page(os.path.join(directory, f)) for f in files]


def check_v2_journal(pages: list[Page]) -> list[int]:
    """Check every v2 rule on a journal's pages; return the full seqs of its data frames in order."""
    seqs: list[int] = []
    next_seq: int | None = None
    for page in pages:
        data = [f for f in page.frames if f[1] != PAGE_END]
        if page.version == 1:
            assert all(f[5] == 0 and f[6] == 0 for f in page.frames), "v1 frames keep bytes 24..31 zero"
            continue
        assert page.version == 2 and page.flags & ~CHECKSUMS == 0
        if next_seq is not None:
            assert page.first_seq == next_seq, f"{page.path}: first_seq {page.first_seq} != {next_seq}"
        for i, (_, _, _, _, _, seq32, checksum, payload) in enumerate(data):
            assert seq32 == (page.first_seq + i) & 0xFFFF_FFFF
            expected = zlib.crc32(payload) if page.flags & CHECKSUMS else 0
            assert checksum == expected, f"{page.path}: frame {i} checksum"
            seqs.append(page.first_seq + i)
        next_seq = page.first_seq + len(data)
        check_index_and_times(page)
    return seqs


def check_index_and_times(page: Page) -> None:
    offsets = [f[0] for f in page.frames if f[1] != PAGE_END]
    stride = ((page.page_size - 4096 + 959) // 960 + 7) & ~7
    for k, slot in enumerate(page.slots):  # slot k: the first frame at or after 4096 + k * stride
        assert slot == min(o for o in offsets if o >= 4096 + k * stride)
    if offsets:
        assert page.first_nano == page.frames[0][2]
    ends = [f for f in page.frames if f[1] == PAGE_END]
    if ends:
        assert ends[0][2] == page.last_nano == page.frames[-2][2] and ends[0][5:7] == (0, 0)
