"""One blocking reader of N journals going to sleep and waking, K times (for sleep_ops.sh).

usage: sleep_ops.py JOURNALS TIMES DIR
Each time is `native.bell_block` as `wait="block"` calls it (_block._sleep): announce `sleeping`,
set the reader's needy byte in each journal's bell list, fence, re-check (an empty read), then
FUTEX_WAIT with a timeout of 0 (it returns at once: nothing rang) and clear `sleeping`. No sweep
follows (the re-check stays an empty read), so the count is the sleep itself.
"""

from __future__ import annotations

import sys

from mmipc import Reader, Writer
from mmipc.journal import _block
from mmipc.journal._backend import native


def main() -> None:
    journals, times, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    assert native is not None, "needs the native backend"
    names = [f"j{i}" for i in range(journals)]
    for name in names:
        Writer.create(directory, name, service=None).close()
    reader = Reader.create("sleeper", service=None)
    for name in names:
        reader.add_journal(directory, name)
    merge = reader._merge
    bell = merge.bell
    assert bell is not None
    chooser = getattr(_block, "_needy", None)  # what _sleep passes (older versions: bell.need_all)
    needy = chooser(merge, bell) if chooser is not None else bell.need_all if bell.needy else None
    for _ in range(times):
        got = native.bell_block(bell.mm, reader.read, 0, needy)
        assert got is False, got
    reader.close()


if __name__ == "__main__":
    main()
