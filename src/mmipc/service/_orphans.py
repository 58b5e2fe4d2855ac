"""Helper processes that die with the process that started them, even if it is killed with -9.

`die_with_parent(parent)` asks the kernel (prctl PR_SET_PDEATHSIG) to send a signal to the calling
process when its parent dies. The bench roles call it first thing; the demo's, the torture harness's
and `spawn_service`'s children get it through `preexec_fn=preexec_die_with_me()`. Without it, a
conductor killed with -9 would leave pinned, busy-polling helpers spinning on every core.

The request only covers a parent alive when it is made: one that died between the fork and the
prctl has already handed the child to another (init, or a subreaper), and the child would live on.
So the parent's pid is recorded BEFORE the fork, by the parent (`preexec_die_with_me`; the bench
roles take the pid multiprocessing recorded), and compared with getppid() AFTER the prctl. Reading
getppid() in the child instead would read the new parent's pid when the race was lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Get `sig` when the parent dies; at once if it is not `parent` (pid taken before the fork)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return  # not Linux, or refused: the helper then relies on its conductor's clean-up
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def preexec_die_with_me(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` for a child that must die with this process: our pid is taken now."""
    parent = os.getpid()
    return lambda: die_with_parent(parent, sig)
