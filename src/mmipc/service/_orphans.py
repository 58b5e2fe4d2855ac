"""Helper processes that die with the process that started them, even if it is killed with -9.

`die_with_parent()` asks the kernel (prctl PR_SET_PDEATHSIG) to send SIGKILL to the calling process
when its parent dies. The bench roles call it first thing; the demo's and the torture harness's
children get it through `preexec_fn`. Without it, a conductor killed with -9 would leave pinned,
busy-polling helpers spinning on every core.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getppid()
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return  # not Linux, or refused: the helper then relies on its conductor's clean-up
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
