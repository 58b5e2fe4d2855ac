"""A parent whose child arms "die with parent" only after the parent is gone: the race, made certain.

usage: orphan_proc.py GO SURVIVED preexec|bench
Forks a child (with `preexec_die_with_me`'s function, or as a bench role through multiprocessing)
and prints "child PID". The child waits for the file GO (the test creates it after killing this
process with -9), arms, then creates SURVIVED: it must have died before.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable


def role(go: str, survived: str, arm: Callable[[], None]) -> None:
    while not os.path.exists(go):
        time.sleep(0.005)
    arm()
    open(survived, "w").close()
    time.sleep(600)


def main() -> None:
    go, survived, how = sys.argv[1:4]
    if how == "preexec":
        from mmipc.service._orphans import preexec_die_with_me

        arm = preexec_die_with_me()  # in the parent, before the fork, as subprocess's preexec_fn is
        pid = os.fork()
        if pid == 0:
            role(go, survived, arm)
            os._exit(0)
    else:
        from mmipc.bench import _die_with_conductor

        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=role, args=(go, survived, _die_with_conductor))
        proc.start()
        assert proc.pid is not None
        pid = proc.pid
    print("child", pid, flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
