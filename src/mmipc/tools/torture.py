"""The torture harness: real processes, real faults, and a verdict that counts what was lost.

`mmipc torture --seconds 60 --seed 1` starts a service, WRITERS writer processes (one journal each,
small pages so that pages switch constantly) and READERS reader processes (each merging every
journal). Until the time is up it injects faults at random moments, in rounds that hold every kind
once in a random order (so that a run of a few seconds has met each of them):

* SIGKILL of a writer, restarted after a pause (sometimes under an RLIMIT_FSIZE below the page size);
* SIGKILL of a reader, restarted from its saved position or from the start;
* SIGKILL of the durable reader (`durable=True`), restarted to resume from its committed position:
  it may see frames again, only frames after its last commit (its first frame of each journal after
  a restart is checked against what it had committed), and never misses one;
* retention: the service keeps at most RETAIN_PAGES pages per journal (a pass every 0.1 s), and the
  `prune` fault runs the same by hand from the conductor at random moments. Neither may remove a
  page a durable reader has not committed past (also while it is dead) or a live reader stands on:
  the readers' gap checks catch it, and the conductor checks that every journal's pages stay
  consecutive. A live reader that was killed holds nothing while it is dead, so at its restart its
  first frame of a journal may come after frames retention removed meanwhile: counted, allowed;
* SIGKILL of the service, restarted after a pause;
* SIGSTOP of any process, SIGCONT after a pause;
* a page that cannot be created (a directory planted where the next page file goes).

Then every writer is asked to finish: it appends an end frame carrying how many frames it
committed. Every reader must then report each journal's frames, exactly once, in order and intact.
A replay of every journal (from its oldest page left) must be gapless, merge in timestamp order and
pass `check_journal`. Every payload carries its writer, its sequence number and a CRC of its body.
Violations must be 0.

The roles run as `python -m mmipc.tools.torture writer|reader ...`; nothing here is mocked.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
import time
import zlib
from typing import Any

from .. import (
    JournalLockedError,
    MmipcError,
    Reader,
    ReaderNameTakenError,
    ServiceUnavailableError,
    StorageError,
    Writer,
)
from ..journal._layout import FIRST_SEQ_OFFSET, SEQ_FIELD

HEAD = struct.Struct("<IQII")  # writer id, sequence, body length, CRC-32 of the body
DATA, END = 1, 2
RETAIN_PAGES = 4  # the service's retention in the torture: at most 4 pages per journal
# A reader that has gone this long without a frame stops and reports what it has not seen (a
# violation, "w1 sent N, verified M"), well within the harness's 120 s wait for it and the test's
# limit: a reader left waiting for an end frame that never comes is then named, not a timeout.
IDLE_LIMIT = 60.0
PACE_EVERY, PACE_SECONDS = 25, 0.002  # about 10,000 frames/s per writer: gigabytes, not terabytes


def make_payload(writer: int, seq: int) -> bytes:
    body = (seq.to_bytes(8, "little") * 40)[: 16 + seq * 7919 % 300]
    return HEAD.pack(writer, seq, len(body), zlib.crc32(body)) + body


def check_payload(data: memoryview, writer: int) -> int:
    """The payload's sequence number; ValueError if it is not intact or not this writer's."""
    who, seq, length, crc = HEAD.unpack_from(data, 0)
    body = data[HEAD.size :]
    if who != writer or len(body) != length or zlib.crc32(body) != crc:
        raise ValueError(f"payload of writer {writer} seq {seq} is damaged")
    return int(seq)


def retry(action: Any, *errors: type[BaseException], seconds: float = 60.0) -> Any:
    """Call `action` until it stops raising `errors` (the service may be down, a lock not yet free)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except errors:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# -- the writer role -----------------------------------------------------------------------------


