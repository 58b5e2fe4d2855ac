"""The C API (mmipc.h) through the C examples, built here with -Wall -Wextra -Werror and run as real
processes on real page files: C writer to C reader, a SIGKILLed C writer resumed, v1 journals of the
Python writer read by C, the v2 bytes checked against the written format, and a sanitizer run."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Child, Procs, wait_for
from journal_bytes import check_v2_journal, read_journal
from mmipc import JournalLockedError, Reader, Writer
from mmipc.journal import _backend as backend
from mmipc.journal._bell import SLEEPING
from mmipc.journal._layout import VERSION

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "src" / "mmipc" / "journal" / "_native"
EXAMPLES = ROOT / "examples" / "c"
BENCH = ROOT / "src" / "mmipc" / "bench"  # c_bench.c: mmipc bench's peer mmipc-c builds it too
SMALL_PAGE = 64 * 1024
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]


def _build(out: Path, extra: list[str]) -> dict[str, str]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C API and its examples cannot be built here")
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for prog in ("ctp_writer", "ctp_reader", "c_bench"):
        target = out / prog
        source = BENCH / "c_bench.c" if prog == "c_bench" else EXAMPLES / f"{prog}.c"
        cmd = [gcc, *WARNINGS, *extra, f"-I{NATIVE}", "-o", str(target), str(source)]
        subprocess.run([*cmd, str(NATIVE / "mmipc.c")], check=True, capture_output=True, text=True)
        built[prog] = str(target)
    return built


@pytest.fixture(scope="session")
def c_progs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _build(tmp_path_factory.mktemp("cbuild"), ["-O2"])


def _run(procs: Procs, *cmd: str) -> Child:
    child = Child(list(cmd))
    procs.started.append(child)
    return child


def _read_all(progs: dict[str, str], jdir: str, count: int, *names: str, dump: bool = True) -> list[str]:
    args = [progs["ctp_reader"], *(["--dump"] if dump else []), jdir, str(count), *names]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ready" and lines[-1] == f"read {count} errors 0", lines[-1]
    return [line for line in lines if line.startswith("frame ")]


def test_c_writer_feeds_live_c_readers_across_many_page_switches(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    readers = [_run(procs, c_progs["ctp_reader"], jdir, "20000", "md") for _ in range(2)]
    for reader in readers:
        reader.expect_line("ready")  # the journal does not exist yet
    writer = _run(procs, c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md", "20000")
    assert writer.finish().split()[-2:] == ["wrote", "20000"]
    for reader in readers:
        assert reader.finish().split()[-4:] == ["read", "20000", "errors", "0"]
    pages = read_journal(jdir, "md")
    assert len(pages) > 100, "the test must cross many page switches"
    assert check_v2_journal(pages) == list(range(20000))
    assert all(p.zero_after_end for p in pages)


def test_c_journal_bytes_follow_the_v2_format_with_checksums(c_progs: dict[str, str], jdir: str) -> None:
    subprocess.run([c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md", "300"], check=True)
    args = [c_progs["ctp_writer"], "--checksum", "--page-size", str(SMALL_PAGE), jdir, "md", "300"]
    subprocess.run(args, check=True, capture_output=True)
    pages = read_journal(jdir, "md")
    assert [p.page_no for p in pages] == list(range(len(pages)))
    assert pages[0].first_seq == 0 and pages[0].flags == 0 and pages[-1].flags == 1
    assert check_v2_journal(pages) == list(range(600))
    frames = [f for p in pages for f in p.frames if f[1] != 0xFFFF_FFFF]
    assert {(f[1], f[3], f[4]) for f in frames} == {(1, 7, 408)}
    nanos = [f[2] for f in frames]
    assert nanos == sorted(nanos)
    assert all(os.stat(p.path).st_mode & 0o777 == 0o600 for p in pages)
    dumped = _read_all(c_progs, jdir, 600, "md")
    assert [int(line.split()[7]) for line in dumped] == [zlib.crc32(f[7]) for f in frames]


def test_sigkilled_c_writer_resumes_without_gap_or_torn_frame(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    resumed_at = []
    for round_no in range(12):
        args = ["--checksum"] if round_no % 2 else []
        writer = _run(procs, c_progs["ctp_writer"], *args, "--page-size", str(SMALL_PAGE), jdir, "md", "-1")
        resumed_at.append(int(writer.expect_line("ready").split()[1]))
        wait_for(_grows(jdir), what="the writer to fill a page")  # then kill it mid-stream
        writer.kill9()
    final = _run(procs, c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md", "100")
    resumed_at.append(int(final.expect_line("ready").split()[1]))
    final.finish()
    total = resumed_at[-1] + 100
    assert resumed_at == sorted(resumed_at) and resumed_at[-1] > 0
    assert check_v2_journal(read_journal(jdir, "md")) == list(range(total))
    dumped = _read_all(c_progs, jdir, total, "md")  # every tick compared byte for byte by the reader
    assert [int(line.split()[3]) for line in dumped] == list(range(total))


def _grows(jdir: str) -> Callable[[], bool]:
    files_then = len(os.listdir(jdir))
    return lambda: len(os.listdir(jdir)) > files_then + 1


def test_c_writer_killed_inside_a_filled_claim_leaves_no_stale_bytes(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    args = ["--page-size", str(SMALL_PAGE), "--die-in-claim", "40000", jdir, "md", "10"]
    dying = _run(procs, c_progs["ctp_writer"], *args)
    dying.expect_line("claimed")
    dying.kill9()
    writer = _run(procs, c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md", "90")
    assert writer.expect_line("ready") == "ready 10"
    writer.finish()  # 90 small frames end inside the dead claim's 0xAB bytes
    assert check_v2_journal(read_journal(jdir, "md")) == list(range(100))
    assert len(_read_all(c_progs, jdir, 100, "md")) == 100


def test_c_reader_reads_journals_of_the_python_writer(c_progs: dict[str, str], jdir: str) -> None:
    written = []
    with Writer.create(jdir, "py", page_size=SMALL_PAGE, service=None) as writer:
        for i in range(3000):
            payload = os.urandom(i % 300)
            msg_type = 2 + i % 5  # not 1: ctp_reader checks numbered frames of msg_type 1 as its own ticks
            nano = writer.write(payload, msg_type=msg_type, source=i)
            written.append((nano, msg_type, i, zlib.crc32(payload)))
    pages = read_journal(jdir, "py")
    assert len(pages) > 5
    data = [line.split() for line in _read_all(c_progs, jdir, 3000, "py")]  # end markers are not frames
    assert [(int(d[2]), int(d[4]), int(d[5]), int(d[7])) for d in data] == written
    # v1 pages (the Python writer before format v2) carry no sequence numbers.
    expected_seqs = [-1] * 3000 if pages[0].version == 1 else list(range(3000))
    assert [int(d[3]) for d in data] == expected_seqs


def test_c_writer_finishes_a_v1_page_in_v1_then_numbers_from_zero(c_progs: dict[str, str], jdir: str) -> None:
    with Writer.create(jdir, "md", page_size=SMALL_PAGE, service=None) as writer:
        for _ in range(5):
            writer.write(b"python frame")
    if read_journal(jdir, "md")[0].version != 1:
        pytest.skip("the Python writer writes v2 now: no v1 page to resume")
    subprocess.run([c_progs["ctp_writer"], jdir, "md", "300"], check=True, capture_output=True)
    pages = read_journal(jdir, "md")
    assert [p.version for p in pages] == [1] + [2] * (len(pages) - 1) and len(pages) > 1
    v1_ticks = sum(1 for f in pages[0].frames if f[1] == 1)
    assert check_v2_journal(pages) == list(range(300 - v1_ticks))
    seqs = [line.split()[3] for line in _read_all(c_progs, jdir, 5 + 300, "md")]
    assert seqs == ["-1"] * (5 + v1_ticks) + [str(s) for s in range(300 - v1_ticks)]


def test_c_merge_orders_three_journals_and_breaks_ties_by_order_added(
    c_progs: dict[str, str], jdir: str
) -> None:
    for name in ("a", "b", "c"):
        subprocess.run([c_progs["ctp_writer"], jdir, name, "2000"], check=True, capture_output=True)
    dumped = [line.split() for line in _read_all(c_progs, jdir, 6000, "c", "a", "b")]
    keys = [(int(d[2]), int(d[1])) for d in dumped]
    assert keys == sorted(keys)  # timestamp order; equal timestamps by the journal added first
    assert sorted(int(d[1]) for d in dumped) == [0] * 2000 + [1] * 2000 + [2] * 2000


def test_c_merge_of_200_journals_equals_a_sorted_merge_live_and_in_replay(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    """mmipc_merge_read's heap: a live C reader started before the journals exist gets every frame
    of 200 journals once, in each journal's order; a replay equals the sorted merge exactly."""
    rng = random.Random(200)
    names = [f"m{i:03}" for i in range(200)]
    weights = [40.0] * 5 + [1.0] * 195  # five busy journals cross page switches, the rest are quiet
    live = _run(procs, c_progs["ctp_reader"], "--dump", jdir, "12000", *names)
    live.expect_line("ready")
    writers = [Writer.create(jdir, name, service=None, page_size=SMALL_PAGE) for name in names]
    written: list[tuple[int, int, int, int]] = []  # (nano, journal, seq, crc32 of the payload)
    seqs = [0] * len(names)
    for journal in rng.choices(range(len(names)), weights, k=12000):
        payload = journal.to_bytes(4, "little") + seqs[journal].to_bytes(4, "little") + bytes(56)
        nano = writers[journal].write(payload)
        written.append((nano, journal, seqs[journal], zlib.crc32(payload)))
        seqs[journal] += 1
    for writer in writers:
        writer.close()
    out = live.finish().splitlines()
    assert out[-1] == "read 12000 errors 0"
    assert max(seqs) * 96 > SMALL_PAGE, "the busy journals must switch pages"
    got = [_dumped(line) for line in out if line.startswith("frame ")]
    assert sorted(got, key=lambda g: (g[1], g[2])) == sorted(written, key=lambda w: (w[1], w[2]))
    for journal in range(len(names)):  # live: each journal in its own order, none lost or twice
        assert [g[2] for g in got if g[1] == journal] == list(range(seqs[journal]))
    replayed = [_dumped(line) for line in _read_all(c_progs, jdir, 12000, *names)]
    assert replayed == sorted(written)  # timestamp, then the journal added first


