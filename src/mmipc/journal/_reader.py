"""The reader: merges any number of journals into one stream ordered by timestamp.

Rules:

* `read()` never blocks and never returns a frame whose commit word it has not seen set.
* Merge order: among the journals' next committed frames, the smallest timestamp comes first; ties go
  to the journal added first; within one journal, append order always holds.
* A frame that is peeked (its header read to compare timestamps) but not returned stays peeked: it
  was committed, and committed frames never change, so the next `read()` does not read it again.
* A reader holds no lock and writes nothing but its doorbell (_bell.py): its own file, and its
  slot in each followed journal's ``NAME.bells``, reclaimed by the next subscriber once its process
  is gone. Kill it at any moment and nothing else notices. A durable reader (`durable=True`) is the
  other exception, kept apart in `_durable`: it locks and writes its own cursor file, and only in
  `commit()` (or its automatic commits), never in `read()` unless `commit_every` asks for it.
* A reader belongs to the thread that created it, as a writer does (_writer.py rule 8). `read`,
  `read_data`, `read_batch`, `frames`, `seek`, `commit`, `add_journal`, `remove_journal` and `close`
  from any other thread raise `UsageError` before touching anything: two threads reading one reader
  would race in its page switches and report corruption that is not on disk. asyncio (`aread`,
  `aframes`) reads in the loop's thread: create the reader there. To hand a reader to another thread,
  stop using it in the first, then call `adopt()` in the second. Native backend: the check is in C
  at the reader's entry points (`MergeCore.read_single`/`next`), about 11 instructions a read. Pure
  Python: in `Cursor.read`, `Cursor.read_data` and `Merge.read`, after an empty read has found
  nothing (so it costs nothing then), about 500 instructions a frame (get_ident makes an int).
* A forked child inherits every reader with the parent's state: its durable position, its doorbell
  and bell-list slots, its counter file. Used there it would commit a position the parent never
  processed (a restart then skips those frames), subscribe the parent's bell to more journals, or
  remove the parent's counter file. So, as a writer is (_writer.py rule 6), every reader is marked
  inherited in the child at fork: each operation (`read`, `read_data`, `read_batch`, `frames`,
  `aread`, `seek`, `commit`, `add_journal`, `remove_journal`, `adopt`) raises `UsageError` (open a
  new reader in the child), and `close()`, the child's exit or the GC release only the child's
  copies (its maps and descriptors): no commit, no unsubscribe, no unlink, no unregistration. A
  `read` bound before the fork raises too (native: the C entry points' owner check; pure Python:
  when it finds a frame, as for the thread check), and a durable reader's automatic commit never
  runs in the child (`Durable.commit` refuses there).
"""

from __future__ import annotations

import _thread
import functools
import math
import os
import sys
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, NoReturn, TypeVar

from .._errors import ClosedError, ReaderNameTakenError, ServiceRefusedError, StorageError, UsageError
from ..service._servicehome import DEFAULT_HOME, ServiceHome, link_for
from ._backend import native
from ._batch import FrameBatch, FramesBatch
from ._block import Block, block_frames
from ._cursor import READING, Cursor, Start
from ._files import check_directory, check_name
from ._merge import Merge
from ._times import float_seconds, to_nano
from ._types import Frame, JournalId
from ._wait import WaitName, WaitStrategy, make_wait

if TYPE_CHECKING:  # the link is imported when a reader first registers (see _servicehome)
    from datetime import datetime

    from ..service._link import Link
    from ._durable import Durable
    from ._metrics import Board


_get_ident = _thread.get_ident  # _thread, not threading: `import mmipc` stays light
T = TypeVar("T")

_READ_DOC = """read() -> Frame | None: the next frame across every added journal, in timestamp order.

Returns None at once if no journal has a new committed frame; it never blocks (use `frames()` to
wait). Bound per instance: with one journal it is that journal's own fused read, with several the
merge. Bind it once in a hot loop::

    read = reader.read
    while (frame := read()) is not None:
        handle(frame.data)
"""

