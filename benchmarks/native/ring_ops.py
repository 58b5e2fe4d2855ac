"""Writer.write of 64 B with R subscribed readers that never read, N times: callgrind's cost of a ring.

usage: ring_ops.py READERS N DIRECTORY   (the backend: MMIPC_BACKEND, as for api_ops.py)
The readers live in this process, subscribed before the first write and never reading: the
doorbell cost of a writer whose readers are awake and behind. Setup is the same for any N, so
(Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one write (ring_ops.sh).
"""

from __future__ import annotations

import sys

from mmipc import Reader, Writer

PAYLOAD = bytes(64)


def main() -> None:
    readers, n, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with Writer.create(directory, "ring", service=None, page_size=1 << 26) as writer:
        subscribed = [Reader.create(f"ring-{i}", service=None) for i in range(readers)]
        for reader in subscribed:
            reader.add_journal(directory, "ring")
        write = writer.write
        write(PAYLOAD)  # the first ring maps the bells: the same in every run
        for _ in range(n):
            write(PAYLOAD)
        for reader in subscribed:
            reader.close()


if __name__ == "__main__":
    main()
