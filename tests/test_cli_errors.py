"""Every command, given bad arguments or meeting a runtime failure, exits 2 (usage) or 1 (runtime) with
one line on stderr naming the problem, and never a traceback. Real subprocesses, real journals."""

from __future__ import annotations

import argparse
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Child, wait_for
from mmipc import Writer
from mmipc.cli import _args, build_parser
from mmipc.tools import nth_last_nano

NUMERIC = {_args.count, _args.natural, _args.rate, _args.seconds, _args.cpu, _args.cpu_pair, _args.sizes}


def mmipc(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300, **kwargs
    )


def subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def numeric_flags() -> Iterator[tuple[str, str]]:
    """(command, flag) for every flag of every command that takes a checked number."""
    for command, parser in subparsers().items():
        for action in parser._actions:
            if action.type in NUMERIC and action.option_strings and action.help != argparse.SUPPRESS:
                yield command, action.option_strings[-1]


def assert_clean(out: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit `code`, no traceback, and a last stderr line from mmipc that says what was wrong."""
    shown = f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    assert out.returncode == code, shown
    assert "Traceback" not in out.stderr + out.stdout, shown
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("mmipc"), shown
    for word in words:
        assert word in last, shown


def leaves() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every command line's words up to its own parser (`bridge out` for commands with directions)."""
    found = []
    for command, parser in sorted(subparsers().items()):
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        inner: dict[str, argparse.ArgumentParser] = dict(nested[0].choices) if nested else {"": parser}
        found += [([command, name] if name else [command], p) for name, p in inner.items()]
    return found


@pytest.mark.parametrize(
    ("command", "parser"), leaves(), ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_an_unknown_flag_is_a_usage_error(command: list[str], parser: argparse.ArgumentParser) -> None:
    positionals = [a for a in parser._actions if not a.option_strings]
    words = ["/nonexistent" if a.dest == "directory" else "j" for a in positionals]
    for action in parser._actions:
        if action.required and action.option_strings:
            words += [action.option_strings[-1], "/nonexistent/x"]
    out = mmipc(*command, *words, "--no-such-flag")
    assert_clean(out, 2, f"mmipc {command[0]}: error", "--no-such-flag", f"see `mmipc {command[0]} --help`")
    assert len(out.stderr.splitlines()) == 1  # one line, not the whole usage
    if positionals:  # and leaving out what is required names it
        assert_clean(mmipc(*command), 2, "the following arguments are required: DIR")


@pytest.mark.parametrize(("command", "flag"), sorted(numeric_flags()))
@pytest.mark.parametrize("value", ["-5", "abc"])
def test_every_number_is_checked_when_parsed(command: str, flag: str, value: str) -> None:
    assert_clean(mmipc(command, flag, value), 2, f"argument {flag}", repr(value))


def test_zero_counts_and_negative_numbers_named_in_the_issue_are_refused(jdir: str) -> None:
    for args in (
        ["demo", "--count", "0"],
        ["read", jdir, "md", "--count", "0"],
        ["tail", jdir, "md", "-n", "-3"],
        ["write", jdir, "md", "--rate", "-1"],
        ["inspect", jdir, "md", "--page", "-1"],
        ["torture", "--page-size", "1000"],
        ["bench", "--size", "0"],
    ):
        assert_clean(mmipc(*args), 2)


def test_write_names_one_journal(jdir: str) -> None:
    out = mmipc("write", "--journal", jdir, "a", "--journal", jdir, "b")
    assert_clean(out, 2, "write names one journal: DIR NAME")
    assert "repeat for more" not in mmipc("write", "--help").stdout


def test_bad_names_and_peers_are_usage_errors(jdir: str) -> None:
    assert_clean(mmipc("write", jdir, "bad name!", "--standalone"), 2, "bad name!")
    assert_clean(mmipc("bench", "--peers", "nosuch"), 2, "unknown peers ['nosuch']")


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "/nonexistent", "j", "--no-follow"],
        ["tail", "/nonexistent", "j"],  # following: must not wait forever in silence
        ["read", "/nonexistent", "j", "--standalone"],
        ["inspect", "/nonexistent", "j"],
        ["check", "/nonexistent", "j"],
        ["ls", "/nonexistent"],
    ],
)
def test_a_missing_directory_is_an_error(args: list[str]) -> None:
    assert_clean(mmipc(*args), 1, "/nonexistent does not exist")


