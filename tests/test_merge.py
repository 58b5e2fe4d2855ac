"""The merge of many journals on both backends (issue 16): page switches, journals that appear later,
damage, seek; live order and replay order against a sorted merge. Real page files; in-process writers
(one clock: a frame written after a read is later than every frame that read could see), and writer
processes on hundreds of journals, added and removed mid-stream, one of them killed and restarted."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from conftest import Procs
from mmipc import CorruptJournalError, Frame, Reader, Writer
from mmipc.journal._backend import native
from mmipc.journal._layout import PAGE_HEADER_SIZE

SMALL_PAGE = 64 * 1024  # a few hundred frames of 200 bytes: every journal switches pages


def _payload(journal: int, seq: int) -> bytes:
    return journal.to_bytes(4, "little") + seq.to_bytes(4, "little") + bytes(192)


def test_live_merge_over_page_switches_and_late_journals_is_sorted(jdir: str) -> None:
    rng = random.Random(16)
    names = [f"p{i:02}" for i in range(40)]
    late = set(names[-8:])  # added before their writer creates them: their first page comes later
    writers = {n: Writer.create(jdir, n, service=None, page_size=SMALL_PAGE) for n in names if n not in late}
    seqs = dict.fromkeys(names, 0)
    got: list[tuple[int, int, int]] = []
    with Reader.create("pm", service=None) as reader:
        for name in names:
            reader.add_journal(jdir, name)
        for step in range(6000):
            if step == 1500:
                writers.update({n: Writer.create(jdir, n, service=None, page_size=SMALL_PAGE) for n in late})
            name = rng.choice(list(writers))
            writers[name].write(_payload(names.index(name), seqs[name]))
            seqs[name] += 1
            for _ in range(rng.randrange(3)):
                frame = reader.read()
                if frame is not None:
                    got.append((frame.nano, *_decode(frame.data)))
        while len(got) < sum(seqs.values()):
            frame = reader.read()
            if frame is not None:
                got.append((frame.nano, *_decode(frame.data)))
        assert reader.read() is None
    for writer in writers.values():
        writer.close()
    assert [g[0] for g in got] == sorted(g[0] for g in got)  # live: never a step back in time
    per_journal: dict[int, list[int]] = {}
    for _, journal, seq in got:
        per_journal.setdefault(journal, []).append(seq)
    assert per_journal == {names.index(n): list(range(seqs[n])) for n in names}  # none lost, none twice
    with Reader.create("pm-replay", service=None) as replay:
        for name in names:
            replay.add_journal(jdir, name)
        replayed = [(f.nano, *_decode(f.data)) for f in iter(replay.read, None)]
    assert replayed == sorted(got, key=lambda g: (g[0], g[1]))  # ties: the journal added first


def _decode(data: memoryview) -> tuple[int, int]:
    return int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")


def test_a_damaged_frame_in_one_journal_raises_at_every_merged_read(jdir: str) -> None:
    writers = [Writer.create(jdir, name, service=None, page_size=SMALL_PAGE) for name in ("d0", "d1", "d2")]
    for payload in (b"first", b"second"):
        for writer in writers:
            writer.write(payload)
    for writer in writers:
        writer.close()
    path = os.path.join(jdir, "d1.00000000.journal")
    with open(path, "r+b") as f:  # d1's second frame: a payload length that disagrees with its length
        second = PAGE_HEADER_SIZE + 40
        f.seek(second + 20)
        f.write((999).to_bytes(4, "little"))
    with Reader.create("dm", service=None) as reader:
        for name in ("d0", "d1", "d2"):
            reader.add_journal(jdir, name)
        got: list[bytes] = []
        with pytest.raises(CorruptJournalError, match="d1.00000000.journal"):
            while (frame := reader.read()) is not None:
                got.append(bytes(frame.data))
        for _ in range(3):  # the merge stays put at the damage, and says so at every read
            with pytest.raises(CorruptJournalError, match="d1.00000000.journal"):
                reader.read()
        reader.remove_journal(jdir, "d1")
        rest = [bytes(f.data) for f in iter(reader.read, None)]
    assert sorted(got + rest) == [b"first"] * 3 + [b"second"] * 2


def test_seek_and_empty_reads_of_a_merge(jdir: str) -> None:
    writers = [Writer.create(jdir, f"s{i}", service=None, page_size=SMALL_PAGE) for i in range(20)]
    nanos = [writers[i % 20].write(i.to_bytes(4, "little")) for i in range(200)]
    with Reader.create("sm", service=None) as reader:
        for i in range(20):
            reader.add_journal(jdir, f"s{i}")
        assert [int.from_bytes(f.data, "little") for f in iter(reader.read, None)] == list(range(200))
        for _ in range(10_000):  # past the sweep every 4,096 empty reads: still nothing
            assert reader.read() is None
        reader.seek(nanos[150])
        assert [int.from_bytes(f.data, "little") for f in iter(reader.read, None)] == list(range(150, 200))
        writers[3].write(b"\xff\0\0\0")
        frame = reader.read()
        assert frame is not None and frame.journal.name == "s3"
    for writer in writers:
        writer.close()


def test_journals_whose_every_frame_ties_merge_in_the_order_they_were_added(jdir: str) -> None:
    """Copies of one journal's page files in 300 directories: every frame ties with 299 others on
    its timestamp, so each of the heap's choices (branchless in C) is decided by the order the
    journals were added, a shuffled one; one copy is removed mid-stream and added again, now last."""
    with Writer.create(jdir, "t", service=None, page_size=SMALL_PAGE) as writer:
        nanos = [writer.write(_payload(0, seq)) for seq in range(400)]  # over a page switch
    pages = [f for f in os.listdir(jdir) if f.endswith(".journal")]
    copies = [f"copy{k:03}" for k in range(300)]
    for copy in copies:
        os.mkdir(os.path.join(jdir, copy))
        for page in pages:
            shutil.copyfile(os.path.join(jdir, page), os.path.join(jdir, copy, page))
    order = random.Random(16).sample(copies, len(copies))
    with Reader.create("ties", service=None) as reader:
        for copy in order:
            reader.add_journal(os.path.join(jdir, copy), "t")
        got = [_tie(reader.read()) for _ in range(1000)]  # seq 0 to 2, and seq 3 of the first 100
        assert got == [(nanos[s], copy, s) for s in range(4) for copy in order][:1000]
        moved = order.pop(7)
        reader.remove_journal(os.path.join(jdir, moved), "t")
        reader.add_journal(os.path.join(jdir, moved), "t", start=nanos[4])
        rest = [_tie(frame) for frame in iter(reader.read, None)]
    want = [(nanos[3], copy, 3) for copy in order[99:]]
    want += [(nanos[s], copy, s) for s in range(4, 400) for copy in [*order, moved]]
    assert rest == want


def _tie(frame: Frame | None) -> tuple[int, str, int]:
    assert frame is not None
    return frame.nano, os.path.basename(frame.journal.directory), _decode(frame.data)[1]


@pytest.mark.skipif(native is None, reason="needs the C extension")
def test_native_merge_keeps_only_journals_with_a_frame_in_its_heap(jdir: str) -> None:
    writers = [Writer.create(jdir, f"h{i}", service=None, page_size=SMALL_PAGE) for i in range(64)]
    with Reader.create("hm", service=None) as reader:
        for i in range(64):
            reader.add_journal(jdir, f"h{i}")
        assert reader.read() is None and reader._merge.core.heaped == 0
        writers[5].write(b"a")
        writers[9].write(b"b")
        assert reader.read() is not None and reader._merge.core.heaped == 1
        assert reader.read() is not None and reader._merge.core.heaped == 0
    for writer in writers:
        writer.close()


END = 7


def test_writer_processes_on_200_journals_added_removed_and_killed_merge_exactly(
    procs: Procs, jdir: str
) -> None:
    """Issue 16's test list in one run of the polling `read()` path: four writer processes on 200
    journals (four busy ones cross page switches), 40 journals added mid-stream, 20 removed and
    added again from the beginning, and the writer of 60 killed with SIGKILL mid-stream and
    restarted. Live: every journal's frames exactly once, in order. Replay: a sorted merge."""
    names = [f"w{i:03}" for i in range(200)]
    busy, steady, killed, late = names[:4], names[4:100], names[100:160], names[160:]
    seen: dict[str, list[int]] = {name: [] for name in names}
    ended: set[str] = set()
    with Reader.create("mw", service=None) as reader:
        for name in names[:160]:
            reader.add_journal(jdir, name)
        page = str(SMALL_PAGE)
        writers = [
            procs.spawn("merge_writer.py", jdir, page, count, seed, "0", *group)
            for count, seed, group in (("5000", "1", busy), ("40", "2", steady), ("40", "3", late))
        ]
        forever = procs.spawn("merge_writer.py", jdir, page, "-1", "4", "20", *killed)
        restarted = None
        for n, frame in enumerate(reader.frames(timeout=120, wait="backoff")):
            name = frame.journal.name
            if frame.msg_type == END:
                ended.add(name)
                if len(ended) == len(names):
                    break
            else:
                seen[name].append(int.from_bytes(frame.data, "little"))
            if n == 2000:
                for added in late:
                    reader.add_journal(jdir, added)
            if n == 4000:
                for removed in steady[:20]:
                    reader.remove_journal(jdir, removed)
            if n == 6000:
                for again in steady[:20]:  # from the beginning: its frames come again, from 0
                    reader.add_journal(jdir, again)
                    seen[again].clear()
                    ended.discard(again)
            if restarted is None and sum(len(seen[k]) for k in killed) >= 2000:
                procs.kill9(forever)  # mid-stream: its last frame may be half-written, never committed
                restarted = procs.spawn("merge_writer.py", jdir, page, "30", "5", "0", *killed)
        for child in [*writers, restarted]:
            assert child is not None
            child.finish(timeout=120)
    assert ended == set(names)
    for name in names:
        assert seen[name] == list(range(len(seen[name]))), name  # none lost, none twice, in order
    assert [len(seen[n]) for n in busy + steady + late] == [5000] * 4 + [40] * 136
    assert all(len(seen[n]) >= 30 for n in killed) and sum(len(seen[n]) for n in killed) >= 2000 + 30 * 60
    with Reader.create("mw-replay", service=None) as replay:
        for name in names:
            replay.add_journal(jdir, name)
        merged = [(f.nano, names.index(f.journal.name), bytes(f.data)) for f in iter(replay.read, None)]
    assert merged == sorted(merged, key=lambda m: m[:2])  # timestamp, then the journal added first
    on_disk: dict[int, list[int]] = {}
    for _, journal, data in merged:
        if data:
            on_disk.setdefault(journal, []).append(int.from_bytes(data, "little"))
    assert {names[j]: seqs for j, seqs in on_disk.items()} == seen  # the restart repeated nothing
