"""Every command has help, and a bad command fails with a message, run as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mmipc as mmipc_module
from conftest import Child, ServiceProcess, wait_for
from mmipc import Reader, Writer
from mmipc.cli import build_parser
from mmipc.cli._common import format_time


def commands() -> list[list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [[], *([name] for name in sub.choices)]  # type: ignore[union-attr]


@pytest.mark.once  # .ci/run: native pass only (argparse's help, whatever the backend)
@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c) or "mmipc")
def test_every_command_has_help(command: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "mmipc", *command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: mmipc" in out.stdout


def test_status_without_a_service_says_how_to_start_one(tmp_path: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "status", "--home", f"{tmp_path}/none"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and f"start one with `mmipc service --home {tmp_path}/none`" in out.stderr
    assert "MMIPC_HOME" not in out.stderr and out.stdout == ""  # --home given: no advice to set it


def mmipc(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300, **kwargs
    )


def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return True


def frame_lines(output: str) -> int:
    return sum(1 for line in output.splitlines() if " latency " in line and line.endswith(" us"))


def test_demo_sends_and_receives_every_frame() -> None:
    out = mmipc("demo", "--count", "200", "--rate", "0")
    assert out.returncode == 0, out.stderr
    assert "summary: sent 200, received 200, lost 0; latency us: min" in out.stdout
    assert "demo: the reader busy-polls: cpu" in out.stdout  # it says it keeps a core at 100%
    assert frame_lines(out.stdout) == 200  # one line per frame, then the summary


def test_demo_interrupted_leaves_no_process_and_no_temporary_file(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MMIPC_HOME"}  # the demo starts its own service
    env["TMPDIR"] = str(scratch)
    demo = Child([sys.executable, "-m", "mmipc", "demo", "--count", "1000000", "--rate", "2000"], env=env)
    service_pid = int(demo.expect_line("demo: started service pid").split()[4])
    words = demo.expect_line("demo: writer pid").split()
    writer_pid, reader_pid = int(words[3]), int(words[9])
    demo.expect_line("rb2601")  # frames are flowing
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=60) == 130
    wait_for(
        lambda: all(gone(pid) for pid in (service_pid, writer_pid, reader_pid)), what="the children to exit"
    )
    assert list(scratch.iterdir()) == []


def test_write_then_read_like_the_seed(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "300", "--rate", "0").returncode == 0
    out = mmipc("read", jdir, "md", "--quiet", "--histogram", "--since", "0")
    assert out.returncode == 0, out.stderr
    assert "summary: sent 300, received 300, lost 0" in out.stdout and "latency histogram" in out.stdout
    since = mmipc("read", jdir, "md", "--since", "2000-01-01 00:00:00", "--count", "5")
    assert frame_lines(since.stdout) == 5 and "rb2601" in since.stdout


def test_read_since_counts_no_loss_it_cannot_know(jdir: str) -> None:
    """Starting late is deliberate: the frames before --since are not "lost", and it exits 0."""
    nanos = ctp_journal(jdir, 100)
    out = mmipc("read", jdir, "md", "--since", str(nanos[60]), "--quiet", "--standalone")
    assert out.returncode == 0, out.stdout + out.stderr
    # 40 ticks from the 61st; not "lost 60" (format v2 numbers frames: none is missing after the first)
    assert "summary: sent ?, received 40, lost 0" in out.stdout


def test_the_deprecated_journal_flag_still_works_and_warns(jdir: str) -> None:
    write = mmipc("write", "--journal", jdir, "md", "--count", "3", "--rate", "0", "--standalone")
    assert write.returncode == 0 and "--journal DIR NAME is deprecated" in write.stderr
    other = os.path.join(jdir, "other")
    assert mmipc("write", other, "md", "--count", "2", "--rate", "0", "--standalone").returncode == 0
    both = ["--journal", jdir, "md", "--journal", other, "md", "--quiet", "--standalone", "--since", "0"]
    out = mmipc("read", *both)
    assert out.returncode == 0 and "summary: sent 5, received 5, lost 0" in out.stdout, out.stderr
    same = mmipc("read", jdir, "md", f"{other}/md", "--quiet", "--standalone", "--since", "0")  # new form
    assert same.returncode == 0 and "summary: sent 5, received 5, lost 0" in same.stdout
    mixed = mmipc("read", jdir, "md", "--journal", other, "md", "--standalone")
    assert mixed.returncode == 2 and "not both" in mixed.stderr


def test_cpus_is_a_hidden_alias_of_cpu() -> None:
    assert "--cpus" not in mmipc("demo", "--help").stdout
    out = mmipc("demo", "--cpus", "0,999")
    assert out.returncode == 2 and "CPU 999 is not one of this process's CPUs" in out.stderr


def ctp_journal(jdir: str, count: int = 40) -> list[int]:
    assert mmipc("write", jdir, "md", "--count", str(count), "--rate", "0", "--standalone").returncode == 0
    with Reader.create("nanos", service=None) as reader:
        reader.add_journal(jdir, "md")
        return [f.nano for f in iter(reader.read, None)]


def test_tail_prints_the_last_frames_decoded_as_ctp(jdir: str) -> None:
    nanos = ctp_journal(jdir)
    out = mmipc("tail", jdir, "md", "-n", "5", "--no-follow", "--struct", "ctp")
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and "type=199" in lines[-1]  # four ticks and the end frame
    assert [line.split()[5] for line in lines[:4]] == ["rb2601", "au2602", "cu2601", "IF2612"]
    assert all("last=" in line and "bid=" in line for line in lines[:4])
    rows = [
        json.loads(line)
        for line in mmipc("tail", jdir, "md", "--no-follow", "--json", "-n", "2").stdout.splitlines()
    ]
    assert [r["nano"] for r in rows] == nanos[-2:] and rows[0]["size"] == 408
    window = mmipc("tail", jdir, "md", "--no-follow", "--since", str(nanos[10]), "--until", str(nanos[19]))
    assert len(window.stdout.splitlines()) == 10


def test_tail_follows_new_frames_across_journals(jdir: str) -> None:
    with Writer.create(jdir, "a") as a, Writer.create(jdir, "b") as b:
        a.write(b"from-a")
        b.write(b"from-b")
    follower = Child([sys.executable, "-m", "mmipc", "tail", jdir, "a", "b", "-n", "5"])
    try:
        assert follower.expect_line("20").split()[2] == "a"  # the backlog, merged by time
        assert follower.expect_line("20").split()[2] == "b"
        with Writer.create(jdir, "a") as a:
            a.write(b"later")  # only following can print this one
        assert follower.expect_line("20").endswith("6c 61 74 65 72")
    finally:
        follower.kill9()


def test_ls_and_inspect_describe_the_journal(jdir: str) -> None:
    ctp_journal(jdir, 10)
    listing = mmipc("ls", jdir).stdout.splitlines()
    assert listing[0].startswith("JOURNAL") and listing[1].split()[:4] == ["md", "1", "33,554,432", "11"]
    shown = mmipc("inspect", jdir, "md", "--limit", "3").stdout
    assert "frames of page 0" in shown and shown.count("   440 ") == 3 and "..." in shown


@pytest.mark.parametrize(
    "damage", ["flipped length byte", "flipped timestamp byte", "truncated page", "missing page"]
)
def test_check_finds_and_names_damage(jdir: str, damage: str) -> None:
    with Writer.create(jdir, "j", page_size=64 * 1024, service=None) as writer:
        for i in range(2000):
            writer.write(i.to_bytes(4, "little") * 20)
    assert mmipc("check", jdir, "j").returncode == 0
    page1 = os.path.join(jdir, "j.00000001.journal")
    frame = 4096 + 7 * 112  # the eighth frame of page 1
    expected = {
        "flipped length byte": (page1, frame, "length"),
        "flipped timestamp byte": (page1, frame, "older than"),
        "truncated page": (page1, 32768, "truncated"),
        "missing page": (page1, 0, "page 1 is missing"),
    }[damage]
    if damage == "missing page":
        os.unlink(page1)
    elif damage == "truncated page":
        os.truncate(page1, 32768)
    else:
        with open(page1, "r+b") as f:
            f.seek(frame + (1 if damage == "flipped length byte" else 15))
            byte = f.read(1)[0]
            f.seek(-1, 1)
            f.write(bytes([byte ^ 0x80]))
    out = mmipc("check", jdir, "j")
    path, offset, words = expected
    assert out.returncode == 1
    assert f"corrupt: {path} at offset {offset}: " in out.stdout and words in out.stdout


def test_progress_bars_stay_out_of_pipes(jdir: str) -> None:
    ctp_journal(jdir, 10)
    for command in (["check", jdir, "md"], ["ls", jdir]):
        out = mmipc(*command)
        assert out.returncode == 0 and "\r" not in out.stderr and "[" not in out.stderr


def test_status_counts_other_sessions_and_shows_ns(jdir: str, tmp_path: Path) -> None:
    service = ServiceProcess(str(tmp_path / "home"))
    service.start()
    try:
        alone = mmipc("status", "--home", service.home)
        assert alone.returncode == 0 and ", 0 sessions, " in alone.stdout  # not its own query
        assert f"\nbackend {mmipc_module.backend} (" in alone.stdout  # the mmipc command's own backend
        with Writer.create(jdir, "md", service=service.home) as writer:
            nano = writer.write(b"tick")
            shown = mmipc("status", "--home", service.home).stdout
        assert ", 1 session, " in shown
        assert f"  {format_time(nano)}\n" in shown, shown  # ns, like every other command
    finally:
        service.stop()
