"""Journal and reader names: the rule, and that no name can reach outside its directory."""

from __future__ import annotations

import os

import pytest

from mmipc import InvalidNameError, Reader, Writer

BAD = ["", ".hidden", "a/b", "../escape", "..", "a" * 65, "a b", "é", "a\n", "a\0b", "-" * 0]
GOOD = ["a", "A-b_c.d", "x" * 64, "md.SHFE.rb2601", "0", "-dash"]


@pytest.mark.parametrize("name", BAD)
def test_bad_journal_names_are_refused_before_touching_the_disk(jdir: str, name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid journal name"):
        Writer.create(jdir, name)
    with pytest.raises(ValueError):  # InvalidNameError is also a ValueError
        Reader.create("r").add_journal(jdir, name)
    assert os.listdir(jdir) == []


@pytest.mark.parametrize("name", [None, 5, b"bytes"])
def test_non_string_names_are_refused(jdir: str, name: object) -> None:
    with pytest.raises(InvalidNameError):
        Writer.create(jdir, name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_make_pages_inside_the_directory(jdir: str, name: str) -> None:
    with Writer.create(jdir, name, page_size=64 * 1024) as writer:
        writer.write(b"x")
    assert sorted(os.listdir(jdir)) == [f"{name}.00000000.journal", f"{name}.lock"]


def test_reader_names_follow_the_same_rule() -> None:
    with pytest.raises(InvalidNameError, match="invalid reader name"):
        Reader.create("../r")
    assert Reader.create("strategy-1").name == "strategy-1"
