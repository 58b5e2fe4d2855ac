"""The values a reader hands out."""

from __future__ import annotations

import ctypes
from typing import NamedTuple, TypeVar

S = TypeVar("S", bound=ctypes.Structure)


class JournalId(NamedTuple):
    """Which journal a frame came from: its absolute directory and its name.

    Example: ``frame.journal.name == "md.ctp" (and str(frame.journal) is "/data/md/md.ctp")``
    """

    directory: str
    name: str

    def __str__(self) -> str:
        return f"{self.directory}/{self.name}"


class Frame(NamedTuple):
    """One committed frame.

    `data` is a read-only, zero-copy memoryview of the payload in the mapped page. It stays valid for as
    long as you hold it, even after the reader has moved past its page; copy it (`bytes(frame.data)`)
    to keep the payload without keeping the page mapped. `seq` is the frame's sequence number in its
    journal: 0 for the first frame of the journal's first version 2 page, then +1 per frame with no
    gap, across pages and writer restarts; -1 for frames of version 1 pages, which carry none.

    Example: ``for frame in reader.frames(): print(frame.nano, frame.msg_type, bytes(frame.data))``
    """

    nano: int
    msg_type: int
    source: int
    journal: JournalId
    data: memoryview
    seq: int

    def as_struct(self, cls: type[S]) -> S:
        """The payload as ctypes Structure `cls`, checked for size.

        This copies the payload: the frame is a read-only view of the page, and ctypes maps only
        writable memory. For zero-copy access use numpy: `np.frombuffer(frame.data, dtype)`.

        Example: ``tick = frame.as_struct(CThostFtdcDepthMarketDataField)``
        """
        if len(self.data) != ctypes.sizeof(cls):
            raise ValueError(f"payload is {len(self.data)} bytes, {cls.__name__} is {ctypes.sizeof(cls)}")
        return cls.from_buffer_copy(self.data)
