"""A writer process of CTP market data that declares its schema, for the analysis tests.

usage: ctp_writer.py DIR NAME LAYOUT COUNT [--mixed] [--stamps START STEP] [--hold] [--claim]
Writes COUNT ticks (ctp_fields.tick) with msg_type 101 and source = seq % 5; --mixed adds a frame of
another msg_type and size after every third tick; --stamps writes with write_at(START + seq * STEP)
instead of the clock. Prints "wrote N" (N ticks so far). --hold then reads stdin: "more K" writes K
more ticks, "claim" leaves a filled but unpublished claim open, EOF closes. 64 KiB pages.
"""

from __future__ import annotations

import sys

import ctp_fields

from mmipc import Writer


def main() -> None:
    directory, name, layout, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    mixed = "--mixed" in sys.argv
    stamps = None
    if "--stamps" in sys.argv:
        at = sys.argv.index("--stamps")
        stamps = (int(sys.argv[at + 1]), int(sys.argv[at + 2]))
    schemas = {ctp_fields.MD_MSG: layout}
    with Writer.create(directory, name, page_size=64 * 1024, schemas=schemas) as writer:
        seq = 0

        def write(k: int) -> None:
            nonlocal seq
            for _ in range(k):
                payload = ctp_fields.tick(layout, seq)
                if stamps is None:
                    writer.write(payload, ctp_fields.MD_MSG, seq % 5)
                else:
                    writer.write_at(payload, stamps[0] + seq * stamps[1], ctp_fields.MD_MSG, seq % 5)
                if mixed and seq % 3 == 2:
                    writer.write_at(ctp_fields.other(seq), writer.last_nano, ctp_fields.OTHER_MSG)
                seq += 1
            print("wrote", seq, flush=True)

        write(count)
        if "--hold" in sys.argv:
            for line in sys.stdin:
                if line.startswith("more"):
                    write(int(line.split()[1]))
                elif line.startswith("claim"):
                    with writer.frame(408, msg_type=ctp_fields.MD_MSG) as buf:
                        buf[:] = b"\xab" * 408
                        print("claimed", flush=True)
                        sys.stdin.read()


if __name__ == "__main__":
    main()
