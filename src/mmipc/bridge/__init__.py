"""Bridges between journals and a NATS JetStream stream (the optional extra ``mmipc[nats]``).

Rules:

* `import mmipc` never imports this package, and this package imports neither nats nor asyncio
  until a bridge runs: `_wire` (subjects, ids, headers) and `_state` (the state files that
  `mmipc status` reads) are standard library only. Without nats-py, starting a bridge raises
  `NatsMissingError` saying to install ``mmipc[nats]``.
* The out-bridge (`run_out`) follows journals with an ordinary durable reader: the writer never
  waits for it. Each journal is one subject. Every publish is fenced with
  ``Nats-Expected-Last-Subject-Sequence`` (the stream sequence of the subject's last acknowledged
  message), so it lands right after that message or not at all. A lone frame goes out as one
  publish; a backlog as one **atomic batch** (JetStream's ``Nats-Batch-*`` headers) of up to
  `max_batch` frames, fenced on its first message and stored whole or not at all (`_out.Costs`
  chooses by measured round trips). One publish or batch per journal is in flight, and the journal
  itself is the buffer (backpressure). On start and after any failure the bridge asks the stream
  for each subject's last message, whose headers say where in the journal it came from, and
  resumes right after it.
  The durable cursor commits only acknowledged positions, so retention never removes unshipped pages.
* Message ids (``Nats-Msg-Id``) are ``HOST/JOURNAL/SEQ`` (format v2) or ``HOST/JOURNAL/pPAGE.END``
  (version 1 frames: the page and the offset just past the frame): positions, never timestamps
  (clamped timestamps repeat).
* The in-bridge (`run_in`) copies the stream into journals of the same names with `Writer.write_at`
  (original timestamps, types, sources and bytes). Its state file records the last stream sequence it
  processed and each mirror journal's seq at that moment; on restart, the mirror frames written after
  that record are matched, byte for byte, against the next messages of their subject and skipped,
  and messages whose id is not past the last one mirrored are dropped (dedupe by id). A message that
  is no mmipc frame (`_wire.ForeignMessage`) ends it, naming the subject and stream sequence, unless
  `skip_foreign`: then it is logged, counted and passed.
* Every network failure is transient: the bridge drops the connection, says "retrying" in its state
  file, backs off (0.1 s doubling to 5 s, with jitter) and starts again from the stream's view. It
  never spins and exits only on a conflict no retry can solve (`BridgeError`: another host's frames
  on the subject, a journal that no longer matches what the stream holds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._state import read_states
from ._wire import BridgeError, NatsMissingError

if TYPE_CHECKING:
    from ._options import InOptions, OutOptions

__all__ = ["BridgeError", "NatsMissingError", "read_states", "require_nats", "run_in", "run_out"]


def require_nats() -> None:
    """Raise `NatsMissingError` unless nats-py can be imported."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise NatsMissingError(
            "the bridge needs nats-py: install it with `pip install 'mmipc[nats]'`"
        ) from None


def run_out(options: OutOptions) -> None:
    """Run an out-bridge until SIGINT or SIGTERM.

    Example: ``run_out(OutOptions("nats://127.0.0.1:4222", "DESK", directory="/data/md", journals=["md"]))``
    """
    require_nats()
    from ._out import run

    run(options)


def run_in(options: InOptions) -> None:
    """Run an in-bridge until SIGINT or SIGTERM.

    Example: ``run_in(InOptions("nats://127.0.0.1:4222", "DESK", to="/data/mirror"))``
    """
    require_nats()
    from ._in import run

    run(options)