def writer_main(directory: str, index: int, page_size: int, fsize: int) -> None:
    stop_file = os.path.join(directory, "..", "stop")  # the conductor's "finish now" (a file: no race)
    if fsize:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    name = f"w{index}"
    writer: Writer = retry(
        lambda: Writer.create(directory, name, page_size=page_size),
        ServiceUnavailableError,
        JournalLockedError,
        StorageError,
    )
    seq = _resume_seq(directory, name, index, writer.last_nano)
    print(f"resume {seq}", flush=True)
    failures = 0
    while True:
        try:
            writer.write(make_payload(index, seq), msg_type=DATA)
        except StorageError:
            failures += 1  # a page could not be created: nothing was written; try again
            time.sleep(0.005)
            continue
        seq += 1
        if seq % PACE_EVERY == 0:
            if os.path.exists(stop_file):
                break
            time.sleep(PACE_SECONDS)
    retry(lambda: writer.write(struct.pack("<QQ", seq, failures), msg_type=END), StorageError)
    writer.close()
    print(f"done {seq} {failures}", flush=True)


def _resume_seq(directory: str, name: str, index: int, last_nano: int) -> int:
    if not last_nano:
        return 0
    reader = Reader.create(f"resume-{os.getpid()}", service=None)
    reader.add_journal(directory, name, start=last_nano)
    seq = -1
    for frame in iter(reader.read, None):
        seq = check_payload(frame.data, index) if frame.msg_type == DATA else seq
    reader.close()
    return seq + 1


# -- the reader role -----------------------------------------------------------------------------


class ReaderState:
    """What a reader has verified, saved atomically so that a restarted reader can go on from it.

    `committed` (durable reader): per journal, `expected` as of its last commit known to have
    returned (-1: none yet); the commit may also have gone further, up to `expected`. `removed`:
    frames that retention removed while a live reader was dead (allowed, counted)."""

    def __init__(self, writers: int) -> None:
        self.expected = [0] * writers
        self.last_nano = [0] * writers
        self.committed = [-1] * writers
        self.holding = False  # durable reader: its first commit returned, its cursor file holds pages
        self.ended: dict[int, int] = {}
        self.errors: list[str] = []
        self.inversions = self.skipped = self.removed = self.restarts = 0

    def save(self, path: str) -> None:
        with open(path + ".tmp", "w") as f:
            json.dump(self.__dict__, f)
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str, writers: int) -> ReaderState:
        state = cls(writers)
        try:
            with open(path) as f:
                state.__dict__.update(json.load(f))
            state.ended = {int(k): v for k, v in state.ended.items()}
        except FileNotFoundError:
            pass
        return state


def durable_main(directory: str, index: int, writers: int, state_path: str) -> None:
    """The durable reader: its verified state is saved before each commit, so a restart resumes at
    or before what it verified (frames seen again are counted as skipped; a gap is an error), and
    at or after what it had committed (an earlier frame is an error)."""
    state = ReaderState.load(state_path, writers)
    state.restarts += os.path.exists(state_path)
    reader = retry(
        lambda: Reader.create(f"d{index}", durable=True), ServiceUnavailableError, ReaderNameTakenError
    )
    for w in range(writers):
        reader.add_journal(directory, f"w{w}")  # resumes after the last commit, or from the start
    reader.commit()  # from now on its cursor file holds every journal's pages, also while it is dead
    held_before = state.holding  # saved True once this commit returned and first frames were judged
    first = [True] * writers
    saved_at = time.monotonic()
    for frame in reader.frames(timeout=IDLE_LIMIT):
        w = int(frame.journal.name[1:])
        if first[w] and frame.msg_type == DATA:
            first[w] = False
            _check_resumed(state, w, frame, held_before)
        if frame.msg_type == DATA and _seen(state, w, frame):
            continue
        _verify(state, w, frame)
        if len(state.ended) == writers:
            break
        if time.monotonic() - saved_at > 0.1:
            state.holding = True
            state.save(state_path)
            reader.commit()
            state.committed = list(state.expected)
            saved_at = time.monotonic()
    state.save(state_path)
    reader.close()
    print(json.dumps({"reader": f"d{index}", **state.__dict__}), flush=True)


