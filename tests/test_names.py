"""Journal and reader names: the rule, and that no name can reach outside its directory."""

from __future__ import annotations

import os
import re

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
    files = os.listdir(jdir)  # page 1 may be there too, or half-made: the service prepares it ahead
    assert f"{name}.00000000.journal" in files and f"{name}.lock" in files
    name_re = re.escape(name)
    pattern = re.compile(rf"{name_re}(\.\d{{8}}\.journal|\.lock|\.bells)|\.{name_re}\.\d{{8}}\.\d+\.\d+\.tmp")
    assert all(pattern.fullmatch(f) for f in files), files


def test_reader_names_follow_the_same_rule() -> None:
    with pytest.raises(InvalidNameError, match="invalid reader name"):
        Reader.create("../r")
    assert Reader.create("strategy-1").name == "strategy-1"
