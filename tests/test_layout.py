"""docs/format.md and the format module agree, field by field."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from mmipc.journal import _layout

DOC = (Path(__file__).parent.parent / "docs" / "format.md").read_text()


def doc_table(heading: str) -> list[tuple[str, int, int, str]]:
    """The (field, offset, size, struct code) rows of the table under `heading`."""
    section = DOC.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\w+) \| (\w+) \|", section, re.MULTILINE)
    return [(field, int(offset), int(size), code) for offset, size, field, code in rows]


@pytest.mark.parametrize(
    ("heading", "fields", "packed"),
    [
        ("Page header", _layout.PAGE_HEADER_FIELDS, _layout.PAGE_HEADER),
        ("Frame header", _layout.FRAME_HEADER_FIELDS, _layout.FRAME_HEADER),
    ],
)
def test_documented_offsets_match_the_structs(
    heading: str, fields: tuple[tuple[str, int, str], ...], packed: struct.Struct
) -> None:
    rows = doc_table(heading)
    assert [(f, o, c) for f, o, _, c in rows] == list(fields)
    offset = 0
    for field, documented, size, code in rows:
        assert documented == offset, f"{field} is documented at {documented}, packed at {offset}"
        assert struct.calcsize("<" + code) == size
        offset += size
    assert offset == packed.size


def test_frame_header_and_hot_path_structs_line_up() -> None:
    assert _layout.FRAME_HEADER.size == _layout.FRAME_HEADER_SIZE == 32
    body = [code for name, _, code in _layout.FRAME_HEADER_FIELDS if name != "length"]
    assert _layout.FRAME_BODY.format == "<" + "".join(body)
    assert dict((n, o) for n, o, _ in _layout.FRAME_HEADER_FIELDS)["msg_type"] == _layout.FRAME_BODY_OFFSET
    fields = {n: o for n, o, _ in _layout.PAGE_HEADER_FIELDS}
    assert fields["first_nano"] == _layout.FIRST_NANO_OFFSET
    assert fields["last_nano"] == _layout.LAST_NANO_OFFSET
    assert fields["first_seq"] == _layout.FIRST_SEQ_OFFSET and _layout.SEQ_FIELD.format == "<Q"
    assert _layout.INDEX_OFFSET + 4 * _layout.INDEX_SLOTS == _layout.PAGE_HEADER_SIZE


def test_module_diagram_names_every_field() -> None:
    doc = _layout.__doc__ or ""
    for name, _, _ in _layout.PAGE_HEADER_FIELDS + _layout.FRAME_HEADER_FIELDS:
        assert name.split("_")[0][:5] in doc, name


def test_documented_limits_match_the_code() -> None:
    assert f"{_layout.max_payload(64 * 1024):,} bytes in a 64 KiB page" in DOC
    assert f"{_layout.max_payload(_layout.DEFAULT_PAGE_SIZE):,} bytes in a default 32 MiB" in DOC
    assert _layout.DEFAULT_PAGE_SIZE == 32 * 1024 * 1024
    assert f"{_layout.INDEX_SLOTS} little-endian" in DOC


def test_decoders_raise_only_corrupt_journal_error_on_random_bytes() -> None:
    import random

    from mmipc import CorruptJournalError

    rng = random.Random(1)
    for _ in range(2000):
        blob = rng.randbytes(rng.choice([0, 10, 4095, 4096, 8192]))
        if blob[:8] and rng.random() < 0.5:
            blob = _layout.MAGIC + blob[8:]
        try:
            _layout.decode_page_header(blob, "blob")
        except CorruptJournalError:
            pass
        if len(blob) >= 8192:
            try:
                _layout.decode_frame(blob, 4096, 8192, "blob")
            except CorruptJournalError:
                pass


def test_version_1_and_2_headers_decode_and_unknown_versions_and_flags_do_not() -> None:
    from mmipc import CorruptJournalError

    v2 = _layout.encode_page_header("j", 3, 65536, 7, _layout.PageFlags.CHECKSUMS)
    header = _layout.decode_page_header(v2 + bytes(4096 - len(v2)), "p")
    assert (header.version, header.flags, header.checksums, header.first_seq) == (2, 1, True, 0)
    v1 = bytearray(v2)
    struct.pack_into("<H", v1, 8, 1)  # a version 1 page: flags and first_seq were reserved
    struct.pack_into("<Q", v1, 120, 99)
    header = _layout.decode_page_header(bytes(v1) + bytes(4096 - len(v1)), "p")
    assert (header.version, header.flags, header.checksums, header.first_seq) == (1, 0, False, 0)
    for offset, fmt, value, words in [(8, "<H", 3, "version 3"), (12, "<I", 2, "flags 0x2")]:
        bad = bytearray(v2)
        struct.pack_into(fmt, bad, offset, value)
        with pytest.raises(CorruptJournalError, match=words):
            _layout.decode_page_header(bytes(bad) + bytes(4096 - len(bad)), "p")


@pytest.mark.parametrize(
    ("first", "stored", "full"),
    [
        (0, 0, 0),
        (0, 5, 5),
        (2**32 - 2, 2**32 - 1, 2**32 - 1),
        (2**32 - 2, 3, 2**32 + 3),
        (5 * 2**32 + 9, 10, 5 * 2**32 + 10),
    ],
)
def test_full_sequence_numbers_from_32_stored_bits(first: int, stored: int, full: int) -> None:
    assert _layout.full_seq(first, stored) == full