def _dumped(line: str) -> tuple[int, int, int, int]:
    """(nano, journal, seq, crc32) of a `ctp_reader --dump` line."""
    fields = line.split()
    return int(fields[2]), int(fields[1]), int(fields[3]), int(fields[7])


def test_c_writer_and_python_writer_exclude_each_other(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    writer = _run(procs, c_progs["ctp_writer"], "--die-in-claim", "8", jdir, "md", "1")
    writer.expect_line("claimed")
    with pytest.raises(JournalLockedError, match=f"pid {writer.pid} holds"):
        Writer.create(jdir, "md", service=None)
    writer.kill9()
    with Writer.create(jdir, "py", service=None):
        done = subprocess.run([c_progs["ctp_writer"], jdir, "py", "1"], capture_output=True, text=True)
        assert done.returncode == 1 and f"pid {os.getpid()} holds" in done.stderr
        assert done.stderr.count("\n") == 1, "one line naming the problem"


def test_c_reader_reports_a_corrupt_frame_in_one_line(c_progs: dict[str, str], jdir: str) -> None:
    subprocess.run([c_progs["ctp_writer"], "--checksum", jdir, "md", "10"], check=True, capture_output=True)
    path = os.path.join(jdir, "md.00000000.journal")
    with open(path, "r+b") as f:  # flip a payload byte of the fourth frame
        f.seek(4096 + 3 * 440 + 32 + 100)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    done = subprocess.run([c_progs["ctp_reader"], jdir, "10", "md"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout.splitlines() == ["ready"]
    assert done.stderr.startswith(f"ctp_reader: corrupt journal page {path} at offset {4096 + 3 * 440}:")
    assert "checksum" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.once  # .ci/run: in its native pass only (C alone, no Python backend involved)
def test_c_core_runs_clean_under_address_and_undefined_sanitizers(
    tmp_path: Path, procs: Procs, jdir: str
) -> None:
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    try:
        progs = _build(tmp_path / "asan", flags)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"this gcc cannot build with ASan/UBSan: {exc.stderr.strip()[:200]}")
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
    dying = Child(
        [progs["ctp_writer"], "--page-size", str(SMALL_PAGE), "--die-in-claim", "30000", jdir, "md", "500"],
        env=env,
    )
    procs.started.append(dying)
    dying.expect_line("claimed")
    dying.kill9()
    for args in (["--checksum"], []):
        done = subprocess.run(
            [progs["ctp_writer"], *args, "--page-size", str(SMALL_PAGE), jdir, "md", "3000"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
    for start in (["--at", "1"], ["--end"], []):
        count = "0" if start == ["--end"] else "6500"
        done = subprocess.run(
            [progs["ctp_reader"], *start, jdir, count, "md"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert done.stdout.splitlines()[-1] == f"read {count} errors 0"


@pytest.mark.skipif(VERSION < 2, reason="the Python reader reads format v2 once the Python v2 work lands")
def test_python_reader_reads_the_c_writers_journal(c_progs: dict[str, str], jdir: str) -> None:
    args = [c_progs["ctp_writer"], "--checksum", "--page-size", str(SMALL_PAGE), jdir, "md", "500"]
    subprocess.run(args, check=True, capture_output=True)
    on_disk = [f for p in read_journal(jdir, "md") for f in p.frames if f[1] != 0xFFFF_FFFF]
    reader = Reader.create("py-reads-c", service=None)
    reader.add_journal(jdir, "md")
    frames = list(iter(reader.read, None))
    assert [(f.nano, f.msg_type, f.source, bytes(f.data)) for f in frames] == [
        (f[2], f[1], f[3], f[7]) for f in on_disk
    ]
    assert [tuple(f)[5] for f in frames] == list(range(500))  # Frame.seq, the sixth field in v2


def test_c_cursor_seeks_by_timestamp_through_pages_and_time_index(c_progs: dict[str, str], jdir: str) -> None:
    subprocess.run(
        [c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md", "3000"],
        check=True,
        capture_output=True,
    )
    nanos = [int(line.split()[2]) for line in _read_all(c_progs, jdir, 3000, "md")]
    for k in (0, 1, 137, 138, 1500, 2999):
        first = nanos.index(nanos[k])  # the first frame at or after that timestamp
        args = [c_progs["ctp_reader"], "--dump", "--at", str(nanos[k]), jdir, str(3000 - first), "md"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
        dumped = [line.split() for line in done.stdout.splitlines() if line.startswith("frame ")]
        assert int(dumped[0][3]) == first and len(dumped) == 3000 - first
    # Past the last frame is a valid position (a live reader would wait there), not an error.
    after = subprocess.run(
        [c_progs["ctp_reader"], "--at", str(nanos[-1] + 1), jdir, "0", "md"], capture_output=True, text=True
    )
    assert after.returncode == 0 and after.stdout.splitlines()[-1] == "read 0 errors 0"


def _damage(path: str, how: str) -> None:
    if how == "symlink":
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)
        return
    if how == "truncated":
        os.truncate(path, 8192)
        return
    offset, value = {
        "magic": (0, b"NOTMMIPC"),
        "version": (8, struct.pack("<H", 3)),
        "header_size": (10, struct.pack("<H", 512)),
        "flags": (12, struct.pack("<I", 6)),
        "page_size": (16, struct.pack("<Q", 12345)),
        "page_no": (24, struct.pack("<Q", 7)),
        "name": (56, b"other"),
        "frame_length": (4096, struct.pack("<I", 8)),
        "frame_room": (4096, struct.pack("<I", 32 + 40_000_000)),  # the page is 32 MiB
    }[how]
    if how == "frame_room":
        with open(path, "r+b") as f:
            f.seek(4096 + 20)
            f.write(struct.pack("<I", 40_000_000))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value)


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("magic", "bad magic"),
        ("version", "format version 3 is not supported"),
        ("header_size", "header size"),
        ("flags", "unknown page flags"),
        ("page_size", "page size is out of range"),
        ("page_no", "header names another page"),
        ("name", "header names another page"),
        ("truncated", "file size disagrees"),
        ("symlink", "symbolic link"),
        ("frame_length", "frame length disagrees with payload length"),
        ("frame_room", "runs past the page end"),
    ],
)
def test_c_reader_reports_damaged_pages_in_one_line(
    c_progs: dict[str, str], jdir: str, how: str, problem: str
) -> None:
    subprocess.run([c_progs["ctp_writer"], jdir, "md", "5"], check=True, capture_output=True)
    path = os.path.join(jdir, "md.00000000.journal")
    _damage(path, how)
    done = subprocess.run(
        [c_progs["ctp_reader"], jdir, "5", "md"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert (
        done.stderr.startswith(f"ctp_reader: corrupt journal page {path} at offset ")
        and problem in done.stderr
    )


@pytest.mark.parametrize(
    "how", ["magic", "version", "flags", "truncated", "symlink", "frame_length", "frame_room"]
)
def test_c_writer_refuses_to_resume_on_a_damaged_page_in_one_line(
    c_progs: dict[str, str], jdir: str, how: str
) -> None:
    subprocess.run([c_progs["ctp_writer"], jdir, "md", "5"], check=True, capture_output=True)
    path = os.path.join(jdir, "md.00000000.journal")
    _damage(path, how)
    done = subprocess.run(
        [c_progs["ctp_writer"], jdir, "md", "5"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"ctp_writer: corrupt journal page {path} at offset ")


@pytest.mark.parametrize("trap", ['trap "" XFSZ; ', ""], ids=["xfsz-ignored", "xfsz-default"])
def test_c_writer_on_a_full_disk_fails_in_one_line_and_keeps_every_frame(
    c_progs: dict[str, str], jdir: str, trap: str
) -> None:
    """RLIMIT_FSIZE stands in for a full disk. A C program that does not ignore SIGXFSZ (the default)
    was killed by posix_fallocate past the limit, leaving its .tmp page: the core checks first."""
    writer = [c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md"]
    subprocess.run([*writer, "5"], check=True, capture_output=True)
    limited = trap + 'ulimit -f 32; exec "$@"'  # 32 KiB: no new 64 KiB page fits
    done = subprocess.run(["bash", "-c", limited, "bash", *writer, "1000"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot create page" in done.stderr and "every frame already written is intact" in done.stderr
    assert not [f for f in os.listdir(jdir) if f.endswith(".tmp")], "no half-made page is left"
    pages = read_journal(jdir, "md")
    total = len(check_v2_journal(pages))
    assert len(pages) == 1 and total > 100 and pages[0].zero_after_end
    assert len(_read_all(c_progs, jdir, total, "md")) == total


def test_c_writer_rings_a_blocking_python_reader(c_progs: dict[str, str], procs: Procs, jdir: str) -> None:
    # No backstop (max_nap=None): if the C writer did not ring, the reader would sleep forever.
    # The journal starts as a Python writer's v1 page, which the C writer finishes in v1 (until
    # the Python reader reads v2).
    with Writer.create(jdir, "rung", service=None) as first:
        first.write(b"from python")
    code = (
        "import sys\n"
        "from mmipc import Block, Reader\n"
        "reader = Reader.create('c-bell', service=None)\n"
        f"reader.add_journal({jdir!r}, 'rung')\n"
        "print('ready', reader._merge.bell.path, flush=True)\n"
        "n = 0\n"
        "for frame in reader.frames(wait=Block(spin=0, max_nap=None)):\n"
        "    n += 1\n"
        "    if n == 5001:\n"
        "        break\n"
        "print('read', n, 'wakes', reader._merge.bell.word(), flush=True)\n"
    )
    reader = procs.spawn_code(code)
    bell = reader.expect_line("ready").split()[1]
    # Start the writer only once the reader sleeps on its futex (or FIFO): a writer that finished before the
    # reader first slept (a loaded machine) would have had nobody to ring.
    wait_for(lambda: _bell_sleeping(bell), what="the reader to sleep on its bell")
    writer = _run(procs, c_progs["ctp_writer"], jdir, "rung", "5000")
    assert writer.finish().split()[-2:] == ["wrote", "5000"]
    out = reader.finish(timeout=120).split()
    assert out[:2] == ["read", "5001"]  # asleep with no nap: only rings woke it
    if backend.native is not None:  # the pure-Python reader waits on its FIFO: the word stays
        assert int(out[3]) >= 1  # woken through the futex at least once


def _bell_sleeping(path: str) -> bool:
    """The bell's `sleeping` word is set: its reader has announced it waits on the futex."""
    with open(path, "rb") as f:
        return bool(struct.unpack_from("<I", f.read(SLEEPING + 4), SLEEPING)[0] != 0)


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file of another user")
def test_c_writer_refuses_a_lock_file_owned_by_another_user_and_leaves_it(
    c_progs: dict[str, str], jdir: str
) -> None:
    lock = Path(jdir) / "md.lock"
    lock.write_bytes(b"planted\n")
    os.chown(lock, NOBODY, NOBODY)
    done = subprocess.run(
        [c_progs["ctp_writer"], jdir, "md", "1"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and f"owned by uid {NOBODY}" in done.stderr and str(lock) in done.stderr
    assert done.stderr.count("\n") == 1, "one line naming the problem"
    assert lock.read_bytes() == b"planted\n" and lock.stat().st_uid == NOBODY


def test_c_writer_refuses_a_symlinked_or_special_lock_file(
    c_progs: dict[str, str], jdir: str, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"someone's data\n")
    os.symlink(target, os.path.join(jdir, "md.lock"))
    done = subprocess.run(
        [c_progs["ctp_writer"], jdir, "md", "1"], capture_output=True, text=True, timeout=60
    )
    assert (
        done.returncode == 1 and "symbolic link" in done.stderr and target.read_bytes() == b"someone's data\n"
    )
    os.unlink(os.path.join(jdir, "md.lock"))
    os.mkfifo(os.path.join(jdir, "md.lock"))  # a plain open for writing could block on it
    done = subprocess.run(
        [c_progs["ctp_writer"], jdir, "md", "1"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "not a regular file" in done.stderr


def test_c_writer_creates_its_lock_and_page_files_with_exactly_their_mode(
    c_progs: dict[str, str], jdir: str
) -> None:
    old = os.umask(0o277)  # the mode must not depend on the umask (fchmod after create, as Python does)
    try:
        subprocess.run([c_progs["ctp_writer"], jdir, "md", "1"], check=True, capture_output=True, timeout=60)
    finally:
        os.umask(old)
    for name in ("md.lock", "md.00000000.journal"):
        assert (os.stat(os.path.join(jdir, name)).st_mode & 0o777) == 0o600, name


def test_c_to_c_bench_builds_and_reports_both_runs_with_no_frame_lost(
    c_progs: dict[str, str], jdir: str
) -> None:
    """A smoke run of src/mmipc/bench/c_bench.c (the C-to-C floor of issue 10; no figure is checked)."""
    import json

    for size in ("64", "408"):
        args = [
            c_progs["c_bench"],
            "--size",
            size,
            "--count",
            "300",
            "--gap",
            "1000",
            "--page-size",
            "65536",
            jdir,
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs = [json.loads(line) for line in done.stdout.splitlines()]
        assert [(r["run"], r["size"], r["bad"]) for r in runs] == [
            ("latency", int(size), 0),
            ("throughput", int(size), 0),
        ]
        assert runs[0]["count"] == 270 and 0 < runs[0]["p50_us"] <= runs[0]["p90_us"] <= runs[0]["max_us"]
        assert runs[1]["frames_per_s"] > 0
    assert os.listdir(jdir) == [], "each run removes its journal"
    bad = subprocess.run(
        [c_progs["c_bench"], "--size", "8", jdir], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith("usage: c_bench")


def test_c_writer_feeds_a_python_reader_registered_with_the_live_service(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    """docs/c-api.md, "Standalone use": the C writer never talks to the service, and a Python reader
    registered with it follows the C writer's journal live, across its page switches."""
    from mmipc.service._link import service_status

    reader = Reader.create("py-follows-c")  # registered with the session's real service
    reader.add_journal(jdir, "md")
    writer = _run(procs, c_progs["ctp_writer"], "--page-size", str(SMALL_PAGE), jdir, "md", "3000")
    frames: list[tuple[int, int]] = []

    def read_all() -> bool:
        frames.extend((f.seq, len(f.data)) for f in iter(reader.read, None))
        return len(frames) >= 3000

    wait_for(read_all, what="3000 frames of the C writer")
    assert writer.finish().split()[-2:] == ["wrote", "3000"]
    assert frames == [(i, 408) for i in range(3000)]  # every CTP tick, in order, none torn
    status = service_status()
    assert any(r["name"] == "py-follows-c" for r in status["readers"])
    listed = [j for j in status["journals"] if (j["directory"], j["name"]) == (jdir, "md")]
    assert [j["writer_pid"] for j in listed] in ([], [None]), "the C writer is standalone: no writer listed"
    reader.close()


def test_python_writer_registered_with_the_live_service_feeds_the_c_reader(
    c_progs: dict[str, str], procs: Procs, jdir: str
) -> None:
    """The service prepares the Python writer's next pages ahead; the C reader reads them all."""
    reader = _run(procs, c_progs["ctp_reader"], "--dump", jdir, "2000", "py")
    reader.expect_line("ready")  # the journal does not exist yet
    written = []
    with Writer.create(jdir, "py", page_size=SMALL_PAGE) as writer:  # registered: pages made ahead
        for i in range(2000):
            payload = os.urandom(i % 300)
            nano = writer.write(payload, msg_type=2, source=i)
            written.append((nano, i, zlib.crc32(payload)))
    lines = reader.finish().splitlines()
    assert lines[-1] == "read 2000 errors 0"
    data = [line.split() for line in lines if line.startswith("frame ")]
    assert [(int(d[2]), int(d[5]), int(d[7])) for d in data] == written
    assert [int(d[3]) for d in data] == list(range(2000))


@pytest.mark.once  # .ci/run: in its native pass only (C on both sides, whatever the backend)
def test_bench_peer_mmipc_c_builds_c_bench_and_runs_c_to_c_without_loss() -> None:
    """`mmipc bench`'s peer mmipc-c: c_bench built at bench time, one run per mode (no figure checked)."""
    from mmipc.bench import PEERS, run_pair
    from mmipc.bench.peers import forget_c_bench

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the peer mmipc-c cannot be built here")
    peer = next(p for p in PEERS if p.name == "mmipc-c")
    assert peer.missing() is None
    cpus = sorted(os.sched_getaffinity(0))
    pair = (cpus[0], cpus[-1])
    try:
        latency = run_pair(peer, "latency", 64, 500, 20.0, pair)
        assert latency["disorder"] == 0 and latency["cpu"] >= 0, latency
        p = latency["latency_us"]
        assert 0 < p["p50"] <= p["p90"] <= p["max"]
        throughput = run_pair(peer, "throughput", 408, 5000, 20.0, pair)
        assert throughput["disorder"] == 0 and throughput["per_s"] > 0, throughput
        assert run_pair(peer, "latency-blocking", 64, 500, 20.0, pair) == {"error": "no blocking read"}
    finally:
        forget_c_bench()  # its build directory, before the session checks that nothing is left


def test_bench_peer_mmipc_c_is_skipped_with_a_note_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmipc.bench import PEERS

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no cc, no gcc
    monkeypatch.setenv("CC", "no-such-compiler")
    peer = next(p for p in PEERS if p.name == "mmipc-c")
    assert peer.missing() == "mmipc-c skipped: no C compiler (cc, or $CC) to build bench/c_bench.c"


@pytest.mark.parametrize("bad", ["x", "1-0", "0,", " 1", "+1", "1-", "99999", "0-1,,2"])
def test_c_writer_refuses_a_bad_mmipc_pretouch_cpus_in_one_line(
    c_progs: dict[str, str], jdir: str, bad: str
) -> None:
    done = subprocess.run(
        [c_progs["ctp_writer"], jdir, "md", "5"],
        env={**os.environ, "MMIPC_PRETOUCH_CPUS": bad},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    said = "MMIPC_PRETOUCH_CPUS must be a CPU list such as 2-3,6 (where the writer's pretoucher thread runs)"
    assert f"{said}, not '{bad}'" in done.stderr
    assert not os.path.exists(os.path.join(jdir, "md.00000000.journal")), "refused before any file"


def test_c_writer_accepts_a_cpu_list_for_its_pretoucher(c_progs: dict[str, str], jdir: str) -> None:
    cpu = min(os.sched_getaffinity(0))
    env = {**os.environ, "MMIPC_PRETOUCH_CPUS": f"{cpu},{cpu}-{cpu}\n"}
    cmd = [c_progs["ctp_writer"], jdir, "md", "5"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
    assert len(_read_all(c_progs, jdir, 5, "md")) == 5
