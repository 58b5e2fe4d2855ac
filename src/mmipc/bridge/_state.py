"""A bridge's state file: what `mmipc status` shows of it, and the in-bridge's resume record.

Rules:

* One file per bridge name, ``<home>/bridges/<name>.json``, replaced atomically (write a temporary
  file, fsync, rename) at most a few times a second, so a reader always finds a whole record.
  ``<name>.lock`` is `flock`ed while the bridge runs: two bridges cannot share a name.
* The record says who (kind, pid, host), where (NATS URL, stream), how (`state`: "connecting",
  "connected", "paused" when the stream stopped acknowledging, "retrying" after a failure, with
  `error` and `retry_in_s`) and how far (per journal: frames and seconds of lag, the last
  acknowledged stream sequence). A record whose pid is gone is shown as "dead", never dropped.
* Standard library only: `mmipc status` imports this module without nats-py.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from ..journal._files import pid_alive, read_regular, try_lock, write_atomically
from ..service._home import resolve_home
from ._wire import BridgeError

STATE_DIR = "bridges"
MAX_FILE = 1 << 20


def state_dir(home: str | None) -> str:
    return os.path.join(resolve_home(home), STATE_DIR)


class StateFile:
    """The state file of one running bridge; `lock()` first."""

    def __init__(self, home: str | None, name: str) -> None:
        self.directory = state_dir(home)
        self.path = os.path.join(self.directory, name + ".json")
        self._lock_fd = -1

    def lock(self) -> StateFile:
        fd = try_lock(self.path[: -len(".json")] + ".lock")
        if fd is None:
            raise BridgeError(
                f"a bridge named by {self.path} is already running: give this one another --name"
            )
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def load(self) -> dict[str, Any]:
        """The last record written under this name ({} if none or unreadable)."""
        return _read(self.path) or {}

    def write(self, record: dict[str, Any]) -> None:
        body = json.dumps({**record, "pid": os.getpid(), "updated_ns": time.time_ns()}, sort_keys=True)
        write_atomically(self.path, body.encode(), sync_directory=False)  # a status, not a commit


def _read(path: str) -> dict[str, Any] | None:
    """The record at `path`, or None if it is not one: a FIFO never blocks (O_NONBLOCK), and a
    directory, a device or damaged JSON reads as nothing."""
    data = read_regular(path, MAX_FILE)
    if data is None:
        return None
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):  # json nests arrays recursively: a damaged file
        return None
    return record if isinstance(record, dict) else None


_TEXT = ("name", "kind", "state", "error", "host", "nats", "stream")
_NUMBERS = ("pid", "updated_ns", "acked_stream_seq", "lag_frames", "lag_s", "retry_in_s", "foreign_skipped")


def _typed(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every field `status` uses of the type it expects; a field of another type (a
    hand-edited or damaged file) is dropped, never trusted."""
    out = {k: v for k, v in record.items() if k not in _TEXT + _NUMBERS + ("journals",)}
    out.update({k: record[k] for k in _TEXT if isinstance(record.get(k), str)})
    out.update({k: record[k] for k in _NUMBERS if _is_number(record.get(k))})
    journals = record.get("journals")
    if isinstance(journals, dict):
        out["journals"] = {
            str(k): {f: v for f, v in j.items() if f not in _NUMBERS or _is_number(v)}
            for k, j in journals.items()
            if isinstance(j, dict)
        }
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_states(home: str | None = None) -> list[dict[str, Any]]:
    """Every bridge's last record in the home, with `alive` (its pid runs) and `age_s` added."""
    directory = state_dir(home)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return []
    out = []
    now = time.time_ns()
    for name in names:
        record = _read(os.path.join(directory, name))
        if record is None:
            continue
        record = _typed(record)
        record["alive"] = isinstance(pid := record.get("pid"), int) and pid_alive(pid)
        if not record["alive"]:
            record["state"] = "dead"
        record["age_s"] = round(max(0, now - int(record.get("updated_ns", now))) / 1e9, 3)
        record.pop("resume", None)  # the in-bridge's own bookkeeping
        out.append(record)
    return out


def state_lines(states: list[dict[str, Any]]) -> list[str]:
    """`mmipc status`'s lines for the bridges (none if there are none)."""
    if not states:
        return []
    lines = [
        "",
        f"{'BRIDGE':<28} {'KIND':<4} {'PID':>7} {'STATE':<10} {'ACKED SEQ':>10} {'LAG':>10} {'LAG S':>8}",
    ]
    for s in states:
        journals = s.get("journals", {}).values()
        frames = s.get("lag_frames", sum(j.get("lag_frames") or 0 for j in journals))
        lines.append(
            f"{s.get('name', '?'):<28} {s.get('kind', '?'):<4} {s.get('pid', 0):>7} "
            f"{s.get('state', '?'):<10} {s.get('acked_stream_seq', 0):>10} {frames:>10} {_lag_s(s):>8}"
        )
        if s.get("error") and s.get("state") != "connected":
            lines.append(f"  {s['error']}")
        if s.get("foreign_skipped"):
            lines.append(f"  {s['foreign_skipped']} foreign message(s) skipped (--skip-foreign)")
    return lines


def _lag_s(state: dict[str, Any]) -> str:
    """The LAG S column: "-" while a journal has frames waiting and none acknowledged yet (its
    `lag_s` is null in the record, so absent once read back)."""
    if "lag_s" in state:
        return f"{state['lag_s']:.3f}"
    journals = list(state.get("journals", {}).values())
    if any("lag_s" not in j for j in journals):
        return "-"
    return f"{max((j['lag_s'] for j in journals), default=0.0):.3f}"
