"""What a frame looks like on the wire: its subject, its message id and its headers (no I/O).

Header names (values are ASCII decimal unless said otherwise):

| header | value |
|---|---|
| ``Nats-Msg-Id`` | ``HOST/JOURNAL/SEQ``, or ``HOST/JOURNAL/pPAGE.OFFSET`` for a version-1 frame |
| ``Mmipc-Journal`` | the journal's name (also the last tokens of the subject) |
| ``Mmipc-Host`` | the host id of the out-bridge (`socket.gethostname()` unless given) |
| ``Mmipc-Nano`` / ``Mmipc-Type`` / ``Mmipc-Source`` | the frame's timestamp, msg_type and source |
| ``Mmipc-Seq`` | the frame's sequence number in its journal; -1 on a version-1 page |
| ``Mmipc-At`` | ``PAGE.END``: the page of the frame and the offset just past it, where the next
  frame of the journal starts (the out-bridge resumes there) |
"""

from __future__ import annotations

import re
import urllib.parse
from typing import NamedTuple

from .._errors import MmipcError
from ..journal._layout import MAX_MSG_TYPE, MAX_SOURCE

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
JOURNAL = "Mmipc-Journal"
HOST = "Mmipc-Host"
NANO = "Mmipc-Nano"
TYPE = "Mmipc-Type"
SOURCE = "Mmipc-Source"
SEQ = "Mmipc-Seq"
AT = "Mmipc-At"

MAX_BATCH = 1000  # JetStream's limit on the messages of one atomic batch
WRONG_LAST_SEQUENCE = 10071  # JetStream error codes the out-bridge answers by resynchronising
DUPLICATE_IN_BATCH = 10201
_SCHEMES = ("nats", "tls", "ws", "wss")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class BridgeError(MmipcError):
    """A bridge cannot go on: a conflict or a configuration that no retry can solve."""


class ForeignMessage(BridgeError):
    """A stored message that is no frame of a journal under the prefix (`mmipc bridge in
    --skip-foreign` skips these)."""


class NatsMissingError(MmipcError):
    """nats-py is not installed: the bridge needs the extra ``mmipc[nats]``."""


class Shipped(NamedTuple):
    """What the stream holds of one frame: its place in its journal and its identity."""

    host: str
    journal: str
    seq: int
    page_no: int
    end: int
    nano: int
    msg_type: int
    source: int

    @property
    def msg_id(self) -> str:
        return msg_id(self.host, self.journal, self.seq, self.page_no, self.end)

    @property
    def order(self) -> tuple[int, int, int]:
        """Orders the frames of one journal: by seq (v2), else by page and end offset."""
        return (self.seq, self.page_no, self.end) if self.seq >= 0 else (-1, self.page_no, self.end)


def check_token(value: str, what: str) -> str:
    """`value` if it is a dot-separated run of subject-safe tokens, else a `BridgeError`."""
    if not _TOKEN.match(value):
        raise BridgeError(f"{what} {value!r} must be tokens of A-Z a-z 0-9 _ - separated by dots")
    return value


def redact(url: str) -> str:
    """`url` (one, or a comma-separated cluster) with each password replaced by ``***``, for logs."""
    return re.sub(r"(://[^/@,:]*:)[^/@,]*@", r"\1***@", url)


def check_url(url: str) -> str:
    """`url` if each of its comma-separated parts is a NATS URL, else a `BridgeError`."""
    for part in (p.strip() for p in url.split(",")):
        try:
            split = urllib.parse.urlsplit(part if "://" in part else f"nats://{part}")
            split.port  # noqa: B018 (raises ValueError unless 0..65535)
        except ValueError:
            split = None
        if (
            split is None
            or split.scheme not in _SCHEMES
            or not split.hostname
            or split.port == 0
            or any(c.isspace() for c in split.netloc)
        ):
            raise BridgeError(
                f"--nats {redact(part)!r} is not a NATS server URL: give nats://HOST:PORT (or tls://, "
                "ws://, wss://), several separated by commas for a cluster"
            )
    return url


