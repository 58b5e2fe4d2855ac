"""Ping-pong over two journals, each side blocking on its doorbell: every frame is a wake-up that,
if lost, hangs both processes for good (no timeout backstop).

usage: bell_pingpong.py DIR ROLE COUNT SEED   (ROLE: ping or pong)
ping writes i to journal "ping" and waits for i on "pong"; pong echoes each ping. Before each write
a side busy-waits a random 0-40 us, so its peer is caught at every phase of falling asleep.
Prints "ready" once following its peer's journal, and "done N" after N round trips.
"""

from __future__ import annotations

import random
import sys
import time

from mmipc import Block, Reader, Writer


def main() -> None:
    directory, role, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    peer = "pong" if role == "ping" else "ping"
    rng = random.Random(seed)
    clock = time.perf_counter_ns
    with Writer.create(directory, role, service=None) as writer, Reader.create(role, service=None) as reader:
        reader.add_journal(directory, peer)
        print("ready", flush=True)
        frames = reader.frames(wait=Block(spin=0, max_nap=None))
        done = 0
        if role == "ping":
            writer.write((0).to_bytes(8, "little"))
        for frame in frames:
            value = int.from_bytes(frame.data, "little")
            if value != done:
                sys.exit(f"{role}: got {value}, expected {done}")
            done += 1
            if done == count:
                if role == "pong":
                    writer.write(value.to_bytes(8, "little"))
                break
            until = clock() + rng.randrange(40_000)
            while clock() < until:
                pass
            writer.write((value if role == "pong" else done).to_bytes(8, "little"))
        print("done", done, flush=True)


if __name__ == "__main__":
    main()
