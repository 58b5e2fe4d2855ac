"""A seeded random walk over one merging reader, for the differential fuzz (tests/test_red_team_5.py).

Usage: merge_fuzz.py DIR SEED JOURNALS STEPS [durable]. Writers (one per journal, in this process) stamp their
frames with `write_at` at random times (equal ones, and earlier than other journals' frames); the
reader adds and removes journals, reads with read / read_data / read_batch and seeks. Every step
also runs on a model of the documented order (smallest timestamp, ties to the journal added
first, append order within a journal). Prints one JSON line: what the reader returned, and what
the model says it should have, step by step.

With `durable` the reader is durable (commit_every None, or every 1, 3 or 7 frames) and the walk
also commits, restarts the reader (close, then a new one resuming every journal) and takes frames
from `frames(wait=Block(spin=0))`, the blocking wait's own read; the model keeps the committed
position of every journal (an index into its frames) as the documented rules say.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time

from mmipc import Block, Reader, Writer
from mmipc.journal._cursor import PROBE_INTERVAL_NS


class Model:
    """The documented merge: each followed journal's next index, and its add counter."""

    def __init__(self, every: int | None = None, durable: bool = False) -> None:
        self.every, self.durable = every, durable
        self.count = 0  # frames since the last automatic commit (a new count when the reader restarts)
        self.committed: dict[int, int] = {}  # journal -> the index it resumes at
        self.frames: dict[int, list[tuple[int, int]]] = {}  # journal -> [(nano, seq)]
        self.at: dict[int, int] = {}
        self.order: dict[int, int] = {}
        self.waiting: dict[int, int] = {}  # journal with no page at a seek -> the seek's time
        self.counter = 0

    def add(self, j: int) -> None:
        self.at[j] = self.committed.get(j, 0) if self.durable else 0
        self.waiting.pop(j, None)
        self.order[j] = self.counter
        self.counter += 1

    def remove(self, j: int) -> None:
        del self.at[j], self.order[j]
        self.waiting.pop(j, None)

    def commit(self) -> None:
        """A journal whose cursor has no page (a seek before its first frame, not read since)
        keeps its committed position, or is committed at its start."""
        for j, i in self.at.items():
            self.committed[j] = self.committed.get(j, 0) if j in self.waiting else i

    def restart(self) -> None:
        self.commit()
        followed = sorted(self.at, key=self.order.__getitem__)
        for j in followed:
            self.remove(j)
        for j in followed:
            self.add(j)
        self.count = 0

    def _commit_due(self) -> None:
        if self.every is not None and self.count >= self.every:
            self.commit()
            self.count = 0

    def read(self) -> list[int] | None:
        """One `read()` call: an automatic commit if due, before it."""
        self._commit_due()
        got = self.read_one()
        self.count += got is not None
        return got

    def batch(self, limit: int) -> list[list[int]]:
        """One `read_batch(limit)`: an automatic commit if due before it, never inside it."""
        self._commit_due()
        out: list[list[int]] = []
        while len(out) < limit and (w := self.read_one()) is not None:
            out.append(w)
        self.count += len(out)
        return out

    def seek(self, nano: int) -> None:
        """A journal with no page keeps the time: its cursor is placed there when the page appears
        (at the next read), so it skips frames older than `nano` written meanwhile."""
        for j in self.at:
            self.at[j] = sum(1 for n, _ in self.frames.get(j, []) if n < nano)
            if self.frames.get(j):
                self.waiting.pop(j, None)  # placed now: an earlier seek's time no longer applies
            else:
                self.waiting[j] = nano

    def read_one(self) -> list[int] | None:
        for j in [j for j in self.waiting if self.frames.get(j)]:
            nano = self.waiting.pop(j)
            self.at[j] = sum(1 for n, _ in self.frames[j] if n < nano)
        best: tuple[int, int, int] | None = None
        for j, i in self.at.items():
            frames = self.frames.get(j, [])
            if i < len(frames) and (best is None or (frames[i][0], self.order[j]) < best[:2]):
                best = (frames[i][0], self.order[j], j)
        if best is None:
            return None
        j = best[2]
        nano, seq = self.frames[j][self.at[j]]
        self.at[j] += 1
        return [nano, j, seq]


