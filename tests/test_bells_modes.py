"""The mode of NAME.bells follows its journal's: whoever may read the journal may register a bell in
it, nobody else. It was 0666 less the umask whatever the journal's mode: with umask 0 any local user
could write into the bells list of a 0600 journal, and with umask 077 (or 022) the group of a 0640
journal could not register its readers' bells. Real writers (Python and C), real readers of another
uid (root only: the tests that need it skip otherwise)."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from mmipc import Block, Reader, Writer
from mmipc.journal._bell import LIST_SIZE, Bell, BellList
from test_c_api import c_progs
from test_permissions import NOBODY, needs_root, public_tmp, run_as

__all__ = ["c_progs", "public_tmp"]  # fixtures: the C programs built once, a directory another user can reach

LIST_MODE = {0o600: 0o600, 0o640: 0o660, 0o644: 0o666}


def mode_of(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_one(directory: str, mode: int, umask: int) -> None:
    """Journal "j" of `directory`, one frame, written with `mode` under `umask`."""
    old = os.umask(umask)
    try:
        with Writer.create(directory, "j", service=None, mode=mode) as writer:
            writer.write(b"x")
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0, 0o077], ids=["umask-0", "umask-077"])
@pytest.mark.parametrize("mode", sorted(LIST_MODE), ids=oct)
def test_a_writer_makes_the_bells_file_with_its_journals_mode_whatever_the_umask(
    jdir: str, mode: int, umask: int
) -> None:
    write_one(jdir, mode, umask)
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


def test_the_c_writer_makes_the_bells_file_owner_only_under_umask_0(
    jdir: str, c_progs: dict[str, str]
) -> None:
    """mmipc.c's opener alone (the C API's writer, default mode 0600)."""
    args = [c_progs["ctp_writer"], jdir, "md", "10"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done.stderr
    assert mode_of(Path(jdir) / "md.bells") == 0o600
    assert os.path.getsize(Path(jdir) / "md.bells") == LIST_SIZE


# -- another user registering its bell ------------------------------------------------------------


def subscribe_as(uid: int, groups: list[int], directory: str) -> str:
    """As `uid` (`run_as`), make a bell and register it in the journal's NAME.bells: "slot N", or
    "refused"."""

    def subscribe() -> str:
        bell = Bell.create()
        assert bell is not None
        slot = BellList.subscribe(directory, "j", bell.path, 0)
        if slot is not None:
            BellList.unsubscribe(directory, "j", slot, bell.path)
        bell.close()
        return "refused" if slot is None else f"slot {slot}"

    return run_as(uid, groups, subscribe)


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
    write_one(directory, mode, umask)
    group = os.stat(os.path.join(directory, "j.lock")).st_gid
    assert subscribe_as(NOBODY, [group] if in_group else [], directory) == expected


# -- a list made by a reader of another user before the journal had a writer -----------------------

OTHER = 4242  # a reader's uid (no passwd entry needed); its group is nobody's, as the writer's


def shared_directory(public_tmp: str) -> str:
    """A journal directory the writer (nobody) owns and its group (the reader's) may write."""
    directory = os.path.join(public_tmp, "journals")
    os.mkdir(directory)
    os.chown(directory, NOBODY, NOBODY)
    os.chmod(directory, 0o775)
    return directory


def first_frame_as_other(directory: str) -> str:
    """As OTHER (group nobody): follow journal j before it has a writer, read its first frame
    (found by a sweep: the writer cannot ring it yet), and stay subscribed until the writer is
    done (an unsubscribe, a list edit, would set the list's mode too)."""

    def read() -> str:
        with Reader.create("early", service=None) as reader:
            reader.add_journal(directory, "j")
            frame = next(iter(reader.frames(wait="block", timeout=120)), None)
            wait_for(lambda: os.path.exists(os.path.join(directory, "done")), timeout=120, what="the writer")
            return "nothing" if frame is None else bytes(frame.data).decode()

    return run_as(OTHER, [], read)


def write_until_mapped(directory: str) -> str:
    """As nobody: write journal j (0640, group nobody), a frame at a time, until this process maps
    NAME.bells (so it rings the bells listed: Python's or the C core's ringer, /proc/self/maps);
    then say it is done (a file "done")."""

    def write() -> str:
        bells = os.path.join(directory, "j.bells")
        try:
            with Writer.create(directory, "j", service=None, mode=0o640) as writer:
                writer.write(b"first")
                for _ in range(6000):  # 60 s at most: the reader sets the mode within its nap
                    if bells in Path("/proc/self/maps").read_text():
                        return "mapped"
                    writer.write(b"more")
                    time.sleep(0.01)
            return f"never mapped: mode {mode_of(bells):04o}"
        finally:
            Path(directory, "done").touch()

    return run_as(NOBODY, [], write)


@needs_root
def test_a_list_a_reader_made_before_the_writer_takes_the_journals_mode_when_the_writer_comes(
    public_tmp: str,
) -> None:
    """A reader of another user made NAME.bells 0600 before any writer: the journal's writer
    (another user of the group, mode 0640) could not open it, so it never rang the reader, nor could
    the group's other readers register: silently. The reader sets its journal's mode (0660) once
    it sees the journal's first page."""
    directory = shared_directory(public_tmp)
    bells = Path(directory) / "j.bells"
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(first_frame_as_other(directory)))
    reader.start()
    try:
        wait_for(lambda: bells.exists(), what="the reader's list")
        assert (mode_of(bells), bells.stat().st_uid) == (0o600, OTHER)
        assert write_until_mapped(directory) == "mapped"
    finally:
        reader.join(timeout=180)
    assert result == ["first"]
    assert (mode_of(bells), bells.stat().st_gid) == (0o660, NOBODY)


