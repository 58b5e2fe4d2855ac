"""A reader edits a journal's NAME.bells under an flock. It mapped the list by one open and took
the flock on a second open of the name: a list swapped in between (removed and made again by
another reader, renamed over) left it editing one file under the lock of another, so two readers
could claim the same slot, and its slot went into a file no writer maps. Now the lock is on the
descriptor it maps, and the name must still be that file once locked. The swap is made by a real
rename at the moment of the lock (an audit hook on `fcntl.flock`, this thread only)."""

from __future__ import annotations

import os
import sys
import threading

from mmipc import Writer
from mmipc.journal._bell import LIST_SIZE, SLOT, SLOTS, Bell, BellList, _slot_off, bells_path

_swap: list[tuple[int, str, str]] = []  # (thread, spare list, list): rename at the next flock


def _swap_at_lock(event: str, args: tuple[object, ...]) -> None:
    if event == "fcntl.flock" and _swap and _swap[0][0] == threading.get_ident():
        _, spare, path = _swap.pop()
        os.rename(spare, path)


sys.addaudithook(_swap_at_lock)  # cannot be removed: acts only when `_swap` says so


def _bells_listed(path: str) -> list[str]:
    with open(path, "rb") as f:
        data = f.read()
    slots = (SLOT.unpack_from(data, _slot_off(n)) for n in range(SLOTS))
    return [bell.rstrip(b"\0").decode() for state, _, _, _, bell in slots if state]


def test_a_list_swapped_before_the_lock_gets_the_slot_not_the_old_file(jdir: str) -> None:
    with Writer.create(jdir, "swapped", service=None) as writer:
        writer.write(b"x")
        path = bells_path(jdir, "swapped")
        bell = Bell.create()
        assert bell is not None
        try:
            assert BellList.subscribe(jdir, "swapped", bell.path, 1) is not None  # the list exists
            spare = path + ".new"
            fd = os.open(spare, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.ftruncate(fd, LIST_SIZE)  # a fresh empty list, as a reader makes one
            os.close(fd)
            _swap.append((threading.get_ident(), spare, path))
            slot = BellList.subscribe(jdir, "swapped", bell.path, 2)
            assert not _swap, "the edit took no flock"
            assert slot is not None
            assert _bells_listed(path) == [bell.path], "the slot went into the list swapped out"
        finally:
            _swap.clear()
            bell.close()
