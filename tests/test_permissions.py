"""Who may read and write journal files: owner-only by default, group sharing on request, nothing
written through a symlink or into another user's file, and nothing leaked when the disk is full.

These tests need root (to own files as another uid, become another user, and mount a small tmpfs);
each skips with its reason otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import ServiceProcess, wait_for
from mmipc import DiskFullError, JournalLockedError, MmipcError, Reader, StorageError, UsageError, Writer
from mmipc.journal._files import create_page

PAGE = 64 * 1024
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_0() -> Iterator[None]:
    """The widest umask: the modes below must not depend on it."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_files_and_a_new_directory_are_owner_only_by_default(tmp_path: Path, umask_0: None) -> None:
    jdir = str(tmp_path / "new")
    with Writer.create(jdir, "j", page_size=PAGE) as writer:
        writer.write(b"secret order")
        for _ in range(33):  # past half of page 0: the service prepares page 1 of a new journal now
            writer.write(bytes(1000))
        page1 = os.path.join(jdir, "j.00000001.journal")
        wait_for(lambda: os.path.exists(page1), what="page 1 prepared by the service")
    assert mode_of(jdir) == 0o700
    for name in ("j.00000000.journal", "j.00000001.journal", "j.lock"):
        assert mode_of(os.path.join(jdir, name)) == 0o600, name


def test_mode_0640_shares_with_the_group_and_the_service_follows_it(tmp_path: Path, umask_0: None) -> None:
    jdir = str(tmp_path / "shared")
    with Writer.create(jdir, "j", page_size=PAGE, mode=0o640, schemas={1: "ctp"}) as writer:
        writer.write(b"for the group")
        for _ in range(33):  # past half of page 0: the service prepares page 1 of a new journal now
            writer.write(bytes(1000))
        page1 = os.path.join(jdir, "j.00000001.journal")
        wait_for(lambda: os.path.exists(page1), what="page 1 prepared by the service")
        assert mode_of(page1) == 0o640  # created by the service, with the writer's mode
    assert mode_of(jdir) == 0o750
    for name in ("j.00000000.journal", "j.lock", "j.schema.json"):
        assert mode_of(os.path.join(jdir, name)) == 0o640, name


def test_the_mode_asked_for_is_set_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        with Writer.create(str(tmp_path / "d"), "j", page_size=PAGE, service=None, mode=0o640):
            pass
    finally:
        os.umask(old)
    assert mode_of(str(tmp_path / "d" / "j.00000000.journal")) == 0o640


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o400, 0o700, 0o1600, -1, "640"])
def test_a_mode_that_lets_others_write_is_refused(jdir: str, mode: object) -> None:
    with pytest.raises(UsageError, match="invalid file mode"):
        Writer.create(jdir, "j", service=None, mode=mode)  # type: ignore[arg-type]
    assert os.listdir(jdir) == []


