"""A writer process: resumes its journal and appends self-checking frames.

usage: writer_proc.py DIR NAME PAGE_SIZE COUNT [--end | --die-in-claim SIZE]
COUNT frames (-1: until killed) continue the sequence after the last frame already in the
journal. --end appends the end marker frame afterwards. --die-in-claim claims SIZE bytes, fills
them with 0xAB without publishing, prints "claimed" and waits to be killed.
--pace-us N waits N microseconds between frames. --checksum creates pages with checksums.
Prints "ready NEXT_SEQ" once the journal is open.
"""

from __future__ import annotations

import os
import sys
import time

import payloads

from mmipc import Reader, Writer


def next_seq(directory: str, name: str, last_nano: int) -> int:
    """The sequence number after the last frame committed to the journal."""
    if last_nano == 0:
        return 0
    reader = Reader.create(f"resume-{os.getpid()}")
    reader.add_journal(directory, name, start=last_nano)
    seq = -1
    while (frame := reader.read()) is not None:
        if frame.msg_type == payloads.DATA_MSG:
            seq = payloads.check(frame.data)
    reader.close()
    return seq + 1


def main() -> None:
    directory, name, page_size, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    checksum = "--checksum" in sys.argv
    with Writer.create(directory, name, page_size=page_size, checksum=checksum) as writer:
        seq = next_seq(directory, name, writer.last_nano)
        print("ready", seq, flush=True)
        stop = seq + count if count >= 0 else 1 << 62
        pace = int(sys.argv[sys.argv.index("--pace-us") + 1]) * 1000 if "--pace-us" in sys.argv else 0
        next_at = time.monotonic_ns()
        while seq < stop:
            while pace and time.monotonic_ns() < next_at:
                pass
            next_at += pace
            writer.write(payloads.make(seq), msg_type=payloads.DATA_MSG)
            seq += 1
        if "--die-in-claim" in sys.argv:
            size = int(sys.argv[sys.argv.index("--die-in-claim") + 1])
            with writer.frame(size, msg_type=payloads.DATA_MSG) as buf:
                buf[:] = b"\xab" * size
                print("claimed", flush=True)
                sys.stdin.read()  # until the test kills this process
        if "--end" in sys.argv:
            writer.write(b"", msg_type=payloads.END_MSG)
    print("done", seq, flush=True)


if __name__ == "__main__":
    main()
