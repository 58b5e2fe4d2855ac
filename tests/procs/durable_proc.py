"""A durable reader process for the kill tests: prints every frame, commits every EVERY frames.

usage: durable_proc.py DIR READER CURSOR_DIR EVERY NAME [NAME ...]
Prints "ready", then "F NAME SEQ" per frame (SEQ: the u64 at the payload's start) and
"C" after each commit returns; exits 0 after an idle second once every journal has been read to
its last frame ("done").
"""

from __future__ import annotations

import struct
import sys

from mmipc import Reader

SEQ = struct.Struct("<Q")


def main() -> None:
    directory, reader_name, cursor_dir, every, *names = sys.argv[1:]
    reader = Reader.create(reader_name, durable=True, cursor_dir=cursor_dir)
    for name in names:
        reader.add_journal(directory, name)
    print("ready", flush=True)
    count = 0
    for frame in reader.frames(timeout=1.0):
        print(f"F {frame.journal.name} {SEQ.unpack_from(frame.data)[0]}", flush=True)
        count += 1
        if count % int(every) == 0:
            reader.commit()
            print("C", flush=True)
    reader.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
