"""Writer.write of 64 B with R subscribed readers, N times: callgrind's cost of a ring.

usage: ring_ops.py READERS N [behind|keepup|inproc] DIRECTORY
(the backend: MMIPC_BACKEND, as for api_ops.py)

`behind` (the default): the readers live in this process, subscribed before the first write and
never reading: the doorbell cost of a writer whose readers are awake and behind.
`keepup`: each reader is a process of its own (not traced by callgrind) that follows this journal
and a second one nobody writes, so it is a merging reader, which clears its flag at every collect,
and reads every frame as it comes: the writer finds flags cleared and rings. (A reader of one
journal never clears its flag: for the writer it is the same as `behind`.) Under valgrind the
writer is far slower than its readers, so they keep up with nearly every frame; their timing is
not exact, so this count drifts a little from run to run.
`inproc`: the readers live in this process, merging (this journal and an idle one) and each
reading every frame right after each write: the keep-up case made exact, for a count of the
write call alone (ring_ops.sh runs it with --toggle-collect on the native core's write).
Setup is the same for any N, so (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one write (ring_ops.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys

from mmipc import Reader, Writer

PAYLOAD = bytes(64)


def keep_up(directory: str, stop: str) -> None:
    """A reader process: follow the journal (and an idle one), read every frame until `stop` exists."""
    with Reader.create(f"keepup-{os.getpid()}", service=None) as reader:
        reader.add_journal(directory, "ring")
        reader.add_journal(directory, "idle")
        print("ready", flush=True)
        read = reader.read
        while True:
            while read() is not None:
                pass
            if os.path.exists(stop):
                return


def start_readers(readers: int, directory: str) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(readers):
        proc = subprocess.Popen(
            [sys.executable, __file__, "reader", directory, os.path.join(directory, "stop")],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return procs


def main() -> None:
    readers, n, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[-1]
    mode = sys.argv[3] if len(sys.argv) > 4 else "behind"
    with Writer.create(directory, "ring", service=None, page_size=1 << 26) as writer:
        subscribed, procs = [], []
        if mode == "keepup":
            procs = start_readers(readers, directory)
        else:
            subscribed = [Reader.create(f"ring-{i}", service=None) for i in range(readers)]
            for reader in subscribed:
                reader.add_journal(directory, "ring")
                if mode == "inproc":
                    reader.add_journal(directory, "idle")
        write = writer.write
        write(PAYLOAD)  # the first ring maps the bells: the same in every run
        if mode == "inproc":
            reads = [reader.read for reader in subscribed]
            for _ in range(n):
                write(PAYLOAD)
                for read in reads:
                    while read() is not None:
                        pass
        else:
            for _ in range(n):
                write(PAYLOAD)
        for reader in subscribed:
            reader.close()
        with open(os.path.join(directory, "stop"), "w"):
            pass
        for proc in procs:
            proc.wait()


if __name__ == "__main__":
    if sys.argv[1] == "reader":
        keep_up(sys.argv[2], sys.argv[3])
    else:
        main()