_READ_DATA_DOC = """read_data() -> memoryview | None: the next frame's payload alone, as `read().data`.

For a consumer that needs nothing else of the frame (a journal of one message type, or a payload
that carries its own type): the same frame, order, checks and errors as `read()`, and the frame
counts as read; only no Frame is made. With one journal it is the cursor's own method (on the
native backend the C method itself: no Python frame per call). Bind it once in a hot loop::

    read_data = reader.read_data
    while (data := read_data()) is not None:
        handle(data)
"""


class Reader:
    """Reads frames from journals in timestamp order. Create it with `Reader.create(name)`.

    ``read()`` returns the next frame across all added journals in timestamp order, or None if there
    is none yet; it never blocks. (It is bound per instance: with one journal it is that journal's
    own fused read, with several the merge.)

    A reader belongs to the thread that created it: from another thread its methods raise
    `UsageError` (`adopt()` hands it over). Two threads reading one reader would each see part of
    the stream, and race in its page switches into false corruption reports.

    Example: ``with Reader.create("strategy-1") as r: r.add_journal("/data/md", "md.ctp")``
    """

    # A dict gives the `read` slot its docstring, so help(Reader) documents it; a method could not
    # be shadowed per instance without losing the interpreter's fast slot lookup.
    __slots__ = {
        "name": "The reader's name, as the service knows it.",
        "_cursors": None,
        "_merge": None,
        "_closed": None,
        "read": _READ_DOC,
        "read_data": _READ_DATA_DOC,
        "_link": None,
        "_durable": None,
        "_board": None,
        "_finalizer": None,
        "_thread": None,
        "_inherited": None,
        "__weakref__": None,
    }
    read: Callable[[], Frame | None]
    read_data: Callable[[], memoryview | None]

    def __init__(self, name: str, link: Link | None, durable: Durable | None = None) -> None:
        self.name = name
        self._merge = Merge()  # the merge and the doorbell (_merge.py); shares the cursor list
        self._cursors: list[Cursor] = self._merge.cursors
        self._closed = False
        self._inherited = False  # a forked child's copy (see the rules): it refuses everything
        self._thread = _get_ident()
        self._link = link
        self._durable = durable
        self._board: Board | None = None
        if link is not None:
            from ._metrics import open_board  # linked readers only: the link has loaded its peers

            try:
                self._board = open_board(os.path.dirname(link.path), name, self._cursors, durable is not None)
            except StorageError:  # no position file, no reader: free its name and cursor lock
                _unregister(link, name, durable, None)
                raise
        self._rebind()
        self._finalizer = weakref.finalize(self, _unregister, link, name, durable, self._board)
        weakref.finalize(self, self._merge.close)  # a dropped reader frees its doorbell and slots
        _LIVE.add(self)

    def _rebind(self) -> None:
        """Point `read` and `read_data` at the fastest correct implementations for the journals added
        now.

        None of them refers back to the reader: a cycle would keep a dropped reader (and its
        registered name) alive until the cyclic garbage collector happened to run.
        """
        core = self._merge.core
        self._own()
        if self._closed:
            self.read = functools.partial(_read_closed, self.name)
        elif len(self._cursors) == 1:
            self.read = self._cursors[0].read if core is None else core.read_single
        else:
            self._merge.rebuild()
            self.read = self._merge.read_function()
        if self._durable is not None and not self._closed:
            read = self.read
            self.read = self._durable.auto(read, self._cursors)
            if self.read is not read:  # it commits before the read: check first
                self.read = _owned(self.read, self.name, self._thread)
        if len(self._cursors) == 1 and self._durable is None and not self._closed:
            self.read_data = self._cursors[0].read_data if core is None else core.read_single_data
        else:
            self.read_data = _data_of(self.read)

    def _own(self) -> None:
        """Tell the reader's entry points its thread: the C merge's (`read_single`, `next`), or on
        the pure-Python backend `Cursor.read`, `Cursor.read_data` and `Merge.read`, which check it."""
        on_thread = functools.partial(_raise_other_thread, self.name, self._thread)
        core = self._merge.core
        if self._closed:
            return  # the merge's close left every entry point raising ClosedError
        if core is None:
            self._merge.owner, self._merge.on_thread = self._thread, on_thread
            for cursor in self._cursors:
                cursor.owner, cursor.on_thread = self._thread, on_thread
            return
        if len(self._cursors) == 1:  # kept after: a `read` bound before reads on, as a cursor's did
            core.single = self._cursors[0]
        core._c_thread, core.on_thread = self._thread, on_thread

    @classmethod
    def create(
        cls,
        name: str,
        *,
        service: ServiceHome = DEFAULT_HOME,
        durable: bool = False,
        cursor_dir: str | os.PathLike[str] | None = None,
        commit_every: float | None = None,
    ) -> Reader:
        """A reader named `name` (same naming rule as journals), with no journal yet.

        It registers with the service of home `service` (default: $MMIPC_HOME or the per-user home),
        which refuses a name another live reader holds (`ReaderNameTakenError`); `service=None` runs
        standalone.

        `durable=True` keeps, per journal, the position of the last frame acknowledged by `commit()`
        in ``<cursor_dir>/<name>.cursor`` (default cursor_dir: the service home's ``cursors/``), and
        `add_journal` resumes right after it. `commit_every` commits automatically every N frames
        (an int) or seconds (a float), before the read that follows; `close()` commits.

        Example: ``Reader.create("strategy-1", service=None)``, or durable:
        ``Reader.create("strategy-1", durable=True, commit_every=100)``
        """
        check_name(name, "reader")
        durable_state = _open_durable(name, service, cursor_dir, commit_every) if durable else None
        try:
            link = _register(name, service)
        except BaseException:
            if durable_state is not None:
                durable_state.file.unlock()
            raise
        return cls(name, link, durable_state)

    def commit(self) -> None:
        """Durable readers: acknowledge every frame `read()` has returned so far (atomic, fsynced).

        Example: ``frame = r.read(); handle(frame); r.commit()  # a restart resumes after frame``
        """
        self._check_open()
        self._check_not_reading("commit")
        if self._durable is None:
            raise UsageError(f"reader {self.name} is not durable: create it with durable=True to commit")
        self._durable.commit(self._cursors)

    def add_journal(
        self, directory: str | os.PathLike[str], name: str, start: Start | None = None
    ) -> JournalId:
        """Follow journal `name` in `directory` from `start`.

        `start` is "begin" (the oldest frame on disk), "end" (only frames committed from now on) or a
        timestamp in ns, a datetime or ISO text (the first frame at or after it). The journal need not
        exist yet. The default is "begin", or for a durable reader its committed position if it has
        one (`start` overrides it).

        Example: ``reader.add_journal("/data/md", "md.ctp", start="2026-11-26 09:30:00")``
        """
        self._check_open()
        self._check_not_reading("add_journal")
        jid = JournalId(check_directory(directory), check_name(name))
        if start is not None and start not in ("begin", "end"):
            start = to_nano(start, "start")  # ns, a datetime or ISO text
        if any(c.jid == jid for c in self._cursors):
            raise UsageError(f"journal {jid} is already added to reader {self.name}")
        cursor = Cursor(jid, "begin" if start is None else start)
        if start is not None or self._durable is None or not self._durable.resume(cursor):
            cursor.position(cursor.start)
        self._merge.add(cursor)
        self._rebind()
        if self._board is not None:
            self._board.hold(cursor)  # it holds its pages against retention from now on
        self._report("add_journal", jid)
        return jid

    def remove_journal(self, directory: str | os.PathLike[str], name: str) -> None:
        """Stop following a journal added before.

        Example: ``reader.remove_journal("/data/md", "md.ctp")``
        """
        self._check_owner()
        self._check_not_reading("remove_journal")
        jid = JournalId(check_directory(directory), name)
        for cursor in self._cursors:
            if cursor.jid == jid:
                cursor.detach()
                self._merge.remove(cursor)
                self._rebind()
                self._report("remove_journal", jid)
                return
        raise UsageError(f"journal {jid} is not added to reader {self.name}")

    def _report(self, op: str, jid: JournalId) -> None:
        if self._link is None:
            return
        key = ("reader", self.name, *jid)
        if op == "add_journal":
            self._link.remember(key, op, reader=self.name, directory=jid.directory, name=jid.name)
        else:
            self._link.forget(key)
        self._link.notify(op, reader=self.name, directory=jid.directory, name=jid.name)

    @property
    def journals(self) -> list[JournalId]:
        """The journals this reader follows, in the order they were added.

        Example: ``[str(j) for j in reader.journals]``
        """
        return [c.jid for c in self._cursors]

    def seek(self, when: int | datetime | str) -> None:
        """Put every journal at its first frame at or after `when`: ns since the epoch, a `datetime`,
        or an ISO 8601 string (naive times are local time).

        Example: ``reader.seek("2026-11-26 09:30:00")``
        """
        self._check_open()
        self._check_not_reading("seek")
        nano = to_nano(when, "seek")
        for cursor in self._cursors:
            cursor.position(nano)
        self._merge.reset()
        if self._board is not None:  # published now, as add_journal does: a seek back to pages
            for cursor in self._cursors:  # the last tick did not hold let retention remove them
                self._board.hold(cursor)

    def read_batch(self, limit: int) -> FrameBatch:
        """Up to `limit` frames at once (fewer if fewer are committed; an empty batch if none).

        Its columns `nano`, `msg_type`, `source`, `offset`, `length` and `seq` are int64 buffers that
        numpy views without a copy; `data(i)` is a zero-copy view of payload i; it iterates as Frames.
        In the same order as `read()`, and the two can be mixed. A durable reader's `commit_every`
        commits before a batch when due, never inside one: the application has not handled a
        batch's frames until it asks for the next.

        Example: ``nano = numpy.frombuffer(reader.read_batch(4096).nano, dtype=numpy.int64)``
        """
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"read_batch needs a limit >= 1 (an int), not {limit!r}")
        pacer = None if self._durable is None else self._durable.pacer
        if pacer is not None:  # commit_every: commit before the batch if due, never inside it
            return pacer.batch(functools.partial(self._read_batch, limit, pacer.read))
        return self._read_batch(limit, self.read)

    def _read_batch(self, limit: int, read: Callable[[], Frame | None]) -> FrameBatch:
        if native is not None and len(self._cursors) == 1:
            batch = self._cursors[0].core.read_batch(min(limit, sys.maxsize))  # a C Py_ssize_t
            if batch is not native.SLOW:
                return batch  # type: ignore[no-any-return]
        frames: list[Frame] = []
        while len(frames) < limit and (frame := read()) is not None:
            frames.append(frame)
        return FramesBatch(frames)

    def frames(
        self, timeout: float | None = None, wait: WaitName | WaitStrategy | Block = "block"
    ) -> Iterator[Frame]:
        """Yield frames as they come; stop after `timeout` seconds without one (None: never).

        `wait="block"` (the default, or `Block(spin=, max_nap=)`) spins 50 us, then sleeps until a
        writer rings the reader's doorbell (docs/format.md, "Doorbells"): an idle reader uses
        almost no CPU. The pure-Python backend has no futex: it sleeps in steps of at most 1 ms.
        "spin" polls a whole core for the lowest latency; "backoff" polls, yields and naps.

        Example: ``for frame in reader.frames(timeout=5.0): handle(frame)``
        """
        if wait == "block" or isinstance(wait, Block):  # no generator of ours around it: see _block.py
            return block_frames(self, self._merge, timeout, wait if isinstance(wait, Block) else Block())
        return self._polled_frames(timeout, wait)

    def _start_frames(self, timeout: float | None, wait: WaitName | WaitStrategy | Block) -> float | None:
        """What `frames()` checks and records, at the first `next()`: in the thread that iterates.
        Returns the timeout to use (`_check_timeout`)."""
        self._check_owner()
        seconds = _check_timeout(timeout, "frames")
        if self._board is not None:
            self._board.wait_mode("block" if isinstance(wait, Block) else wait)
        return seconds

    def _polled_frames(self, timeout: float | None, wait: WaitName | WaitStrategy) -> Iterator[Frame]:
        """`frames()` with a polling `wait` ("spin", "backoff" or a WaitStrategy)."""
        timeout = self._start_frames(timeout, wait)
        strategy = make_wait(wait)
        idle_since: float | None = None
        while True:
            frame = self.read()
            if frame is not None:
                strategy.reset()
                idle_since = None
                yield frame
                continue
            if timeout is not None:
                now = time.monotonic()
                if idle_since is None:
                    idle_since = now
                elif now - idle_since >= timeout:
                    return
            strategy.idle()

    async def aread(self, timeout: float | None = None) -> Frame | None:
        """asyncio: the next frame, waiting up to `timeout` s (None: forever) without blocking the
        loop; None if none came (_aio.py).

        Example: ``frame = await reader.aread(timeout=1.0)``
        """
        from ._aio import aread  # asyncio is imported only by asyncio users

        return await aread(self, self._merge, _check_timeout(timeout, "aread"))

    def aframes(self, timeout: float | None = None, every: int = 64) -> AsyncIterator[Frame]:
        """asyncio: frames as they come, yielding to the loop every `every` frames of a flood; ends
        after `timeout` s without a frame (None: never).

        Example: ``async for frame in reader.aframes(timeout=5.0): handle(frame)``
        """
        from ._aio import aframes

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"aframes needs every >= 1 (an int: frames between yields), not {every!r}")
        return aframes(self, self._merge, _check_timeout(timeout, "aframes"), every)

    async def aclose(self) -> None:
        """asyncio spelling of `close`.

        Example: ``await reader.aclose()``
        """
        self.close()

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit (durable readers), then unmap every page. Frames already returned keep their pages;
        a `read` or `read_data` bound before raises `ClosedError` from then on. In a forked child, a
        reader inherited from the parent only releases the child's copy.

        Example: ``reader.close()  # or leave the `with` block``
        """
        if self._inherited:
            self._release_inherited()
            return
        self._check_owner()
        self._check_not_reading("close")
        if self._durable is not None and not self._closed:
            self._durable.commit(self._cursors)
        for cursor in self._cursors:
            cursor.detach()
        self._merge.close(functools.partial(_read_closed, self.name))
        self._closed = True
        self._rebind()
        self._finalizer()
        _LIVE.discard(self)

    def adopt(self) -> None:
        """Make the calling thread this reader's owner (see the class docstring): the one way to
        hand a reader to another thread. The thread that used it before must have stopped using it.

        Example: ``reader = queue.get(); reader.adopt(); frame = reader.read()``
        """
        self._check_inherited()
        self._thread = _get_ident()
        self._rebind()

    def _forget_after_fork(self) -> None:
        """In a forked child: make this copy refuse every operation (see the rules), and keep its
        exit or GC from touching the parent's cursor file, bell, slots, counter file or name."""
        self._inherited = True
        self._finalizer.detach()
        if self._durable is not None:
            self._durable.forget_after_fork()
        refuse = functools.partial(_raise_inherited, self.name)
        self.read = self.read_data = refuse
        core = self._merge.core
        if core is None:
            self._merge.owner, self._merge.on_thread = _NO_THREAD, refuse
            for cursor in self._cursors:
                cursor.owner, cursor.on_thread = _NO_THREAD, refuse
        else:
            core._c_thread, core.on_thread = _NO_THREAD, refuse

    def _release_inherited(self) -> None:
        """`close()` in a forked child: unmap the child's copies, leave the parent's files alone
        (the merge's bell knows it is not this process's: `Bell.mine`)."""
        for cursor in self._cursors:
            cursor.detach()
        self._merge.close()
        if self._board is not None:
            self._board.close()  # the child's map only: the file is the parent's (`Board.close`)
        self._closed = True

    def _check_inherited(self) -> None:
        if self._inherited:
            _raise_inherited(self.name)

    def _check_owner(self) -> None:
        if _get_ident() != self._thread or self._inherited:
            self._check_inherited()
            _raise_other_thread(self.name, self._thread)

    def _check_not_reading(self, op: str) -> None:
        """Refuse `op` from inside a read of this reader (a signal handler's, a finalizer's): it
        would change the cursors, the merge's heap or the core under the read using them (a frame
        twice, "settle(): not a slow core", IndexError, a closed map). The read marks itself: the
        pure-Python merge's and cursors' `owner` is READING, a native cursor is `in_python`, the
        native merge's `_c_thread` is READING (mmipc's READING_IN_PYTHON)."""
        merge, core = self._merge, self._merge.core
        if (
            (core is not None and core._c_thread == READING)
            or merge.owner == READING
            or any(c.owner == READING or c.in_python for c in self._cursors)
        ):
            raise UsageError(
                f"reader {self.name}: {op}() was called from inside one of its own reads (a signal "
                f"handler or a finalizer?): call it from the reader's own code, once the read returned"
            )

    def _check_open(self) -> None:
        if _get_ident() != self._thread or self._inherited:
            self._check_inherited()
            _raise_other_thread(self.name, self._thread)
        if self._closed:
            raise ClosedError(f"reader {self.name} is closed")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mmipc.Reader {self.name!r} following {len(self._cursors)} journal(s)>"


