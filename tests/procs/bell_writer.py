"""A writer process for the doorbell tests: frames at random gaps, so its reader keeps falling asleep.

usage: bell_writer.py DIR NAME COUNT SEED [NAME ...]
Writes COUNT frames to each NAME in turn (payload: the journal's sequence number, 8 bytes LE,
continuing after what the journal holds), pausing a random 0-30 us before about a third of them,
then an end frame (msg_type 7). Prints "ready" once the journals are open, "done" at the end.
Pages of BELL_WRITER_PAGE_SIZE bytes (default 1 MiB; 64 KiB for the tests of 256 journals).
"""

from __future__ import annotations

import os
import random
import sys
import time

from mmipc import Reader, Writer

END = 7


def resume_seq(directory: str, name: str) -> int:
    reader = Reader.create(f"resume-{name}", service=None)
    reader.add_journal(directory, name)
    seq = 0
    while (frame := reader.read()) is not None:
        if frame.msg_type != END:
            seq = int.from_bytes(frame.data, "little") + 1
    reader.close()
    return seq


def main() -> None:
    directory, first, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    names = [first, *sys.argv[5:]]
    page_size = int(os.environ.get("BELL_WRITER_PAGE_SIZE", 1 << 20))
    writers = [Writer.create(directory, name, service=None, page_size=page_size) for name in names]
    seqs = [resume_seq(directory, name) for name in names]
    print("ready", flush=True)
    rng = random.Random(seed)
    clock = time.perf_counter_ns
    for _ in range(count):
        for i, writer in enumerate(writers):
            if rng.random() < 0.33:
                until = clock() + rng.randrange(30_000)
                while clock() < until:
                    pass
            writer.write(seqs[i].to_bytes(8, "little"))
            seqs[i] += 1
    for writer in writers:
        writer.write(b"", msg_type=END)
        writer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
