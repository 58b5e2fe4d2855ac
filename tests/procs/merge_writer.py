"""A writer process for the merge tests: frames over many journals, in a random journal order.

usage: merge_writer.py DIR PAGE_SIZE COUNT SEED PACE_US NAME [NAME ...]
Writes COUNT frames to each NAME (COUNT -1: until killed), each to a journal picked at random
among those with frames left (payload: the journal's sequence number, 8 bytes LE, continuing
after what the journal holds), at most one frame every PACE_US microseconds (0: no pause), then
an end frame (msg_type 7) to each. Prints "ready" once the journals are open, "done" at the end.
"""

from __future__ import annotations

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
    directory, page_size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng, pace = random.Random(int(sys.argv[4])), int(sys.argv[5]) * 1000
    names = sys.argv[6:]
    writers = [Writer.create(directory, name, service=None, page_size=page_size) for name in names]
    seqs = [resume_seq(directory, name) for name in names]
    left = [count if count >= 0 else 1 << 62] * len(names)
    print("ready", flush=True)
    live = list(range(len(names)))
    next_at = time.monotonic_ns()
    while live:
        while pace and time.monotonic_ns() < next_at:
            pass
        next_at += pace
        k = rng.randrange(len(live))
        i = live[k]
        writers[i].write(seqs[i].to_bytes(8, "little"))
        seqs[i] += 1
        left[i] -= 1
        if left[i] == 0:
            live[k] = live[-1]
            live.pop()
    for writer in writers:
        writer.write(b"", msg_type=END)
        writer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