_LIVE: weakref.WeakSet[Reader] = weakref.WeakSet()
_NO_THREAD = (1 << 64) - 1  # no thread has this ident (a pthread_t is an address): every check fails


def _forget_readers_in_child() -> None:
    for reader in list(_LIVE):
        reader._forget_after_fork()
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_readers_in_child)


def _register(name: str, service: ServiceHome) -> Link | None:
    """Register the reader's name with the service (None: standalone)."""
    link = link_for(service)
    if link is not None:
        try:
            link.request("register_reader", name=name)
        except ServiceRefusedError as exc:
            if exc.code == "reader_name_taken":
                raise ReaderNameTakenError(f"{exc}; choose another name or stop that reader") from None
            raise
        link.remember(("reader", name), "register_reader", name=name)
    return link


def _open_durable(
    name: str,
    service: ServiceHome,
    cursor_dir: str | os.PathLike[str] | None,
    commit_every: float | None,
) -> Durable:
    from ._durable import CursorFile, Durable, _is_period, cursor_dir_for  # only for durable readers

    if not _is_period(commit_every):  # a str, a bool, nan or inf: our error, not a TypeError
        raise UsageError(f"commit_every must be a positive number of frames or seconds, not {commit_every!r}")

    home = None if service is None or service is DEFAULT_HOME else service
    return Durable(CursorFile(cursor_dir_for(cursor_dir, home), name).lock(), commit_every)


