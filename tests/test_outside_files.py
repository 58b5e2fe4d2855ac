"""Files from outside: every entry point meets them with a clear error, never a traceback or a hang.

The cases in CASES are also the corpus of inputs that once broke something: a directory standing
where a page belongs made the reader call pread on a directory (found by the torture harness).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmipc import CorruptJournalError, MmipcError, Reader, Writer
from mmipc.journal import _layout
from mmipc.journal._page import MappedPage

PAGE = 64 * 1024


def good_journal(jdir: str) -> str:
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        for i in range(100):
            writer.write(i.to_bytes(4, "little") * 10)
    return os.path.join(jdir, "j.00000000.journal")


def random_page(path: str) -> None:
    os.unlink(path)
    Path(path).write_bytes(os.urandom(PAGE))


def future_version(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<H", 7))


def shorter_than_header(path: str) -> None:
    os.truncate(path, 1000)


def symlink_elsewhere(path: str) -> None:
    os.unlink(path)
    os.symlink("/etc/hostname", path)


def directory_instead(path: str) -> None:
    os.unlink(path)
    os.mkdir(path)


def another_journals_page(path: str) -> None:
    directory = os.path.dirname(path)
    with Writer.create(directory, "other", page_size=PAGE, service=None) as writer:
        writer.write(b"not j's")
    os.replace(os.path.join(directory, "other.00000000.journal"), path)


CASES: dict[str, Callable[[str], None]] = {
    "random bytes named like a page": random_page,
    "a page from a future format version": future_version,
    "a page shorter than its header": shorter_than_header,
    "a symlink pointing elsewhere": symlink_elsewhere,
    "a directory where a page belongs": directory_instead,
    "a page of another journal": another_journals_page,
}
COMMANDS = [
    ["check", "{d}", "j"],
    ["tail", "{d}", "j", "--no-follow"],
    ["inspect", "{d}", "j"],
    ["ls", "{d}"],
]


@pytest.mark.parametrize("case", list(CASES))
def test_the_reader_raises_a_corrupt_journal_error(jdir: str, case: str) -> None:
    path = good_journal(jdir)
    CASES[case](path)
    with pytest.raises(CorruptJournalError) as info, Reader.create("outside", service=None) as reader:
        reader.add_journal(jdir, "j")
        list(iter(reader.read, None))
    assert info.value.path == path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("case", list(CASES))
def test_the_commands_say_what_is_wrong(jdir: str, case: str, command: list[str]) -> None:
    path = good_journal(jdir)
    CASES[case](path)
    args = [a.format(d=jdir) for a in command]
    out = subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert path in out.stdout + out.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another user")
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_journal_directory_the_user_cannot_read(tmp_path: Path, command: list[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    good_journal(str(locked))
    os.chmod(tmp_path, 0o755)
    code, output = run_cli_as_nobody([a.format(d=str(locked)) for a in command])
    assert code == 1 and "Traceback" not in output, output
    assert "Permission denied" in output


def run_cli_as_nobody(args: list[str]) -> tuple[int, str]:
    """Fork, become uid 65534, run the CLI's main() in the child; its exit code and output."""
    from mmipc.cli import main

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = main(args)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=PAGE - _layout.PAGE_HEADER_SIZE), st.integers(0, 3))
def test_a_valid_header_over_random_frames_parses_or_raises_our_error(body: bytes, flavour: int) -> None:
    """Fuzz the frame walk: a real page header, then any bytes at all, as a file on disk."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.00000000.journal")
        header = _layout.encode_page_header("f", 0, PAGE, 1)
        filler = [b"\0", b"\xff", b"\x20", b"\x08"][flavour]
        data = header.ljust(_layout.PAGE_HEADER_SIZE, b"\0") + body
        Path(path).write_bytes(data + filler * (PAGE - len(data)))
        page = MappedPage.open(path, "f", 0)
        try:
            frames = list(page.frames())
            page.tail()
            page.seek(2**40)
        except MmipcError:
            return
        finally:
            page.release()
        assert all(f.offset < PAGE for f in frames)