def covers(pattern: str, wanted: str) -> bool:
    """Whether a stream subject `pattern` takes every subject `wanted` (both may hold NATS wildcards:
    ``*`` one token, ``>`` one or more at the end). Example: ``covers("a.>", "a.b.>")`` is True."""
    have, want = pattern.split("."), wanted.split(".")
    for i, token in enumerate(have):
        if token == ">":
            return i < len(want)
        if i >= len(want) or want[i] == ">" or token not in ("*", want[i]):
            return False
    return len(have) == len(want)


def wire_size(headers: dict[str, str], payload: bytes) -> int:
    """The bytes the server counts against its max_payload: the payload and the encoded headers
    (``NATS/1.0\r\n``, ``Key: value\r\n`` each, ``\r\n``), which nats-py leaves out of its check."""
    encoded = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())  # UTF-8 bytes
    return len(payload) + 12 + encoded


def subject_for(prefix: str, journal: str) -> str:
    return f"{prefix}.{journal}"


def journal_of(prefix: str, subject: str) -> str | None:
    """The journal name of `subject`, or None if it is not under `prefix`."""
    head = prefix + "."
    return subject[len(head) :] if subject.startswith(head) and len(subject) > len(head) else None


def msg_id(host: str, journal: str, seq: int, page_no: int, end: int) -> str:
    return f"{host}/{journal}/{seq}" if seq >= 0 else f"{host}/{journal}/p{page_no}.{end}"


def headers_for(frame: Shipped) -> dict[str, str]:
    return {
        MSG_ID: frame.msg_id,
        JOURNAL: frame.journal,
        HOST: frame.host,
        NANO: str(frame.nano),
        TYPE: str(frame.msg_type),
        SOURCE: str(frame.source),
        SEQ: str(frame.seq),
        AT: f"{frame.page_no}.{frame.end}",
    }


def where(subject: str, stream_seq: int | None) -> str:
    """A stored message's place, for errors: its subject and, when known, its stream sequence."""
    return f"subject {subject}" + (f" (stream sequence {stream_seq})" if stream_seq is not None else "")


def parse_headers(headers: dict[str, str] | None, subject: str, stream_seq: int | None = None) -> Shipped:
    """The frame a stored message carries; `ForeignMessage` naming the subject (and the stream
    sequence) if it is not ours, or if no journal could hold what its headers say."""
    h = headers or {}
    try:
        page, end = h[AT].split(".")
        frame = Shipped(
            h[HOST], h[JOURNAL], int(h[SEQ]), int(page), int(end), int(h[NANO]), int(h[TYPE]), int(h[SOURCE])
        )
    except (KeyError, ValueError):
        raise ForeignMessage(
            f"a message on {where(subject, stream_seq)} was not published by an mmipc bridge (its "
            f"headers: {sorted(h)[:8]}): keep other publishers off the bridge's subjects"
        ) from None
    problem = _impossible(frame)
    if problem:
        raise ForeignMessage(
            f"a message on {where(subject, stream_seq)} has impossible mmipc headers ({problem}): "
            "keep other publishers off the bridge's subjects"
        )
    return frame


def _impossible(frame: Shipped) -> str:
    """What no journal frame could have in `frame`'s headers, or ""."""
    if not 0 < frame.nano < 1 << 63:
        return f"{NANO} {frame.nano} is outside 1..2**63-1"
    if not 0 <= frame.msg_type <= MAX_MSG_TYPE:
        return f"{TYPE} {frame.msg_type} is outside 0..{MAX_MSG_TYPE}"
    if not 0 <= frame.source <= MAX_SOURCE:
        return f"{SOURCE} {frame.source} is outside 0..{MAX_SOURCE}"
    if frame.page_no < 0 or frame.end < 0:
        return f"{AT} {frame.page_no}.{frame.end} is no position"
    return ""
