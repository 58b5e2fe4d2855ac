"""The values a reader hands out."""

from __future__ import annotations

from typing import NamedTuple


class JournalId(NamedTuple):
    """Which journal a frame came from: its absolute directory and its name."""

    directory: str
    name: str

    def __str__(self) -> str:
        return f"{self.directory}/{self.name}"


class Frame(NamedTuple):
    """One committed frame.

    `data` is a read-only, zero-copy memoryview of the payload in the mapped page. It stays valid for as
    long as you hold it, even after the reader has moved past its page; copy it (`bytes(frame.data)`)
    to keep the payload without keeping the page mapped.
    """

    nano: int
    msg_type: int
    source: int
    journal: JournalId
    data: memoryview
