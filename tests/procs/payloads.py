"""Self-checking payloads for the process tests: a sequence number, a length and a CRC of the body."""

from __future__ import annotations

import struct
import zlib

HEAD = struct.Struct("<QII")
END_MSG = 99
DATA_MSG = 1


def make(seq: int, max_body: int = 300) -> bytes:
    body = (seq.to_bytes(8, "little") * (max_body // 8 + 1))[: seq * 7919 % max_body]
    return HEAD.pack(seq, len(body), zlib.crc32(body)) + body


def check(data: bytes | memoryview) -> int:
    """Return the sequence number of an intact payload; raise ValueError otherwise."""
    seq, length, crc = HEAD.unpack_from(data, 0)
    body = bytes(data[HEAD.size :])
    if len(body) != length or zlib.crc32(body) != crc or body != make(seq)[HEAD.size :]:
        raise ValueError(f"payload of seq {seq} is damaged")
    return int(seq)
