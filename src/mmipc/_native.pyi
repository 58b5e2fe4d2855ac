"""Types of the C extension mmipc._native (src/mmipc/_native/_mmipcmodule.c says what it does)."""

from collections.abc import Iterator
from typing import Any, Final, final

from ._types import Frame

@final
class _Slow:
    """The type of SLOW (at run time a plain object): "not done here, nothing changed"."""

SLOW: Final[_Slow]
FRAME_HEADER_SIZE: Final[int]

class WriterCore:
    pos: int
    limit: int
    last_nano: int
    next_seq: int
    slot_boundary: int
    slot_index: int
    mark_slots: bool
    clock: int
    def attach(
        self,
        view: memoryview,
        page_size: int,
        version: int,
        flags: int,
        first_seq: int,
        pos: int,
        last_nano: int,
        next_seq: int,
        slot_boundary: int,
        slot_index: int = 960,
    ) -> None: ...
    def detach(self) -> None: ...
    def write(self, payload: Any, msg_type: int = 0, source: int = 0) -> int | _Slow: ...
    def commit(self, pos: int, size: int, msg_type: int, source: int) -> int | _Slow: ...

class Batch:
    nano: memoryview
    msg_type: memoryview
    source: memoryview
    offset: memoryview
    length: memoryview
    seq: memoryview
    buffer: memoryview
    def data(self, i: int) -> memoryview: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Frame: ...
    def __iter__(self) -> Iterator[Frame]: ...

class CursorCore:
    pos: int
    last_nano: int
    next_nano: int
    msg_type: int
    source: int
    length: int
    seq: int
    def __init__(self, jid: object, frame_class: type[tuple[Any, ...]]) -> None: ...
    def attach(
        self, view: memoryview, page_size: int, version: int, flags: int, first_seq: int, pos: int
    ) -> None: ...
    def detach(self) -> None: ...
    def read(self) -> Frame | None | _Slow: ...
    def poll(self) -> int: ...
    def take(self) -> Frame: ...
    def read_batch(self, limit: int) -> Batch | _Slow: ...

def merge_read(cores: list[CursorCore]) -> Frame | None | _Slow: ...
def crc32(data: Any, value: int = 0) -> int: ...
def now() -> int: ...
