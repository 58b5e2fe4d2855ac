"""Where the service lives: its home directory, socket and lock.

The home is `--home`/`home=`, else `$MMIPC_HOME`, else `$XDG_RUNTIME_DIR/mmipc`, else
`/tmp/mmipc-UID`. The service creates it with mode 0700. Service and clients alike refuse a home
that is not a directory owned by this user (a symlink, another user's, or one that others may write),
so another local user cannot squat a home, plant a socket in it, or swap ours: a client checks the
home before it connects, and then the service's uid (SO_PEERCRED) before it sends a byte.
"""

from __future__ import annotations

import os
import stat

from .._errors import ServiceUnavailableError, UsageError
from ..journal._files import check_directory

SOCKET_NAME = "service.sock"
LOCK_NAME = "service.lock"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def resolve_home(home: str | os.PathLike[str] | None = None) -> str:
    if home is not None:
        return check_directory(home, "service home")
    if os.environ.get("MMIPC_HOME"):
        return os.path.abspath(os.environ["MMIPC_HOME"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "mmipc")
    return f"/tmp/mmipc-{os.getuid()}"


def socket_path(home: str) -> str:
    path = os.path.join(home, SOCKET_NAME)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise UsageError(f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes: choose a shorter home")
    return path


def ensure_home(home: str) -> None:
    """Create `home` with mode 0700, or check that the existing one is safe to use."""
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ServiceUnavailableError(f"cannot create service home {home}: {exc.strerror}") from exc
    info = _owned_directory(home)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(home, 0o700)


def check_home(home: str) -> None:
    """Raise unless `home` is a directory of this user that no other user may write (for clients)."""
    try:
        info = _owned_directory(home)
    except FileNotFoundError:
        return  # no home, hence no socket: connecting says "no service" with the way to start one
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(
            f"service home {home} may be written by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            "refusing it; only a service you started may own it (chmod 700 it, or remove it)"
        )


def _owned_directory(home: str) -> os.stat_result:
    info = os.lstat(home)
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(
            f"service home {home} is a {_kind(info.st_mode)}, not a directory: refusing it "
            "(remove it, or choose another home with --home or MMIPC_HOME)"
        )
    if info.st_uid != os.getuid():
        raise UsageError(
            f"service home {home} is not a directory owned by uid {os.getuid()}: refusing it "
            f"(it is owned by uid {info.st_uid}; remove it, or choose another home with --home or MMIPC_HOME)"
        )
    return info


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "symbolic link"), (stat.S_ISREG, "regular file"), (stat.S_ISFIFO, "FIFO")]
    kinds += [(stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")]
    return next((kind for test, kind in kinds if test(mode)), "special file")