def _check_resumed(state: ReaderState, w: int, frame: Any, held: bool) -> None:
    """A durable reader's first frame of journal w after a (re)start: right after a commit. Before
    its first commit ever returned (`held` False), it held nothing: frames retention removed while
    it was dead are allowed (counted), if it lands on the first frame of a page."""
    try:
        seq = check_payload(frame.data, w)
    except ValueError:
        return  # _verify reports it
    if seq < state.committed[w]:
        state.errors.append(f"w{w}: resumed at seq {seq}, before its last commit ({state.committed[w]})")
    elif seq > state.expected[w] and not held and _first_of_its_page(frame):
        state.removed += seq - state.expected[w]
        state.expected[w] = seq


def _first_of_its_page(frame: Any) -> bool:
    """True if `frame` is its page's first data frame (where a reader lands after retention removed
    the pages before). A frame's data is a view of its page's mapping, whose header has first_seq."""
    return bool(frame.seq >= 0 and SEQ_FIELD.unpack_from(frame.data.obj, FIRST_SEQ_OFFSET)[0] == frame.seq)


def _seen(state: ReaderState, w: int, frame: Any) -> bool:
    try:
        seen = check_payload(frame.data, w) < state.expected[w]
    except ValueError:
        return False  # _verify reports it
    state.skipped += seen
    return seen


def reader_main(directory: str, index: int, writers: int, state_path: str, resume: bool) -> None:
    state = ReaderState.load(state_path, writers) if resume else ReaderState(writers)
    reader = retry(lambda: Reader.create(f"r{index}"), ServiceUnavailableError, ReaderNameTakenError)
    for w in range(writers):
        reader.add_journal(directory, f"w{w}", start=state.last_nano[w] or "begin")
    saved_at, last_nano = time.monotonic(), 0
    first = [True] * writers
    for frame in reader.frames(timeout=IDLE_LIMIT):
        w = int(frame.journal.name[1:])
        if frame.nano < last_nano:
            state.inversions += 1  # live merge across journals: see README, "Live merging"
        last_nano = frame.nano
        if first[w] and frame.msg_type == DATA:
            first[w] = False
            _skip_removed(state, w, frame)
        _verify(state, w, frame)
        if len(state.ended) == writers:
            break
        if time.monotonic() - saved_at > 0.1:
            state.save(state_path)
            saved_at = time.monotonic()
    state.save(state_path)
    print(json.dumps({"reader": index, **state.__dict__}), flush=True)


def _skip_removed(state: ReaderState, w: int, frame: Any) -> None:
    """A live reader's first frame of journal w since it started: frames before it that retention
    removed while the reader was dead (or before it started) are not a gap, if it lands on the
    first frame of a page: retention removes whole pages."""
    try:
        seq = check_payload(frame.data, w)
    except ValueError:
        return  # _verify reports it
    if seq > state.expected[w] and _first_of_its_page(frame):
        state.removed += seq - state.expected[w]
        state.expected[w] = seq


def _verify(state: ReaderState, w: int, frame: Any) -> None:
    if frame.nano < state.last_nano[w]:
        state.errors.append(f"w{w}: timestamp went back")
    state.last_nano[w] = frame.nano
    if frame.msg_type == END:
        state.ended[w] = struct.unpack_from("<Q", frame.data)[0]
        return
    try:
        seq = check_payload(frame.data, w)
    except ValueError as exc:
        state.errors.append(str(exc))
        return
    if seq < state.expected[w]:
        state.skipped += 1  # re-read at a restart from the saved position: seen already
    elif seq > state.expected[w]:
        state.errors.append(f"w{w}: got seq {seq}, expected {state.expected[w]} (a gap)")
        state.expected[w] = seq + 1
    else:
        state.expected[w] += 1


def main(argv: list[str]) -> None:
    role, directory = argv[0], argv[1]
    if role == "writer":
        writer_main(directory, int(argv[2]), int(argv[3]), int(argv[4]))
    elif argv[5] == "durable":
        durable_main(directory, int(argv[2]), int(argv[3]), argv[4])
    else:
        reader_main(directory, int(argv[2]), int(argv[3]), argv[4], argv[5] == "saved")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except MmipcError as exc:
        print(f"torture role failed: {exc}", file=sys.stderr)
        sys.exit(2)
