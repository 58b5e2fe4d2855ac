"""The merge's read loop, for valgrind (merge_cache.sh).

`merge_reads.py write JOURNALS FRAMES DIR` writes, as `mmipc bench --journals` does, one warm-up
frame per journal, then FRAMES frames of 64 B spread evenly over the JOURNALS journals (run it
outside valgrind: the writers' threads would make the counts drift).
`merge_reads.py read JOURNALS FRAMES READ DIR` follows them from the beginning, reads the warm-up
frames (so no page is first touched in the loop), then the FRAMES frames if READ is 1. Two runs
that differ only in READ cancel everything but the reads: (total with 1 - total with 0) / FRAMES
is the cost of one `Reader.read()`.
"""

from __future__ import annotations

import sys

from mmipc import Reader, Writer

PAYLOAD = bytes(64)


def write(journals: int, frames: int, directory: str) -> None:
    writers = [Writer.create(directory, f"j{i}", service=None, page_size=1 << 20) for i in range(journals)]
    for writer in writers:
        writer.write(PAYLOAD)
    for k in range(frames):
        writers[k % journals].write(PAYLOAD)
    for writer in writers:
        writer.close()


def read(journals: int, frames: int, read_them: bool, directory: str) -> None:
    with Reader.create("merge-reads", service=None) as reader:
        for i in range(journals):
            reader.add_journal(directory, f"j{i}", start="begin")
        read = reader.read
        for _ in range(journals):
            assert read() is not None
        got = 0
        if read_them:
            while read() is not None:
                got += 1
            assert got == frames, (got, frames)
        else:
            for _ in range(frames):  # the same loop, without the read
                got += 1


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        read(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5])
