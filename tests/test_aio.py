"""asyncio readers: aread, aframes, cancellation, the loop keeps running (real writer processes)."""

from __future__ import annotations

import asyncio
import json
import os
import select
from typing import Any

from conftest import Procs
from mmipc import Reader, Writer
from mmipc.journal._bell import IN_LOOP

END = 7


async def _ticker(ticks: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        ticks.append(loop.time())
        await asyncio.sleep(0.001)


def test_aread_waits_without_blocking_the_loop_and_times_out(jdir: str) -> None:
    async def main() -> tuple[object, int]:
        ticks: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(ticks, stop))
        async with Reader.create("ar", service=None) as reader:
            reader.add_journal(jdir, "quiet")
            frame = await reader.aread(timeout=0.3)
        stop.set()
        await ticker
        return frame, len(ticks)

    frame, ticks = asyncio.run(main())
    assert frame is None
    assert ticks > 10  # the ticker ran while the reader waited (~300 ticks unloaded)


def test_aframes_reads_a_flood_from_a_writer_process_while_the_loop_ticks(procs: Procs, jdir: str) -> None:
    async def main() -> tuple[list[int], int, int]:
        ticks: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(ticks, stop))
        got: list[int] = []
        async with Reader.create("af", service=None) as reader:
            reader.add_journal(jdir, "f0")
            reader.add_journal(jdir, "f1")
            await reader.aread(timeout=0.01)  # subscribed and listening before the writer starts
            writer = procs.spawn("bell_writer.py", jdir, "f0", "20000", "4", "f1")
            ticks_before = len(ticks)
            ended = 0
            async for frame in reader.aframes(timeout=120, every=64):
                if frame.msg_type == END:
                    ended += 1
                    if ended == 2:
                        break
                    continue
                got.append(int.from_bytes(frame.data, "little"))
            ticks_during = len(ticks) - ticks_before
        stop.set()
        await ticker
        writer.finish()
        return got, ticks_during, len(ticks)

    got, ticks_during, _ = asyncio.run(main())
    assert sorted(got) == sorted(list(range(20000)) * 2)
    assert ticks_during > 0  # the flood was read in slices: the ticker got its turns


def test_aframes_wakes_on_each_frame_and_is_cancellable(procs: Procs, jdir: str) -> None:
    async def main() -> list[bytes]:
        got: list[bytes] = []
        reader = Reader.create("ac", service=None)
        reader.add_journal(jdir, "c")

        async def consume() -> None:
            async for frame in reader.aframes():
                got.append(bytes(frame.data))

        task = asyncio.create_task(consume())
        with Writer.create(jdir, "c", service=None) as writer:
            for i in range(50):
                await _until(lambda: _sleeping(reader))
                writer.write(bytes([i]))
                await _until(lambda i=i: len(got) == i + 1)
        await _until(lambda: _sleeping(reader))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert not _sleeping(reader)  # cancelling cleared it and unregistered the FIFO
        await reader.aclose()
        return got

    assert asyncio.run(main()) == [bytes([i]) for i in range(50)]