def test_a_missing_journal_is_named_not_called_corrupt(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "3", "--rate", "0", "--standalone").returncode == 0
    check = mmipc("check", jdir, "nosuch")
    assert_clean(check, 1, "no journal nosuch in")
    assert "corrupt" not in check.stdout + check.stderr
    assert_clean(mmipc("inspect", jdir, "nosuch"), 1, "no journal nosuch in")
    assert_clean(mmipc("inspect", jdir, "md", "--page", "7"), 1, "has pages 0..0: no page 7")
    assert_clean(mmipc("tail", jdir, "nosuch", "--no-follow"), 1, "journal nosuch in", "has no pages")
    read = mmipc("read", jdir, "nosuch", "--timeout", "3", "--standalone")  # > WAITING_GRACE
    assert_clean(read, 1, "journal nosuch in", "never appeared")
    assert read.stderr.count("waiting for it to appear") == 1  # said once, when it started


def test_tail_says_once_that_it_waits_for_a_journal(jdir: str) -> None:
    follower = Child([sys.executable, "-m", "mmipc", "tail", jdir, "later"])
    try:
        wait_for(lambda: "waiting for it to appear" in follower.stderr(), what="tail's waiting message")
        assert "journal later in" in follower.stderr()
    finally:
        follower.kill9()


def test_no_service_names_the_command_line_flags(jdir: str, tmp_path: Any) -> None:
    home = f"{tmp_path}/none"
    for args in (["write", jdir, "md"], ["read", jdir, "md", "--timeout", "1"]):
        out = mmipc(*args, "--home", home)
        assert_clean(out, 1, f"start one with `mmipc service --home {home}`", "--standalone")
        assert "service=None" not in out.stderr and "MMIPC_HOME" not in out.stderr
    status = mmipc("status", "--home", home, "--json")
    assert_clean(status, 1, "no mmipc service")
    assert json.loads(status.stdout) == {
        "service": None,
        "home": home,
        "error": status.stderr.split(": ", 1)[1].strip(),
    }


