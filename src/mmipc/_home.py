"""Where the service lives: its home directory, socket and lock.

The home is `--home`/`home=`, else `$MMIPC_HOME`, else `$XDG_RUNTIME_DIR/mmipc`, else
`/tmp/mmipc-UID`. It is created with mode 0700; an existing home must be a directory owned by this
user (not a symlink), or it is refused, so another local user cannot plant a socket for us to use.
"""

from __future__ import annotations

import os
import stat

from ._errors import ServiceUnavailableError, UsageError

SOCKET_NAME = "service.sock"
LOCK_NAME = "service.lock"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def resolve_home(home: str | os.PathLike[str] | None = None) -> str:
    if home is not None:
        return os.path.abspath(os.fspath(home))
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
    info = os.lstat(home)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UsageError(f"service home {home} is not a directory owned by uid {os.getuid()}: refusing it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(home, 0o700)
