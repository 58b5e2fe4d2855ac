"""A batch of frames (`Reader.read_batch`): columns numpy views without a copy, payloads as views.

Rules:

* Both backends hand out the same interface (`FrameBatch`, the Protocol): the columns `nano`,
  `msg_type`, `source`, `offset`, `length` and `seq` are memoryviews of format 'q' (int64), one
  entry per frame, which ``numpy.frombuffer(batch.nano, dtype=numpy.int64)`` views without a copy;
  ``data(i)`` is a zero-copy view of payload i; ``len()``, ``batch[i]`` and iteration give Frames.
  `offset[i]` is where payload i starts in ``batch.buffer``.
* The native backend's batch (mmipc.journal._native.Batch) holds frames of one page: `buffer` is that page,
  so payloads are views of it. The Python backend's (`FramesBatch`) is built from frames read one by
  one; its `buffer` joins their payloads in one copy, made only when first asked for.
* Nothing here imports numpy.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import Protocol

from ._types import Frame


class FrameBatch(Protocol):
    """What `Reader.read_batch` returns, with either backend.

    Example: ``nano = numpy.frombuffer(reader.read_batch(1000).nano, dtype=numpy.int64)``
    """

    @property
    def nano(self) -> memoryview: ...
    @property
    def msg_type(self) -> memoryview: ...
    @property
    def source(self) -> memoryview: ...
    @property
    def offset(self) -> memoryview: ...
    @property
    def length(self) -> memoryview: ...
    @property
    def seq(self) -> memoryview: ...
    @property
    def buffer(self) -> memoryview: ...
    def data(self, i: int) -> memoryview: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Frame: ...
    def __iter__(self) -> Iterator[Frame]: ...


class FramesBatch:
    """The Python backend's batch: frames read one by one, with their columns.

    Example: ``FramesBatch([frame for frame in iter(reader.read, None)])``
    """

    __slots__ = ("_frames", "nano", "msg_type", "source", "offset", "length", "seq", "_buffer")

    def __init__(self, frames: list[Frame]) -> None:
        self._frames = frames
        columns = list(zip(*frames, strict=True)) if frames else [()] * 6  # one transpose, in C
        lengths = array("q", map(len, columns[4]))
        offsets = array("q", accumulate(lengths, initial=0))
        offsets.pop()
        self.nano = memoryview(array("q", columns[0]))
        self.msg_type = memoryview(array("q", columns[1]))
        self.source = memoryview(array("q", columns[2]))
        self.offset = memoryview(offsets)
        self.length = memoryview(lengths)
        self.seq = memoryview(array("q", columns[5]))
        self._buffer: memoryview | None = None

    @property
    def buffer(self) -> memoryview:
        """The payloads joined, at `offset` (one copy, made on first use)."""
        if self._buffer is None:
            self._buffer = memoryview(b"".join(f.data for f in self._frames))
        return self._buffer

    def data(self, i: int) -> memoryview:
        """A zero-copy view of payload i."""
        return self._frames[i].data

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, i: int) -> Frame:
        return self._frames[i]

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._frames)

    def __repr__(self) -> str:
        return f"<mmipc batch of {len(self._frames)} frame(s)>"
