"""A blocking reader process for the doorbell tests.

usage: bell_reader.py DIR NAME [NAME ...] [--idle SECONDS [--aio]] [--spin] [--squat-fifo]
Follows the journals with `wait=Block(spin=0, max_nap=None)`: it sleeps on its doorbell whenever
it has caught up and has no timeout backstop, so one lost wake-up hangs it. Prints "ready" once
subscribed, then, after every journal has sent its end marker, one JSON line {"counts": {name: n},
"errors": [...], "wakes": n (wake-ups from sleep)} (payloads are the per-journal sequence number, 8 bytes LE).
--idle S: read with frames(timeout=S) instead and print {"cpu": seconds of CPU used meanwhile,
"sleeps": voluntary context switches meanwhile (each wait that sleeps is one)}; with --aio, with
`async for` over aframes(timeout=S).
--spin: never sleep (wait="spin"): a reader that stays awake and keeps up.
--squat-fifo: put a regular file where the bell's FIFO goes before the first wait: a reader that
cannot have its FIFO (another user's file there, a full /dev/shm, ...).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys

from mmipc import Block, Reader
from mmipc.journal._backend import native

END = 7


def cpu() -> tuple[float, int]:
    """(CPU seconds used, voluntary context switches) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


def main() -> None:
    args = sys.argv[1:]
    idle = None
    spin, aio, squat = "--spin" in args, "--aio" in args, "--squat-fifo" in args
    for flag in ("--spin", "--aio", "--squat-fifo"):
        if flag in args:
            args.remove(flag)
    if "--idle" in args:
        at = args.index("--idle")
        idle = float(args[at + 1])
        del args[at : at + 2]
    directory, names = args[0], args[1:]
    reader = Reader.create(f"bell-{os.getpid()}", service=None)
    for name in names:
        reader.add_journal(directory, name)
    bell = reader._merge.bell
    if squat and bell is not None:
        open(bell.path + ".fifo", "x").close()
    print("ready", flush=True)
    if idle is not None:
        before = cpu()
        if aio:
            frames = asyncio.run(_count_aframes(reader, idle))
        else:
            frames = sum(1 for _ in reader.frames(timeout=idle, wait="block"))
        after = cpu()
        print(
            json.dumps({"cpu": after[0] - before[0], "sleeps": after[1] - before[1], "frames": frames}),
            flush=True,
        )
        return
    counts = dict.fromkeys(names, 0)
    errors: list[str] = []
    ended: set[str] = set()
    before = cpu()
    for frame in reader.frames(wait="spin" if spin else Block(spin=0, max_nap=None)):
        name = frame.journal.name
        if frame.msg_type == END:
            ended.add(name)
            if ended == set(names):
                break
            continue
        seq = int.from_bytes(frame.data, "little")
        if seq != counts[name] and len(errors) < 20:
            errors.append(f"{name}: got {seq}, expected {counts[name]}")
        counts[name] = seq + 1
    bell = reader._merge.bell
    # native: the writers bump the futex word once per wake-up; the pure-Python reader waits on its
    # FIFO (woken by a byte, the word untouched): each of its waits that slept is a voluntary switch
    wakes = 0 if bell is None else bell.word() if native is not None else cpu()[1] - before[1]
    print(json.dumps({"counts": counts, "errors": errors, "wakes": wakes}), flush=True)


async def _count_aframes(reader: Reader, idle: float) -> int:
    frames = 0
    async for _ in reader.aframes(timeout=idle):
        frames += 1
    return frames


if __name__ == "__main__":
    main()
