"""A reader asleep in frames(wait="block") under a storm of SIGALRM (every 50 us), whose handler
sleeps in another reader's frames(wait="block") every tenth signal (not nested again), while a
writer process of its own writes COUNT numbered frames at random gaps. Prints the numbers read.

usage: signal_storm.py DIR COUNT            (the reader; it starts the writer)
       signal_storm.py DIR COUNT --write    (the writer)
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import time
from types import FrameType

from mmipc import Reader, Writer


def write(directory: str, count: int) -> None:
    rng = random.Random(13)
    with Writer.create(directory, "j", service=None) as writer:
        for i in range(count):
            writer.write(i.to_bytes(4, "little"))
            time.sleep(rng.choice((0, 0, 0.0001, 0.001, 0.01)))


def read(directory: str, count: int) -> None:
    Writer.create(directory, "j", service=None).close()
    Writer.create(directory, "k", service=None).close()
    reader, other = Reader.create("storm", service=None), Reader.create("storm-k", service=None)
    reader.add_journal(directory, "j")
    other.add_journal(directory, "k")
    signals, nested = 0, False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal signals, nested
        signals += 1
        if signals % 10 == 0 and not nested:  # one level: the storm interrupts this sleep too
            nested = True
            try:
                for _ in other.frames(timeout=0.0002):
                    pass
            finally:
                nested = False

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
    writer = subprocess.Popen([sys.executable, __file__, directory, str(count), "--write"])
    frames = reader.frames(timeout=30)
    got = [int.from_bytes(f.data, "little") for f in itertools.islice(frames, count)]
    got += [int.from_bytes(f.data, "little") for f in reader.frames(timeout=0.3)]  # none more
    signal.setitimer(signal.ITIMER_REAL, 0)
    if writer.wait() != 0:
        sys.exit("the writer failed")
    print(" ".join(map(str, got)))


if __name__ == "__main__":
    (write if "--write" in sys.argv else read)(sys.argv[1], int(sys.argv[2]))