async def _until(condition: object, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def _sleeping(reader: Reader) -> bool:
    bell = reader._merge.bell
    return bell is not None and int.from_bytes(bell.mm[12:16], "little") != 0


def test_a_reader_asleep_in_the_loop_announces_it_and_a_ring_wakes_it_through_its_fifo(jdir: str) -> None:
    """`sleeping` must read IN_LOOP while an `aread` waits, or a writer wakes the futex nobody waits
    on, writes no byte into the FIFO, and every wake-up waits for the nap (0.1 s; ring7's bell_sleep
    dropped `how` when it was passed the needy bytes too: a p50 of 50 ms in `mmipc bench`)."""

    async def main() -> tuple[int, bool, bytes]:
        with Writer.create(jdir, "loop", service=None) as writer:
            async with Reader.create("loop", service=None) as reader:
                reader.add_journal(jdir, "loop")
                bell = reader._merge.bell
                assert bell is not None
                waiting = asyncio.ensure_future(reader.aread())
                await _until(lambda: _sleeping(reader))
                how = int.from_bytes(bell.mm[12:16], "little")
                fifo = os.open(bell.path + ".fifo", os.O_RDONLY | os.O_NONBLOCK)
                try:
                    writer.write(b"rung")
                    rang = bool(select.select([fifo], [], [], 60)[0])  # the ring's byte, not a nap
                finally:
                    os.close(fifo)
                frame = await waiting
                assert frame is not None
                return how, rang, bytes(frame.data)

    assert asyncio.run(main()) == (IN_LOOP, True, b"rung")


def test_idle_aframes_reader_uses_almost_no_cpu(procs: Procs, jdir: str) -> None:
    code = f"""
import asyncio, json, resource
from mmipc import Reader
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime, u.ru_nvcsw
async def main():
    async with Reader.create("idle-aio", service=None) as reader:
        reader.add_journal({jdir!r}, "idle")
        before = cpu()
        n = 0
        async for _ in reader.aframes(timeout=5):
            n += 1
        (used, sleeps), (used0, sleeps0) = cpu(), before
        print(json.dumps({{"cpu": used - used0, "sleeps": sleeps - sleeps0, "frames": n}}), flush=True)
asyncio.run(main())
"""
    with Writer.create(jdir, "idle", service=None) as writer:
        writer.write(b"")
        child = procs.spawn_code(code)
        result = json.loads(child.finish(timeout=120))
    print(f"idle aframes reader: {result['cpu']:.4f} s of CPU, {result['sleeps']} sleeps over 5 s")
    assert result["frames"] == 1 and result["cpu"] < 0.25, result  # 5% of a core
    # Both backends wait on the loop (the FIFO): naps doubling from 0.1 s to 1.6 s are about 7
    # waits in 5 s (a fixed 0.1 s nap: 50). A count, not a time: load adds no wake-up.
    assert result["sleeps"] < 30, result
    assert not [f for f in os.listdir(jdir) if f.endswith(".fifo")]


def test_an_aframes_reader_without_its_fifo_does_not_wake_every_millisecond(procs: Procs, jdir: str) -> None:
    """A reader whose bell's FIFO cannot be made (a regular file at its path here; another user's
    file, a full /dev/shm) cannot be woken by a ring: it polled in 1 ms steps, about 3,000 wake-ups
    in 3 idle seconds, retrying the FIFO at each. Its steps now double up to 0.1 s while it finds
    nothing, and it says once why it is slower. Counted, not timed."""
    with Writer.create(jdir, "idle", service=None) as writer:
        writer.write(b"")
        reader = procs.spawn("bell_reader.py", jdir, "idle", "--idle", "3", "--aio", "--squat-fifo")
        result = json.loads(reader.finish(timeout=120).splitlines()[-1])
    assert result["frames"] == 1
    assert result["sleeps"] < 150, result
    said = [line for line in reader.stderr().splitlines() if ".fifo" in line]
    assert len(said) == 1 and "it is not a FIFO" in said[0] and "0.1 s" in said[0], reader.stderr()


def test_aframes_registers_its_fifo_once_across_waits_and_unregisters_it_at_its_end(jdir: str) -> None:
    async def main() -> tuple[list[bytes], list[int], list[int]]:
        loop = asyncio.get_running_loop()
        added: list[int] = []
        removed: list[int] = []
        add_reader, remove_reader = loop.add_reader, loop.remove_reader

        def spy_add(fd: int, *args: Any) -> None:
            added.append(fd)
            add_reader(fd, *args)

        def spy_remove(fd: int) -> bool:
            removed.append(fd)
            return remove_reader(fd)

        loop.add_reader, loop.remove_reader = spy_add, spy_remove  # type: ignore[method-assign,assignment]
        got: list[bytes] = []
        with Writer.create(jdir, "once", service=None) as writer:
            async with Reader.create("once", service=None) as reader:
                reader.add_journal(jdir, "once")
                frames = reader.aframes()
                for i in range(20):
                    next_frame = asyncio.ensure_future(frames.__anext__())
                    await _until(lambda: _sleeping(reader))
                    writer.write(bytes([i]))
                    got.append(bytes((await next_frame).data))
                assert len(added) == 1 and not removed  # one registration for all 20 waits
                await frames.aclose()  # type: ignore[attr-defined]
        return got, added, removed

    got, added, removed = asyncio.run(main())
    assert got == [bytes([i]) for i in range(20)]
    assert removed == added


def test_a_reader_closed_while_its_left_aframes_awaits_finalizing_leaves_the_loop_usable(jdir: str) -> None:
    """Leaving `async for` leaves the generator's cleanup to asyncio's finalizer, at a later turn
    of the loop; the reader is closed before that. Its registration is its own descriptor, so
    the descriptors opened next (which get the numbers the reader closed) register cleanly."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with Writer.create(jdir, "left", service=None) as writer:
            reader = Reader.create("left", service=None)
            reader.add_journal(jdir, "left")

            async def write_when_asleep() -> None:
                await _until(lambda: _sleeping(reader))
                writer.write(b"1")

            task = asyncio.ensure_future(write_when_asleep())
            async for _ in reader.aframes():
                break  # no turn of the loop from here to the registrations below
            reader.close()
            pipes = [os.pipe() for _ in range(8)]
            fired: list[int] = []
            try:
                for r, _ in pipes:
                    loop.add_reader(r, fired.append, r)  # a stale registration would clash
                for _, w in pipes:
                    os.write(w, b"x")
                await _until(lambda: len(set(fired)) == len(pipes))
            finally:
                for r, w in pipes:
                    loop.remove_reader(r)
                    os.close(r)
                    os.close(w)
            await task
        return sorted(set(fired))

    assert len(asyncio.run(main())) == 8