def test_mmipc_write_takes_a_mode(tmp_path: Path, umask_0: None) -> None:
    jdir = str(tmp_path / "cli")
    cmd = [sys.executable, "-m", "mmipc", "write", "--journal", jdir, "j", "--count", "3", "--rate", "0"]
    cmd += ["--mode", "640"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert mode_of(jdir) == 0o750 and mode_of(os.path.join(jdir, "j.00000000.journal")) == 0o640
    bad = subprocess.run([*cmd[:-1], "666"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "invalid file mode 0o666" in bad.stderr and "Traceback" not in bad.stderr


# -- another user reading -------------------------------------------------------------------------


def run_as(uid: int, groups: list[int], action: Callable[[], str]) -> str:
    """Fork a child that becomes `uid` (group nobody, plus `groups`) and runs `action`: its result,
    "refused ..." for an MmipcError, or "crashed ..." for anything else (the test then fails).

    (The interpreter lives under /root, which another user cannot execute: so fork, not exec.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups(groups)
            os.setgid(NOBODY)
            os.setuid(uid)
            result = action()
        except MmipcError as exc:
            result = f"refused {exc}"
        except BaseException as exc:  # reported to the test, which then fails
            result = f"crashed {exc!r}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    os.waitpid(pid, 0)
    return output


def read_as(uid: int, groups: list[int], directory: str) -> str:
    """As `uid` (`run_as`), read the journal's first frame: "read ...", or "refused ..."."""

    def read() -> str:
        with Reader.create("other", service=None) as reader:
            reader.add_journal(directory, "j")
            frame = reader.read()
            return f"read {bytes(frame.data).decode()}" if frame else "read nothing"

    return run_as(uid, groups, read)


@pytest.fixture
def public_tmp() -> Iterator[str]:
    """A directory another user can reach (pytest's own tmp tree is root's, 0700)."""
    root = tempfile.mkdtemp(prefix="mmipc-perm-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_root
def test_a_reader_of_another_uid_reads_only_what_is_shared_with_its_group(public_tmp: str) -> None:
    private, shared = os.path.join(public_tmp, "private"), os.path.join(public_tmp, "shared")
    for directory, mode in ((private, 0o600), (shared, 0o640)):
        with Writer.create(directory, "j", page_size=PAGE, service=None, mode=mode) as writer:
            writer.write(b"order 1")
    group = os.stat(shared).st_gid
    assert read_as(NOBODY, [group], shared).startswith("read order 1")
    assert "Permission denied" in read_as(NOBODY, [group], private)
    assert "Permission denied" in read_as(NOBODY, [], shared)  # not in the group: no access


# -- files planted by someone else -----------------------------------------------------------------


@needs_root
def test_a_lock_file_symlinked_to_a_root_file_is_refused_and_the_target_untouched(
    jdir: str, tmp_path: Path
) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"root's data\n")
    os.symlink(target, os.path.join(jdir, "j.lock"))
    with pytest.raises(StorageError, match="symbolic link") as info:
        Writer.create(jdir, "j", service=None)
    assert os.path.join(jdir, "j.lock") in str(info.value)
    assert target.read_bytes() == b"root's data\n"
    assert os.listdir(jdir) == ["j.lock"]


@needs_root
def test_a_lock_file_owned_by_another_user_is_refused_and_untouched(jdir: str) -> None:
    lock = os.path.join(jdir, "j.lock")
    Path(lock).write_bytes(b"planted\n")
    os.chown(lock, NOBODY, NOBODY)
    with pytest.raises(StorageError, match=f"owned by uid {NOBODY}") as info:
        Writer.create(jdir, "j", service=None)
    assert lock in str(info.value)
    assert Path(lock).read_bytes() == b"planted\n"


@needs_root
def test_a_page_owned_by_another_user_is_not_written(jdir: str) -> None:
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        writer.write(b"mine")
    page = os.path.join(jdir, "j.00000000.journal")
    os.chown(page, NOBODY, NOBODY)
    before = Path(page).read_bytes()
    with pytest.raises(StorageError, match=f"owned by uid {NOBODY}"):
        Writer.create(jdir, "j", page_size=PAGE, service=None)
    assert Path(page).read_bytes() == before
    os.chown(page, 0, 0)
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:  # the lock was released
        writer.write(b"again")


# -- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[str]:
    """A real 1 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
    yield str(mount)
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: str) -> str:
    """Fill the file system to the last byte; return the path of the filler."""
    filler = os.path.join(disk, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_at_create_raises_disk_full_and_keeps_no_lock(small_disk: str) -> None:
    jdir = os.path.join(small_disk, "journals")
    os.mkdir(jdir)
    filler = fill(small_disk)
    for _ in range(2):  # the second attempt must meet the full disk again, not a lock left behind
        with pytest.raises(DiskFullError, match="Free space"):
            Writer.create(jdir, "j", page_size=PAGE)
    os.unlink(filler)
    with Writer.create(jdir, "j", page_size=PAGE) as writer:
        writer.write(b"after space was freed")


def test_an_existing_journal_opens_on_a_full_disk(small_disk: str) -> None:
    """The pid recorded in the lock file is a courtesy: the lock holds without it, and the writer can
    append to the room its current page already has."""
    with Writer.create(small_disk, "j", page_size=PAGE, service=None) as writer:
        writer.write(b"before")
    fill(small_disk)
    with Writer.create(small_disk, "j", page_size=PAGE, service=None) as writer:
        writer.write(b"on a full disk")
        with pytest.raises(JournalLockedError):
            Writer.create(small_disk, "j", page_size=PAGE, service=None)


@pytest.mark.parametrize("mode", [[6, 4, 0], 0o666, "0640"])
def test_a_page_message_with_a_bad_mode_is_refused_and_the_service_lives(
    service: ServiceProcess, jdir: str, mode: object
) -> None:
    from test_service import ask, raw_client

    sock = raw_client(service)
    journal = {"directory": jdir, "name": "j"}
    assert ask(sock, {"op": "register_writer", "id": 2, **journal})["ok"]
    create_page(jdir, "j", 0, PAGE)  # page 1 is made ahead only after page 0
    page = {"op": "page", "id": 3, **journal, "page_no": 0, "page_size": PAGE, "mode": mode}
    reply = ask(sock, page)
    assert reply["error"] == "bad_request" and "invalid file mode" in str(reply["message"]), reply
    assert "status" in ask(sock, {"op": "status", "id": 4})
    sock.close()
    assert not os.path.exists(os.path.join(jdir, "j.00000001.journal"))