def _unregister(link: Link | None, name: str, durable: Durable | None, board: Board | None) -> None:
    """Free the reader's name at the service, its counter file and its cursor file's lock (also run
    by the GC)."""
    if board is not None:
        board.close()
    if durable is not None:
        durable.file.unlock()
    if link is not None:
        link.forget(("reader", name))
        link.notify("unregister_reader", name=name)


def _raise_other_thread(name: str, owner: int) -> NoReturn:
    if _get_ident() == owner:  # the owner, inside one of its reads (a merge's settling: _mmipc.c)
        raise UsageError(
            f"reader {name} was read from inside one of its own reads (a signal handler or a "
            "finalizer that reads?): read only from the reader's own code, or hand frames over instead"
        )
    raise UsageError(
        f"reader {name} belongs to the thread that created it (ident {owner}), not thread "
        f"{_get_ident()}: create one reader per thread, or call reader.adopt() in the thread that "
        "takes it over"
    )


def _raise_inherited(name: str) -> NoReturn:
    raise UsageError(
        f"reader {name} was inherited from the parent process at fork: open a new reader in the child "
        "(an inherited reader refuses every operation, so that the child cannot commit, subscribe or "
        "read in the parent's name; closing it releases only the child's copy)"
    )


def _check_timeout(timeout: float | None, what: str) -> float | None:
    """`timeout` if it is None or a number of seconds (inf: for ever; <= 0: what is there now), as a
    float: an int too large for one is +-inf. NaN never expired (aread, aframes and
    frames(wait="spin") waited for ever; frames(wait="block") raised ValueError), a str raised
    TypeError deep inside the wait, and 10**400 OverflowError."""
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float_seconds(timeout)
        if not math.isnan(seconds):
            return seconds
    raise UsageError(f"{what} needs timeout in seconds (a number, or None: no timeout), not {timeout!r}")


def _owned(read: Callable[[], T], name: str, owner: int) -> Callable[[], T]:
    """`read` behind the owner check (pure-Python backend; the native one checks in C)."""

    def owned() -> T:
        if _get_ident() != owner:
            _raise_other_thread(name, owner)
        return read()

    return owned


def _read_closed(name: str) -> Frame | None:
    raise ClosedError(f"reader {name} is closed")


def _data_of(read: Callable[[], Frame | None]) -> Callable[[], memoryview | None]:
    """`read_data` over any `read` (the merge, a durable reader's, the pure-Python cursor's)."""

    def read_data() -> memoryview | None:
        frame = read()
        return None if frame is None else frame.data

    return read_data
