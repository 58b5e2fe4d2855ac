"""The mode of NAME.bells follows its journal's: whoever may read the journal may register a bell in
it, nobody else. It was 0666 less the umask whatever the journal's mode: with umask 0 any local user
could write into the bells list of a 0600 journal, and with umask 077 (or 022) the group of a 0640
journal could not register its readers' bells. Real writers (Python and C), real readers of another
uid (root only: the tests that need it skip otherwise)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmipc import Reader, Writer
from mmipc.journal._bell import LIST_SIZE, Bell, BellList

NATIVE = Path(__file__).resolve().parent.parent / "src" / "mmipc" / "journal" / "_native"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "c"
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
LIST_MODE = {0o600: 0o600, 0o640: 0o660, 0o644: 0o666}


def mode_of(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0, 0o077], ids=["umask-0", "umask-077"])
@pytest.mark.parametrize("mode", sorted(LIST_MODE), ids=oct)
def test_a_writer_makes_the_bells_file_with_its_journals_mode_whatever_the_umask(
    jdir: str, mode: int, umask: int
) -> None:
    old = os.umask(umask)
    try:
        with Writer.create(jdir, "j", service=None, mode=mode) as writer:
            writer.write(b"x")
    finally:
        os.umask(old)
    assert mode_of(Path(jdir) / "j.bells") == LIST_MODE[mode]


def test_a_reader_makes_it_with_the_journals_mode_and_group(jdir: str) -> None:
    with Writer.create(jdir, "j", service=None, mode=0o640) as writer:
        writer.write(b"x")
    bells = Path(jdir) / "j.bells"
    bells.unlink()  # made by the first subscriber instead (a writer that could not make it)
    old = os.umask(0o077)
    try:
        with Reader.create("first", service=None) as reader:
            reader.add_journal(jdir, "j")
    finally:
        os.umask(old)
    assert mode_of(bells) == 0o660
    assert bells.stat().st_gid == (Path(jdir) / "j.lock").stat().st_gid


def test_an_older_versions_wide_bells_file_is_narrowed_by_its_owner(jdir: str) -> None:
    with Writer.create(jdir, "j", service=None):
        pass
    bells = Path(jdir) / "j.bells"
    os.chmod(bells, 0o666)  # what an older version made with umask 0
    with Writer.create(jdir, "j", service=None) as writer:
        writer.write(b"x")
    assert mode_of(bells) == 0o600


def test_the_c_writer_makes_the_bells_file_owner_only_under_umask_0(jdir: str, tmp_path: Path) -> None:
    """mmipc.c's opener alone (the C API's writer, default mode 0600)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C writer cannot be built here")
    prog = tmp_path / "ctp_writer"
    cmd = [gcc, "-std=c11", "-O1", f"-I{NATIVE}", "-o", str(prog), str(EXAMPLES / "ctp_writer.c")]
    subprocess.run([*cmd, str(NATIVE / "mmipc.c")], check=True, capture_output=True, text=True)
    args = [str(prog), jdir, "md", "10"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done.stderr
    assert mode_of(Path(jdir) / "md.bells") == 0o600
    assert os.path.getsize(Path(jdir) / "md.bells") == LIST_SIZE


# -- another user registering its bell ------------------------------------------------------------


def subscribe_as(uid: int, groups: list[int], directory: str) -> str:
    """Fork a child that becomes `uid` (group nobody, plus `groups`), makes its bell and registers
    it in the journal's NAME.bells: "slot N", or "refused". (Fork, not exec: the interpreter lives
    under /root, which another user cannot execute.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups(groups)
            os.setgid(NOBODY)
            os.setuid(uid)
            bell = Bell.create()
            assert bell is not None
            slot = BellList.subscribe(directory, "j", bell.path, 0)
            result = "refused" if slot is None else f"slot {slot}"
            if slot is not None:
                BellList.unsubscribe(directory, "j", slot, bell.path)
            bell.close()
        except BaseException as exc:  # reported to the test, which then fails
            result = f"crashed {exc!r}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    os.waitpid(pid, 0)
    return output


@pytest.fixture
def public_tmp() -> Iterator[str]:
    """A directory another user can reach (pytest's own tmp tree is root's, 0700)."""
    root = tempfile.mkdtemp(prefix="mmipc-bells-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_root
@pytest.mark.parametrize(
    ("mode", "in_group", "umask", "expected"),
    [
        (0o600, True, 0, "refused"),  # was 0666 under umask 0: anyone could write the list
        (0o600, True, 0o022, "refused"),
        (0o640, True, 0o022, "slot 0"),  # was 0644: the group that may read could not register
        (0o640, False, 0, "refused"),  # was 0666: anyone could
        (0o644, False, 0o077, "slot 0"),  # was 0600: readers that may read could not register
    ],
)
def test_another_user_registers_a_bell_only_where_it_may_read_the_journal(
    public_tmp: str, mode: int, in_group: bool, umask: int, expected: str
) -> None:
    directory = os.path.join(public_tmp, "journals")
    os.mkdir(directory)
    os.chmod(directory, 0o755)  # existing: left as it is; the mode of each file decides
    old = os.umask(umask)
    try:
        with Writer.create(directory, "j", service=None, mode=mode) as writer:
            writer.write(b"x")
    finally:
        os.umask(old)
    group = os.stat(os.path.join(directory, "j.lock")).st_gid
    assert subscribe_as(NOBODY, [group] if in_group else [], directory) == expected
