"""The service protocol: length-prefixed JSON messages, decoded from buffers only (no I/O here).

A message is a 4-byte little-endian length N followed by N bytes of UTF-8 JSON holding one object.
Requests are capped at MAX_MESSAGE (1 <= N <= 64 KiB); replies at MAX_REPLY, far larger, because a
status lists every journal and reader the service knows. docs/service.md lists the requests and
replies. The rule for everything that arrives from a socket: decode it, or raise `ProtocolError`;
never any other exception, never an allocation larger than the reader's cap plus one length word.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .._errors import MmipcError

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 * 1024
MAX_REPLY = 256 * 1024 * 1024
MAX_ECHO = 200  # characters of a peer's own text that an error reply may quote
LENGTH = struct.Struct("<I")

# op -> {field: type} of the fields a request must carry (beyond "op" and "id").
REQUESTS: dict[str, dict[str, type]] = {
    "hello": {"version": int, "pid": int},
    "register_writer": {"directory": str, "name": str},
    "unregister_writer": {"directory": str, "name": str},
    "page": {"directory": str, "name": str, "page_no": int, "page_size": int},
    "register_reader": {"name": str},
    "unregister_reader": {"name": str},
    "add_journal": {"reader": str, "directory": str, "name": str},
    "remove_journal": {"reader": str, "directory": str, "name": str},
    "status": {},
}


class ProtocolError(MmipcError):
    """A peer sent bytes that are not a valid message; `fatal` ones end the connection."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def encode(message: dict[str, Any], cap: int = MAX_MESSAGE) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > cap:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {cap}-byte cap")
    return LENGTH.pack(len(body)) + body


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """`text`, cut to `limit` characters, saying how much was cut (for echoing a peer's input)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class MessageReader:
    """Accumulates bytes from a stream and splits them into decoded messages of at most `cap` bytes."""

    def __init__(self, cap: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._cap = cap

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add `data`; return every complete message. Raises a fatal `ProtocolError` on bad framing."""
        self._buf += data
        messages = []
        while len(self._buf) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(self._buf, 0)
            if not 1 <= size <= self._cap:
                raise ProtocolError(f"message length {size} is outside 1..{self._cap}", fatal=True)
            if len(self._buf) < LENGTH.size + size:
                break
            body = bytes(self._buf[LENGTH.size : LENGTH.size + size])
            del self._buf[: LENGTH.size + size]
            messages.append(decode_body(body))
        return messages

    @property
    def pending(self) -> int:
        return len(self._buf)


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("message is not UTF-8 JSON", fatal=True) from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object", fatal=True)
    return message


def check_request(message: dict[str, Any]) -> str:
    """Return the request's op; raise a non-fatal `ProtocolError` if its shape is wrong."""
    op = message.get("op")
    if not isinstance(op, str) or op not in REQUESTS:
        raise ProtocolError(f"unknown request {clip(repr(op))}")
    request_id = message.get("id")
    if request_id is not None and (not isinstance(request_id, int) or isinstance(request_id, bool)):
        raise ProtocolError("request id must be an integer")
    for field, kind in REQUESTS[op].items():
        value = message.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError(f"{op}: field {field!r} must be {kind.__name__}")
    return op