@needs_root
def test_a_writer_that_may_not_open_a_list_a_reader_made_before_it_says_so(public_tmp: str) -> None:
    """The same list, its reader gone before the writer came: nobody can set its mode. The writer
    says once why it cannot ring through it, naming the file, its owner and both modes."""
    directory = shared_directory(public_tmp)
    assert subscribe_as(OTHER, [], directory) == "slot 0"
    bells = os.path.join(directory, "j.bells")
    assert mode_of(bells) == 0o600

    def write() -> str:
        lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("mmipc.bell").addHandler(handler)
        with Writer.create(directory, "j", service=None, mode=0o640) as writer:
            for _ in range(3):
                writer.write(b"x")
        return "\n".join(lines)

    said = run_as(NOBODY, [], write).splitlines()
    assert len(said) == 1, said
    assert f"cannot open the bells file {bells}" in said[0] and f"uid {OTHER}'s with mode 0600" in said[0]
    assert "not its journal's 0660" in said[0], said


def shut_out_then_listed(directory: str) -> str:
    """As nobody (the journal's writer and a reader of it, 0640): the reader is shut out of the
    list OTHER left 0600, so it polls; once the list is fixed (a file "fixed"), it lists its bell
    at a sweep, and a frame is rung to it (no nap: only a ring wakes it). What it said, and read."""

    def run() -> str:
        lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("mmipc.bell").addHandler(handler)
        got: list[bytes] = []
        with Writer.create(directory, "j", service=None, mode=0o640) as writer:
            with Reader.create("shut", service=None) as reader:
                reader.add_journal(directory, "j")
                shut_out = len(reader._merge.always) == 1
                Path(directory, "shut out").touch()
                thread = threading.Thread(target=_read_one_as_owner, args=(reader, got))
                thread.start()
                try:
                    wait_for(lambda: reader._merge.always == [], what="the reader to be listed")
                finally:
                    writer.write(b"rung")  # unlisted, it polls: the thread ends either way
                    thread.join(timeout=120)
                    reader.adopt()
        return "\n".join([f"shut out {shut_out}", *lines, *(bytes(g).decode() for g in got)])

    return run_as(NOBODY, [], run)


def _read_one_as_owner(reader: Reader, got: list[bytes]) -> None:
    reader.adopt()
    for frame in reader.frames(wait=Block(spin=0, max_nap=None), timeout=120):
        got.append(bytes(frame.data))
        return


@needs_root
def test_a_reader_shut_out_of_a_list_is_listed_once_its_mode_is_fixed(public_tmp: str) -> None:
    """The list of the test above: a reader of the journal's own group is shut out of it (0600,
    OTHER's), says so, and polls. It never tried again, even after the list took its journal's
    mode; now it lists its bell at a sweep, says so once, and is rung from then on."""
    directory = shared_directory(public_tmp)
    assert subscribe_as(OTHER, [], directory) == "slot 0"
    bells = Path(directory) / "j.bells"
    result: list[str] = []
    child = threading.Thread(target=lambda: result.append(shut_out_then_listed(directory)))
    child.start()
    try:
        wait_for(lambda: Path(directory, "shut out").exists(), what="the reader to be shut out")
        os.chown(bells, -1, NOBODY)
        os.chmod(bells, 0o660)  # as OTHER's reader would at its next subscription
    finally:
        child.join(timeout=180)
    said = result[0].splitlines()
    assert said[0] == "shut out True", said
    assert sum(f"cannot open the bells file {bells}" in line for line in said) == 1, said
    assert sum(f"listed in {bells} now" in line for line in said) == 1, said
    assert said[-1] == "rung", said
