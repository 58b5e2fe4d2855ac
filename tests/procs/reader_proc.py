"""A reader process: follows journals until each has sent its end marker, checking every frame.

usage: reader_proc.py DIR NAME [NAME ...]
Prints "ready" once it follows the journals (which need not exist yet), then one JSON line:
{"counts": {name: frames}, "errors": [...]} where errors lists damaged payloads, gaps, duplicates
and timestamp order violations within a journal. (Across live journals a frame stamped earlier can
be committed, and so read, after a later-stamped one: the merge orders committed frames.)
"""

from __future__ import annotations

import json
import os
import sys

import payloads

from mmipc import Reader


def main() -> None:
    directory, names = sys.argv[1], sys.argv[2:]
    reader = Reader.create(f"checker-{os.getpid()}")
    for name in names:
        reader.add_journal(directory, name)
    print("ready", flush=True)
    expected = dict.fromkeys(names, 0)
    errors: list[str] = []
    ended: set[str] = set()
    last_nano = dict.fromkeys(names, 0)
    for frame in reader.frames(timeout=300):
        name = frame.journal.name
        if frame.nano < last_nano[name]:
            errors.append(f"{name}: timestamp {frame.nano} after {last_nano[name]}")
        last_nano[name] = frame.nano
        if frame.msg_type == payloads.END_MSG:
            ended.add(name)
            if ended == set(names):
                break
            continue
        try:
            seq = payloads.check(frame.data)
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
            continue
        if seq != expected[name]:
            errors.append(f"{name}: got seq {seq}, expected {expected[name]}")
        expected[name] = seq + 1
    if ended != set(names):
        errors.append(f"timed out; ended: {sorted(ended)}")
    print(json.dumps({"counts": expected, "errors": errors[:20]}), flush=True)


if __name__ == "__main__":
    main()