def test_a_service_home_that_cannot_be_made_is_a_runtime_error(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_clean(mmipc("service", "--home", f"{blocker}/home"), 1, "cannot create service home")


def test_json_output_is_json_and_nothing_else(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "5", "--rate", "0", "--standalone").returncode == 0
    assert [j["name"] for j in json.loads(mmipc("ls", jdir, "--json").stdout)] == ["md"]
    shown = json.loads(mmipc("inspect", jdir, "md", "--json", "--limit", "2").stdout)
    assert shown["pages"][0]["frames"] == 6 and len(shown["frames"]) == 2  # 5 ticks and the end frame
    assert json.loads(mmipc("check", jdir, "md", "--json").stdout)["ok"] is True
    rows = mmipc("tail", jdir, "md", "--json", "--no-follow", "-n", "3").stdout.splitlines()
    assert [json.loads(row)["msg_type"] for row in rows] == [101, 101, 199]


def test_torture_json_starts_with_json(tmp_path: Any) -> None:
    out = mmipc("torture", "--seconds", "1", "--writers", "1", "--readers", "1", "--seed", "7", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["violations"] == [] and "seed 7" in out.stderr


def test_inspect_shows_what_an_open_page_holds(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "101", "--rate", "0", "--standalone").returncode == 0
    header = mmipc("inspect", jdir, "md").stdout.splitlines()[1].split()
    assert header[2] == "102" and header[-2] != "-"  # 101 ticks and the end frame; a last frame time


def test_ctrl_c_prints_the_summary_so_far_and_exits_130(jdir: str) -> None:
    with Writer.create(jdir, "md", service=None) as writer:
        for i in range(7):
            writer.write(bytes([i]) * 16)  # no end-of-demo frame: read follows until Ctrl-C
    reader = Child([sys.executable, "-m", "mmipc", "read", jdir, "md", "--standalone", "--since", "0"])
    for _ in range(7):
        reader.expect_line("md ")
    reader.proc.send_signal(signal.SIGINT)
    assert reader.proc.wait(timeout=60) == 130
    assert reader.expect_line("summary:").startswith("summary: sent ?, received 7, lost 0; latency us")
    assert "Traceback" not in reader.stderr() and "interrupted" in reader.stderr()


def test_ctrl_c_stops_write_with_what_it_wrote(jdir: str) -> None:
    writer = Child([sys.executable, "-m", "mmipc", "write", jdir, "md", "--count", "100000", "--standalone"])
    wait_for(lambda: nth_last_nano(jdir, "md", 1) is not None, what="the writer's first frame")
    writer.proc.send_signal(signal.SIGINT)
    assert writer.proc.wait(timeout=60) == 130
    assert writer.expect_line("wrote ").endswith(f"frames to {jdir}/md")
    assert "Traceback" not in writer.stderr()


def test_ctrl_c_stops_tail_quietly(jdir: str) -> None:
    with Writer.create(jdir, "md", service=None) as writer:
        writer.write(b"x")
    tail = Child([sys.executable, "-m", "mmipc", "tail", jdir, "md"])
    tail.expect_line("20")  # the backlog's one frame; now it follows
    tail.proc.send_signal(signal.SIGINT)
    assert tail.proc.wait(timeout=60) == 130
    assert "Traceback" not in tail.stderr() and "interrupted" in tail.stderr()


def test_bench_json_is_json_on_stdout() -> None:
    out = mmipc("bench", "--peers", "os.pipe", "--quick", "--size", "64", "--json")
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert {r["mode"] for r in runs} == {"latency", "latency-blocking", "throughput"}
    assert "run 3/3" in out.stderr  # progress, one line per run, on stderr


def test_ctrl_c_in_bench_reports_the_runs_so_far() -> None:
    bench = Child(
        [sys.executable, "-m", "mmipc", "bench", "--peers", "os.pipe", "--rounds", "50", "--size", "64"]
    )
    wait_for(lambda: "run 1/" in bench.stderr(), timeout=300, what="bench's first run")
    bench.proc.send_signal(signal.SIGINT)
    assert bench.proc.wait(timeout=120) == 130
    assert bench.expect_line("### Latency, 64-byte messages")  # the report of what was measured
    assert "Traceback" not in bench.stderr() and "interrupted" in bench.stderr()


def test_tail_since_shows_progress_on_a_terminal_while_writing_to_a_file(jdir: str) -> None:
    with Writer.create(jdir, "md", service=None) as writer:
        first = writer.write(b"first")
        for i in range(20_000):
            writer.write(i.to_bytes(4, "little"))
    master, slave = pty.openpty()
    try:
        tail = subprocess.Popen(
            [sys.executable, "-m", "mmipc", "tail", jdir, "md", "--since", str(first), "--no-follow"],
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        seen = b""
        while b"100%" not in seen:
            try:
                seen += os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
        assert tail.wait(timeout=120) == 0
    finally:
        os.close(master)
    assert b"\rtail [" in seen and b"%" in seen, seen


def test_a_closed_pipe_is_quiet(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "2000", "--rate", "0", "--standalone").returncode == 0
    tail = subprocess.Popen(
        [sys.executable, "-m", "mmipc", "tail", jdir, "md", "--no-follow", "-n", "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stdout is not None and tail.stderr is not None
    tail.stdout.readline()
    tail.stdout.close()  # like `| head -1`
    assert tail.wait(timeout=120) == 141
    assert "Traceback" not in tail.stderr.read()


@pytest.mark.parametrize("how", ["python -m mmipc", "console script"])
def test_an_invalid_backend_is_one_line_and_exit_2_not_a_traceback(how: str) -> None:
    """MMIPC_BACKEND is read when mmipc is imported, before the CLI's error handling exists: an
    invalid value used to end `mmipc` with the traceback of the import."""
    script = os.path.join(os.path.dirname(sys.executable), "mmipc")
    cmd = [sys.executable, "-m", "mmipc"] if how == "python -m mmipc" else [script]
    env = {**os.environ, "MMIPC_BACKEND": "turbo"}
    out = subprocess.run([*cmd, "ls", "."], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "mmipc: MMIPC_BACKEND='turbo' is not a backend: use 'native', 'python', or leave it unset"
    ]


def test_the_library_raises_a_clear_error_for_an_invalid_backend() -> None:
    code = "import mmipc\n"
    wrapper = (
        "import sys\ntry:\n    import mmipc\nexcept Exception as exc:\n"
        "    print(type(exc).__name__, exc); sys.exit(0)\nsys.exit(3)\n"
    )
    env = {**os.environ, "MMIPC_BACKEND": "turbo"}
    run = {"capture_output": True, "text": True, "timeout": 300, "env": env}
    out = subprocess.run([sys.executable, "-c", wrapper], **run)  # type: ignore[call-overload]
    assert out.returncode == 0 and out.stdout.startswith("UsageError MMIPC_BACKEND='turbo' is not a backend")
    plain = subprocess.run([sys.executable, "-c", code], **run)  # type: ignore[call-overload]
    assert plain.returncode == 1 and "UsageError" in plain.stderr  # a library error, not a SystemExit
