"""Any payload written comes back unchanged, at every size up to the largest a page can hold."""

from __future__ import annotations

import ctypes
import random
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmipc import FrameTooLargeError, Reader, Writer, max_payload

PAGE = 64 * 1024
LARGEST = max_payload(PAGE)
# Sizes right around the page's limits, where off-by-one errors live.
EDGES = [0, 1, 7, 8, 9, LARGEST - 9, LARGEST - 8, LARGEST - 1, LARGEST]


def roundtrip(
    payloads: list[bytes], page_size: int = PAGE, checksum: bool = False
) -> list[tuple[bytes, int, int]]:
    with tempfile.TemporaryDirectory() as d:
        # Standalone: this checks the format, on hundreds of short-lived directories.
        with Writer.create(d, "rt", page_size=page_size, service=None, checksum=checksum) as writer:
            for i, payload in enumerate(payloads):
                writer.write(payload, msg_type=i % 1000, source=i % 3)
        with Reader.create("rt") as reader:
            reader.add_journal(d, "rt")
            frames = list(iter(reader.read, None))
    assert [f.seq for f in frames] == list(range(len(frames)))  # numbered from 0 without a gap
    return [(bytes(f.data), f.msg_type, f.source) for f in frames]


def expected(payloads: list[bytes]) -> list[tuple[bytes, int, int]]:
    return [(p, i % 1000, i % 3) for i, p in enumerate(payloads)]


sizes = st.one_of(st.sampled_from(EDGES), st.integers(0, LARGEST), st.integers(0, 600))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(sizes, st.integers(0, 2**32)), min_size=1, max_size=12), st.booleans())
def test_any_payload_sequence_comes_back_unchanged(spec: list[tuple[int, int]], checksum: bool) -> None:
    payloads = [random.Random(seed).randbytes(size) for size, seed in spec]
    assert roundtrip(payloads, checksum=checksum) == expected(payloads)


@pytest.mark.parametrize("slack", [0, 8, 16, 24, 32, 40])
def test_frames_that_fill_a_page_exactly_or_nearly(slack: int) -> None:
    # Two frames per page: the second is sized to leave `slack` bytes before the end marker's room.
    room = PAGE - 4096 - 32  # page body minus the end-of-page reserve
    first = 1000
    second = room - (first + 32 + 7) // 8 * 8 - 32 - slack
    payloads = [bytes([i % 251 + 1]) * (first if i % 2 == 0 else second) for i in range(10)]
    assert roundtrip(payloads) == expected(payloads)


def test_the_largest_frame_fits_and_one_byte_more_is_refused(jdir: str) -> None:
    with Writer.create(jdir, "big", page_size=PAGE) as writer:
        writer.write(b"\x07" * LARGEST)
        with pytest.raises(FrameTooLargeError, match=f"the largest is {LARGEST} bytes"):
            writer.write(b"\x07" * (LARGEST + 1))
        writer.write(b"after")
    with Reader.create("big") as reader:
        reader.add_journal(jdir, "big")
        assert [len(f.data) for f in iter(reader.read, None)] == [LARGEST, 5]


class Tick(ctypes.Structure):
    _fields_ = [("instrument", ctypes.c_char * 31), ("price", ctypes.c_double), ("volume", ctypes.c_int)]


def test_ctypes_numpy_and_buffer_payloads(jdir: str) -> None:
    tick = Tick(b"rb2601", 3712.5, 42)
    dtype = np.dtype([("price", "<f8"), ("qty", "<i4")])
    record = np.array([(1.5, 7)], dtype=dtype)[0]
    array = np.arange(10, dtype=np.int64)
    inputs: list[object] = [tick, record, array, bytearray(b"ba"), memoryview(b"mv"), b"by"]
    with Writer.create(jdir, "types") as writer:
        for payload in inputs:
            writer.write(payload)
    with Reader.create("types") as reader:
        reader.add_journal(jdir, "types")
        got = list(iter(reader.read, None))
    back = Tick.from_buffer_copy(got[0].data)
    assert (back.instrument, back.price, back.volume) == (b"rb2601", 3712.5, 42)
    assert np.frombuffer(got[1].data, dtype=dtype)[0] == record
    assert np.array_equal(np.frombuffer(got[2].data, dtype=np.int64), array)
    assert [bytes(f.data) for f in got[3:]] == [b"ba", b"mv", b"by"]
    assert all(f.data.readonly for f in got)
