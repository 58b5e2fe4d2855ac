"""Real writer and reader processes on real page files, including SIGKILL of the writer."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

import payloads

from conftest import Child, Procs
from mmipc import Reader

SMALL_PAGE = 64 * 1024


def _result(procs: Procs, reader: Child) -> dict[str, object]:
    out = procs.finish(reader)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_two_readers_see_every_frame_across_hundreds_of_page_switches(procs: Procs, jdir: str) -> None:
    readers = [procs.spawn("reader_proc.py", jdir, "ticks") for _ in range(2)]
    for reader in readers:
        procs.expect_line(reader, "ready")  # both follow a journal that does not exist yet
    writer = procs.spawn("writer_proc.py", jdir, "ticks", str(SMALL_PAGE), "60000", "--end")
    assert procs.finish(writer).split()[-1] == "60000"
    pages = [f for f in os.listdir(jdir) if f.endswith(".journal")]
    assert len(pages) >= 150, f"only {len(pages)} pages: the test must cross many page switches"
    for reader in readers:
        result = _result(procs, reader)
        assert result == {"counts": {"ticks": 60000}, "errors": []}


def test_readers_merge_three_live_writers(procs: Procs, jdir: str) -> None:
    names = ["md.a", "md.b", "md.c"]
    reader = procs.spawn("reader_proc.py", jdir, *names)
    procs.expect_line(reader, "ready")
    writers = [procs.spawn("writer_proc.py", jdir, n, str(SMALL_PAGE), "20000", "--end") for n in names]
    for writer in writers:
        procs.finish(writer)
    result = _result(procs, reader)
    assert result == {"counts": dict.fromkeys(names, 20000), "errors": []}
    # Replayed from disk, the merge is exactly the sorted merge of everything written.
    replay = Reader.create("replay")
    for name in names:
        replay.add_journal(jdir, name)
    merged = [(f.nano, names.index(f.journal.name)) for f in iter(replay.read, None)]
    assert len(merged) == 60003 and merged == sorted(merged)


def test_writer_killed_at_random_moments_resumes_without_gap_or_torn_frame(procs: Procs, jdir: str) -> None:
    rng = random.Random(os.environ.get("MMIPC_TEST_SEED", "crash"))
    readers = [procs.spawn("reader_proc.py", jdir, "crashy") for _ in range(2)]
    for reader in readers:
        procs.expect_line(reader, "ready")
    resumed_at = []
    for _ in range(30):
        writer = procs.spawn("writer_proc.py", jdir, "crashy", str(SMALL_PAGE), "-1")
        resumed_at.append(int(procs.expect_line(writer, "ready").split()[1]))
        time.sleep(rng.uniform(0.0, 0.08))  # a random kill moment, not a wait for a condition
        procs.kill9(writer)
    final = procs.spawn("writer_proc.py", jdir, "crashy", str(SMALL_PAGE), "100", "--end")
    resumed_at.append(int(procs.expect_line(final, "ready").split()[1]))
    total = int(procs.finish(final).split()[-1])
    assert resumed_at == sorted(resumed_at) and total == resumed_at[-1] + 100
    assert resumed_at[-1] > 0, "the killed writers must have committed frames"
    for reader in readers:
        assert _result(procs, reader) == {"counts": {"crashy": total}, "errors": []}
    # A fresh reader replays the whole crashed history from disk, intact.
    replay = Reader.create("replay")
    replay.add_journal(jdir, "crashy")
    frames = [bytes(f.data) for f in iter(replay.read, None) if f.msg_type == 1]

    assert [payloads.check(f) for f in frames] == list(range(total))


def test_writer_killed_inside_a_filled_claim_leaves_no_stale_bytes(procs: Procs, jdir: str) -> None:
    """The remains of an uncommitted 40 KB frame must never pass for later frames' commit words."""
    dying = procs.spawn(
        "writer_proc.py",
        jdir,
        "stale",
        str(SMALL_PAGE),
        "10",
        "--die-in-claim",
        "40000",
        stdin=subprocess.PIPE,
    )
    procs.expect_line(dying, "claimed")
    procs.kill9(dying)
    writer = procs.spawn("writer_proc.py", jdir, "stale", str(SMALL_PAGE), "20", "--end")
    assert procs.expect_line(writer, "ready") == "ready 10"
    procs.finish(writer)  # 21 small frames: the end of the journal lies inside the dead claim's bytes
    reader = Reader.create("after")
    reader.add_journal(jdir, "stale")
    frames = list(iter(reader.read, None))
    assert [payloads.check(f.data) for f in frames[:-1]] == list(range(30))
    assert frames[-1].msg_type == payloads.END_MSG and reader.read() is None
