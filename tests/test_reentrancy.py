"""A signal handler (or a finalizer) runs between two bytecodes of whatever the main code does, a
read's Python part included. red6 refused a read from there; this covers the reader's other
methods: `seek`, `add_journal`, `remove_journal` and `close` called from inside a read of the same
reader change the cursors, the merge's heap or the core's state under the read that is using them.
Each is refused now (UsageError), on both backends, and the interrupted read goes on: every frame
comes out once. The signal is raised by a profile hook each time a C call returns inside a read's
Python code (tests/signalled_reads.py, as in tests/test_red_team_6.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mmipc import Reader
from mmipc.journal._backend import native
from signalled_reads import read_all_while_signalled

COUNT = 3000


OPS: dict[str, Callable[[Reader, str], object]] = {
    "seek": lambda reader, jdir: reader.seek(0),
    "add_journal": lambda reader, jdir: reader.add_journal(jdir, "extra"),
    "remove_journal": lambda reader, jdir: reader.remove_journal(jdir, "d0"),
    "close": lambda reader, jdir: reader.close(),
}


@pytest.mark.parametrize("journals", [1, 3], ids=["one-journal", "merge"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_a_signal_handler_that_changes_the_reader_inside_a_read_is_refused(
    jdir: str, journals: int, op: str
) -> None:
    if native is None and journals == 1:
        pytest.skip(
            "pure Python, one journal: Cursor.read's fast path marks nothing (a mark per frame costs "
            "two stores and a try); a handler there is not refused (known limit, docs/reliability.md)"
        )

    def change(reader: Reader) -> None:
        OPS[op](reader, jdir)

    seen, refused = read_all_while_signalled(jdir, journals, COUNT, "reentered", change)
    assert refused and all("from inside one of its own reads" in r for r in refused), refused[:3]
    assert sorted(seen) == list(range(COUNT))  # each frame once