def _decode(nano: int, data: memoryview | bytes) -> list[int]:
    return [nano, int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")]


def main() -> None:
    directory, seed, count, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    durable = sys.argv[5:] == ["durable"]
    rng = random.Random(seed)
    every = rng.choice((None, 1, 3, 7)) if durable else None
    cursor_dir = os.path.join(directory, "cursors")
    names = [f"f{j:03}" for j in range(count)]
    writers: dict[int, Writer] = {}
    last = dict.fromkeys(range(count), 1)  # 0 is no timestamp (write_at refuses it)
    model = Model(every, durable)
    got: list[object] = []
    created = 0
    want: list[object] = []

    def open_reader() -> Reader:
        if not durable:
            return Reader.create(f"fuzz{seed}", service=None)
        return Reader.create(
            f"fuzz{seed}", service=None, durable=True, cursor_dir=cursor_dir, commit_every=every
        )

    reader = open_reader()
    ops = ["write", "write", "write", "read", "read", "data", "batch", "add", "remove", "seek"]
    if durable:
        ops += ["block", "block", "commit", "restart"]
    for step in range(steps):
        op = rng.choice(ops)
        if step == steps // 2 and rng.random() < 0.5:
            op = "remove_all"
        if op == "write":
            for _ in range(rng.randrange(1, 8)):
                j = rng.randrange(count)
                if j not in writers:  # a journal that appears later (added before, or never)
                    writers[j] = Writer.create(directory, names[j], service=None, page_size=64 * 1024)
                    created = time.monotonic_ns()
                nano = last[j] + rng.choice((0, 0, 1, 2, 5, 1000))  # equal, and behind other journals'
                last[j] = nano
                seq = len(model.frames.setdefault(j, []))
                writers[j].write_at(
                    j.to_bytes(4, "little") + seq.to_bytes(4, "little") + bytes(rng.randrange(60)), nano
                )
                model.frames[j].append((nano, seq))
            while time.monotonic_ns() < created + PROBE_INTERVAL_NS:  # a cursor with no page looks
                time.sleep(0.0002)  # for it at most once per interval (_cursor.py): let one pass
        elif op in ("read", "data"):
            for _ in range(rng.randrange(1, 6)):
                if op == "read":
                    frame = reader.read()
                    got.append(None if frame is None else _decode(frame.nano, frame.data))
                else:
                    data = reader.read_data()
                    got.append(None if data is None else _decode(-1, data)[1:])
                w = model.read()
                want.append(w if op == "read" or w is None else w[1:])
        elif op == "batch":
            limit = rng.randrange(1, 40)
            got.append([_decode(f.nano, f.data) for f in reader.read_batch(limit)])
            want.append(model.batch(limit))
        elif op == "block":  # the re-check read inside the blocking wait, and its time-out
            limit = rng.randrange(1, 10)
            frames = reader.frames(timeout=0.002, wait=Block(spin=0))
            got.append([_decode(f.nano, f.data) for f in itertools.islice(frames, limit)])
            want.append(_model_frames(model, limit))
        elif op == "commit":
            reader.commit()
            model.commit()
        elif op == "restart":
            followed = reader.journals
            reader.close()
            reader = open_reader()
            for jid in followed:
                reader.add_journal(jid.directory, jid.name)
            model.restart()
        elif op == "add":
            free = [j for j in range(count) if j not in model.at]
            if free:
                j = rng.choice(free)
                reader.add_journal(directory, names[j])
                model.add(j)
        elif op == "remove" and model.at:
            j = rng.choice(list(model.at))
            reader.remove_journal(directory, names[j])
            model.remove(j)
        elif op == "remove_all":
            for j in list(model.at):
                reader.remove_journal(directory, names[j])
                model.remove(j)
        elif op == "seek":
            nano = rng.randrange(max(last.values()) + 2)
            reader.seek(nano)
            model.seek(nano)
        got.append(f"step {step} {op}")
        want.append(f"step {step} {op}")
    for j in range(count):  # the end: every journal followed, everything left drained
        if j not in model.at:
            reader.add_journal(directory, names[j])
            model.add(j)
    got.extend(_decode(f.nano, f.data) for f in iter(reader.read, None))
    want.extend(iter(model.read, None))
    reader.close()
    for writer in writers.values():
        writer.close()
    print(json.dumps({"got": got, "want": want}))


def _model_frames(model: Model, limit: int) -> list[list[int]]:
    """`limit` frames of `frames()`: one read call each (an automatic commit before any of them)."""
    out: list[list[int]] = []
    while len(out) < limit and (w := model.read()) is not None:
        out.append(w)
    return out


if __name__ == "__main__":
    main()
