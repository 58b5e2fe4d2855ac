"""The service's message decoder: parse, or raise ProtocolError; never anything else, never unbounded."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmipc.service._protocol import (
    LENGTH,
    MAX_MESSAGE,
    MAX_REPLY,
    REQUESTS,
    MessageReader,
    ProtocolError,
    check_request,
    clip,
    encode,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_parse_or_raise_protocol_error(chunks: list[bytes]) -> None:
    reader = MessageReader()
    for chunk in chunks:
        try:
            for message in reader.feed(chunk):
                assert isinstance(message, dict)
                try:
                    check_request(message)
                except ProtocolError:
                    pass
        except ProtocolError as exc:
            assert exc.fatal
            reader = MessageReader()
        assert reader.pending <= LENGTH.size + MAX_MESSAGE + 300


@pytest.mark.once  # .ci/run: native pass only (the protocol is pure Python, whatever the backend)
@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["op", "id", "name", "directory", "page_no", "version", "pid"]), json_values
    )
)
def test_any_json_object_is_a_valid_request_or_a_protocol_error(message: dict[str, object]) -> None:
    try:
        op = check_request(message)
    except ProtocolError as exc:
        assert not exc.fatal
        return
    for field, kind in REQUESTS[op].items():
        assert isinstance(message[field], kind)


@given(st.lists(st.sampled_from(sorted(REQUESTS)), min_size=1, max_size=10), st.integers(1, 50))
def test_messages_split_anywhere_come_back_whole(ops: list[str], cut: int) -> None:
    stream = b"".join(encode({"op": op, "id": i}) for i, op in enumerate(ops))
    reader = MessageReader()
    got = [m for i in range(0, len(stream), cut) for m in reader.feed(stream[i : i + cut])]
    assert got == [{"op": op, "id": i} for i, op in enumerate(ops)]


@pytest.mark.parametrize("size", [0, MAX_MESSAGE + 1, 2**32 - 1])
def test_bad_lengths_are_refused_before_any_body_is_read(size: int) -> None:
    with pytest.raises(ProtocolError, match="length") as info:
        MessageReader().feed(LENGTH.pack(size))
    assert info.value.fatal


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    body = b"[" * 100_000
    with pytest.raises(ProtocolError):
        MessageReader().feed(LENGTH.pack(MAX_MESSAGE) + body[:MAX_MESSAGE])


def test_messages_over_the_cap_cannot_be_sent() -> None:
    with pytest.raises(ProtocolError, match="cap"):
        encode({"op": "status", "pad": "x" * MAX_MESSAGE})
    assert json.loads(encode({"op": "status"})[4:]) == {"op": "status"}


def test_replies_have_their_own_far_larger_cap_and_echoes_are_clipped() -> None:
    big = encode({"status": "x" * (4 * MAX_MESSAGE)}, MAX_REPLY)
    assert MessageReader(MAX_REPLY).feed(big) == [{"status": "x" * (4 * MAX_MESSAGE)}]
    with pytest.raises(ProtocolError, match="length"):
        MessageReader().feed(big)
    with pytest.raises(ProtocolError) as info:
        check_request({"op": "x" * 65_500})
    assert len(str(info.value)) < 300 and "more characters)" in str(info.value)
    assert clip("short") == "short"
