"""Replay: copy recorded journals into new ones at their recorded pace (or faster).

Rules:

* Frames are read with a `Reader`, so the order is the live order: merged by timestamp, ties to the
  journal given first. Each goes to the journal of the same name in the target directory, with its
  msg_type, source and payload unchanged, written with `Writer.write_at`.
* Timestamps: by default each frame keeps its recorded timestamp, so a strategy sees exactly the
  times it saw live. With `retime`, frame i is stamped `start + (nano_i - nano_0) / speed` instead
  (start = when the replay began; speed 1 for 'max'): the recorded spacing, scaled, on today's clock.
* Pacing: frame i is written no earlier than `(nano_i - nano_0) / speed` after the replay began
  (speed None: as fast as possible). A replay that falls behind catches up without dropping frames.
* Declared schemas are copied to the target journals, so the replayed frames decode the same way, and
  a target journal carries checksums if its source's last page does.
* The source is read up to what is committed when the replay starts running out of frames: it does
  not wait for more. Target journals must be new or end before the first replayed timestamp
  (`UsageError` from `write_at` otherwise, naming the journal).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import UsageError
from ..journal._files import check_name, list_pages, page_path
from ..journal._layout import CHECKSUMS_BIT
from ..journal._page import page_header
from ..journal._reader import Reader
from ..journal._schema import load_schemas
from ..journal._writer import Writer
from ..service._link import ServiceHome

MIN_SPEED = 1e-3  # slower than this, one second of a recording would take over a quarter of an hour


@dataclass(frozen=True)
class Replayed:
    frames: int
    first_nano: int
    last_nano: int


def parse_speed(text: str) -> float | None:
    """'1x', '10x', '0.5x' (or '10') as a factor; 'max' as None (no pacing)."""
    if text == "max":
        return None
    try:
        speed = float(text[:-1] if text.endswith("x") else text)
    except ValueError:
        speed = 0.0
    if not MIN_SPEED <= speed < float("inf"):
        raise UsageError(
            f"speed {text!r} is not a factor of at least {MIN_SPEED:g}x (like 1x or 10x), nor 'max'"
        )
    return speed


def replay(
    directory: str,
    names: Sequence[str],
    target: str,
    *,
    speed: float | None = 1.0,
    retime: bool = False,
    since: int | None = None,
    until: int | None = None,
    service: ServiceHome = None,
) -> Replayed:
    """Replay journals `names` of `directory` into `target` (see the module's rules)."""
    source, target = os.path.abspath(directory), os.path.abspath(target)
    if _same_directory(source, target):
        raise UsageError(f"replay into {target} would write the journals it reads: give another directory")
    reader = Reader.create(f"mmipc-replay-{os.getpid()}", service=None)
    writers: dict[str, Writer] = {}
    try:
        for name in names:
            reader.add_journal(source, check_name(name), start=since if since is not None else "begin")
        for name in names:
            writers[name] = Writer.create(
                target,
                name,
                service=service,
                schemas=load_schemas(source, name) or None,
                checksum=_has_checksums(source, name),
            )
        return _copy(reader, writers, speed, retime, until)
    finally:
        reader.close()
        for writer in writers.values():
            writer.close()


def _has_checksums(directory: str, name: str) -> bool:
    """Whether the journal's last page carries checksums: its copy is then protected as well."""
    pages = list_pages(directory, name)
    return bool(pages) and bool(page_header(page_path(directory, name, pages[-1])).flags & CHECKSUMS_BIT)


def _same_directory(source: str, target: str) -> bool:
    """Whether both name one directory: spelled alike, or through a symlink or a bind mount."""
    try:
        return source == target or os.path.samefile(source, target)
    except OSError:  # a target that does not exist yet is another directory
        return False


def _copy(
    reader: Reader,
    writers: dict[str, Writer],
    speed: float | None,
    retime: bool,
    until: int | None,
) -> Replayed:
    count = first = last = 0
    started_ns, started = time.time_ns(), time.monotonic()
    while (frame := reader.read()) is not None:
        if until is not None and frame.nano > until:
            break
        first = first or frame.nano
        offset = (frame.nano - first) / (speed or 1.0)
        if speed is not None:
            _sleep_until(started + offset / 1e9)
        stamp = started_ns + int(offset) if retime else frame.nano
        writers[frame.journal.name].write_at(frame.data, stamp, frame.msg_type, frame.source)
        count, last = count + 1, frame.nano
    return Replayed(count, first, last)


def _sleep_until(deadline: float) -> None:
    """Sleep until `deadline`, in steps: a very slow replay's deadline may lie past what sleep() takes."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))
