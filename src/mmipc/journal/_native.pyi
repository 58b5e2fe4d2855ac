"""Types of the C extension mmipc.journal._native (its source, _native/_mmipcmodule.c, says what it does)."""

from collections.abc import Iterator
from typing import Any, Final, final

from ._types import Frame

@final
class _Slow:
    """The type of SLOW (at run time a plain object): "not done here, nothing changed"."""

SLOW: Final[_Slow]
FRAME_HEADER_SIZE: Final[int]

class WriterCore:
    """The native Writer's base: `write` is Writer.write; the `_c_*` names are the core's state."""

    _c_pos: int
    _c_limit: int
    _c_last_nano: int
    _c_next_seq: int
    _c_slot_boundary: int
    _c_slot_index: int
    _c_mark_slots: bool
    _c_clock: int
    _c_thread: int
    _c_pretouch: bool
    @property
    def _c_pretouched(self) -> int: ...
    def _c_pretouch_stop(self) -> None: ...
    def _c_attach(
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
    def _c_detach(self) -> None: ...
    def write(self, payload: Any, msg_type: int = 0, source: int = 0) -> int | _Slow: ...
    def _c_commit(self, pos: int, size: int, msg_type: int, source: int) -> int | _Slow: ...
    def _c_open_bells(self, path: str) -> bool: ...
    def _c_close_bells(self) -> None: ...

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
    """The native Cursor's base: `read`, `poll` and `take` are Cursor's; `_c_*` is the core's state."""

    _c_pos: int
    _c_last_nano: int
    _c_next_nano: int
    _c_msg_type: int
    _c_source: int
    _c_length: int
    _c_seq: int
    def __init__(self, jid: object, frame_class: type[tuple[Any, ...]]) -> None: ...
    def _c_attach(
        self, view: memoryview, page_size: int, version: int, flags: int, first_seq: int, pos: int
    ) -> None: ...
    def _c_detach(self) -> None: ...
    def read(self) -> Frame | None | _Slow: ...
    def poll(self) -> int: ...
    def take(self) -> Frame: ...
    def read_batch(self, limit: int) -> Batch | _Slow: ...

class MergeCore:
    heaped: int
    def set(self, cores: list[CursorCore], flags: list[int], bell: Any) -> None: ...
    def read(self) -> Frame | None | _Slow: ...
    def slow(self) -> list[int]: ...
    def settle(self, i: int) -> None: ...
    def sweep(self) -> None: ...
    def reset(self) -> None: ...

def merge_read(cores: list[CursorCore]) -> Frame | None | _Slow: ...
def crc32(data: Any, value: int = 0) -> int: ...
def now() -> int: ...
