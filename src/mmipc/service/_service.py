"""The service: a registry of writers and readers, background page preparation and status.

Rules:

* Frames never pass through the service; it only keeps the registry and prepares pages. If it dies,
  writers and readers go on moving frames; when it comes back, their links register again.
* One service per home, decided by `flock` on ``service.lock``: whoever holds it owns the home and may
  replace a socket left by a killed service. The socket is mode 0600 in a 0700 home, and peers of
  another uid (by `SO_PEERCRED`) are refused anyway.
* One connection is one session. When it closes for any reason, the kernel tells us at once (EOF),
  and everything the session registered is freed.
* One writer per journal, keyed by the journal's real path. The writer's own OS lock stays the ground
  truth; the registry adds the holder's pid to the error and a live view for `status`.
* A peer's bytes are never trusted: requests are capped, malformed ones end the connection, a
  request of the wrong shape gets an error reply, a silent peer is dropped after HELLO_TIMEOUT, and a
  peer that does not read its replies is dropped when they pile up past MAX_OUTBOX. Replies have
  their own, far larger cap (a status lists everything) and quote a peer's text only clipped.
* The service never exits because of a peer or of what it finds on disk: any exception while
  serving a connection becomes an error reply, or closes that connection; a journal it cannot read
  is reported as such in `status`. It keeps FD_RESERVE descriptors free of sessions and one spare
  descriptor open, so that when the process runs out of descriptors it still accepts a newcomer,
  tells it why it is refused, and closes it. Every refusal is sent to the peer before closing.
* The event loop never reads a journal's files. A status request takes a snapshot of the registry
  under the lock (microseconds) and hands it to the status thread, which reads the pages, the
  counter and cursor files and computes the lag without the lock, then passes the reply back to the
  loop through the wake pipe. So a status of thousands of journals, or on a slow disk, never delays
  another client's request; at most MAX_STATUS_QUEUE status requests wait, later ones are refused
  ("busy"). A status reply may overtake replies to requests sent before it: replies carry the
  request's id.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import ServiceAlreadyRunningError, ServiceUnavailableError, UsageError
from ..journal._files import (
    DEFAULT_MODE,
    DESCRIPTOR_ERRNOS,
    MAX_PAGE_NO,
    check_mode,
    check_name,
    lock_or_holder,
    release_pid_lock,
)
from ..journal._layout import check_page_size
from ..journal._metrics import FOREIGN_LIMIT
from ._home import LOCK_NAME, ensure_home, resolve_home, socket_path
from ._lazy_ahead import LazyAhead
from ._monitor import Monitor
from ._orphans import preexec_die_with_me
from ._pages_ahead import PagePreparer
from ._protocol import MAX_REPLY, PROTOCOL_VERSION, MessageReader, ProtocolError, check_request, clip, encode
from ._retention import Policy
from ._status import journal_status, one_listing

log = logging.getLogger("mmipc.service")

HELLO_TIMEOUT = 5.0
MAX_STATUS_QUEUE = 64
MAX_SESSIONS = 1024
MAX_OUTBOX = 1 << 20
FD_RESERVE = 32  # descriptors kept for the listener, the page thread, status's page reads, the log
LOG_EVERY = 1.0  # seconds between two log lines about refused connections
_UCRED = struct.Struct("3i")

JournalKey = tuple[str, str]
StatusJob = tuple["Session", object, "_Snapshot"]


@dataclass
class Session:
    sock: socket.socket
    pid: int
    uid: int
    opened: float
    reader: MessageReader = field(default_factory=MessageReader)
    outbox: bytearray = field(default_factory=bytearray)
    greeted: bool = False
    writers: dict[JournalKey, int] = field(default_factory=dict)  # journal -> current page
    readers: dict[str, set[JournalKey]] = field(default_factory=dict)


def _check_seconds(what: str, value: object) -> None:
    """A finite number > 0 (the CLI's own rule for these options): nan or <= 0 would take every
    container reader for dead (its pages removed under it), or run retention back to back."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UsageError(f"{what} must be a number of seconds > 0, not {value!r}")


class Service:
    """The mmipc service for one home. `start()` runs it on threads; `serve_forever()` in this one.

    Example: ``service = Service("/run/mmipc"); service.start(); ...; service.stop()``
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        retain: Policy | None = None,
        retain_dirs: dict[str, Policy] | None = None,
        retain_interval: float = 60.0,
        foreign_reader_limit: float = FOREIGN_LIMIT,
    ) -> None:
        """`retain` is the home's retention policy, `retain_dirs` overrides it per journal directory;
        the monitor applies them every `retain_interval` seconds (see `_retention`). A reader of
        another pid namespace (a container sharing the home) whose heartbeat is older than
        `foreign_reader_limit` seconds is taken as dead: its pages, counter file and bell go
        (`_metrics.Owner.alive`). Either, if not a number of seconds > 0, is a UsageError."""
        _check_seconds("retain_interval", retain_interval)
        _check_seconds("foreign_reader_limit", foreign_reader_limit)
        self.home = resolve_home(home)
        self.socket_path = socket_path(self.home)
        self._lock = threading.Lock()
        self._writers: dict[JournalKey, Session] = {}
        self._readers: dict[str, Session] = {}
        self._sessions: dict[int, Session] = {}
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._lock_fd = -1
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already wakes the loop: never wait on it
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._preparer = PagePreparer(self._has_writer)
        self._max_sessions = _session_limit()
        self._spare_fd = -1
        self._refusals = _RefusalLog()
        self._known: set[JournalKey] = set()
        self._ahead = LazyAhead(self._preparer)
        self.monitor = Monitor(
            self.home, self._known_journals, retain, retain_dirs, retain_interval, foreign_reader_limit
        )
        self.monitor.on_tick = self._ahead.check
        self.started = 0.0
        self._status_jobs: queue.Queue[StatusJob | None] = queue.Queue()
        self._status_done: queue.SimpleQueue[tuple[Session, object, dict[str, Any]]] = queue.SimpleQueue()
        self._status_thread: threading.Thread | None = None

    # -- lifetime ------------------------------------------------------------------------------

    def start(self) -> Service:
        """Bind and serve on a background thread (for tests and embedding); returns self.

        Example: ``Service(home).start()  # returns once it listens``
        """
        self._bind()
        self._thread = threading.Thread(target=self._serve, name="mmipc-service", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Bind and serve on this thread until SIGINT or SIGTERM (or `stop()`).

        `on_ready` runs once the socket accepts connections; if it raises, the service stops.

        Example: ``Service(home).serve_forever(on_ready=lambda: print("ready"))``
        """
        self._bind()
        try:
            if on_ready is not None:
                on_ready()
        except BaseException:  # (the metrics port taken): leave no socket for clients to find dead
            self._shutdown()
            raise
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._request_stop())
        self._serve()

    def stop(self) -> None:
        """Stop accepting, end every session, remove the socket. Safe to call twice.

        Example: ``service.stop()``
        """
        self._request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _request_stop(self) -> None:
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _bind(self) -> None:
        try:
            self._lock_home()
            self._listen()
        except OSError as exc:
            self._shutdown()
            raise ServiceUnavailableError(
                f"cannot start the service in {self.home}: {exc.strerror}"
            ) from None
        except BaseException:
            self._shutdown()
            raise
        self._preparer.start()
        self.monitor.start()
        self._status_thread = threading.Thread(target=self._serve_status, name="mmipc-status", daemon=True)
        self._status_thread.start()
        self.started = time.time()
        log.info("serving %s (at most %d sessions)", self.socket_path, self._max_sessions)

    def _lock_home(self) -> None:
        ensure_home(self.home)
        lock_path = os.path.join(self.home, LOCK_NAME)
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        holder = lock_or_holder(self._lock_fd)
        if holder is not None:
            self._lock_fd = -1  # closed by lock_or_holder
            raise ServiceAlreadyRunningError(
                f"a service (pid {holder}) already serves {self.home}; stop it first, or use another --home"
            )

    def _listen(self) -> None:
        if os.path.lexists(self.socket_path):
            os.unlink(self.socket_path)  # we hold the home's lock: this socket was left by a dead service
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old_mask)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._spare_fd = os.open(os.devnull, os.O_RDONLY)

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, mask in self._selector.select(timeout=0.5):
                    self._dispatch_safely(key, mask)
                self._drop_silent()
        finally:
            self._shutdown()
            log.info("stopped")

    def _dispatch_safely(self, key: selectors.SelectorKey, mask: int) -> None:
        """Serve one event; an unexpected error closes that connection, never the service."""
        try:
            self._dispatch(key, mask)
        except Exception:
            session = key.data if isinstance(key.data, Session) else None
            who = f"pid {session.pid}" if session is not None else f"the {key.data or 'listener'}"
            log.exception("unexpected error serving %s; closing that connection", who)
            if session is not None:
                with self._lock:
                    self._close(session)

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data is None:
            self._accept()
        elif key.data == "wake":
            os.read(self._wake_r, 4096)
            self._deliver_status()
        elif mask & selectors.EVENT_READ:
            self._receive(key.data)
        elif mask & selectors.EVENT_WRITE:
            self._flush(key.data)

    def _shutdown(self) -> None:
        with self._lock:
            for session in list(self._sessions.values()):
                self._close(session)
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        self._preparer.stop()
        self.monitor.stop()
        if self._status_thread is not None:
            while not self._status_jobs.empty():  # their sessions are closed: nobody waits for them
                self._status_jobs.get_nowait()
            self._status_jobs.put(None)
            self._status_thread.join(timeout=10)
            self._status_thread = None
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        if self._lock_fd >= 0:
            release_pid_lock(self._lock_fd)
            self._lock_fd = -1

    # -- sessions ------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in DESCRIPTOR_ERRNOS:
                raise
            self._refuse_with_spare_fd(exc)
            return
        pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if uid != os.getuid():
            self._refuse(conn, pid, f"uid {uid} is not this service's uid {os.getuid()}")
        elif len(self._sessions) >= self._max_sessions:
            self._refuse(conn, pid, f"too many sessions (at most {self._max_sessions}); try again later")
        else:
            self._open_session(conn, pid, uid)

    def _refuse(self, conn: socket.socket, pid: int, why: str) -> None:
        _send_quietly(conn, {"id": None, "ok": False, "error": "refused", "message": why})
        conn.close()
        self._refusals.note(f"pid {pid}: {why}")

    def _refuse_with_spare_fd(self, exc: OSError) -> None:
        """Out of descriptors: free the spare one, accept the newcomer, tell it why, close it."""
        if self._spare_fd < 0:
            self._refusals.note(f"a newcomer: {exc.strerror}, and no spare descriptor")
            time.sleep(0.01)  # the listener stays readable: do not spin on it
            return
        os.close(self._spare_fd)
        self._spare_fd = -1
        try:
            assert self._listener is not None
            conn, _ = self._listener.accept()
            self._refuse(conn, -1, f"too many open files in the service ({exc.strerror}); try again later")
        except OSError:
            pass
        finally:
            try:
                self._spare_fd = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                pass

    def _open_session(self, conn: socket.socket, pid: int, uid: int) -> None:
        conn.setblocking(False)
        session = Session(conn, pid, uid, time.monotonic())
        with self._lock:
            self._sessions[conn.fileno()] = session
        self._selector.register(conn, selectors.EVENT_READ, session)

    def _receive(self, session: Session) -> None:
        try:
            data = session.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            with self._lock:
                self._close(session)
            return
        try:
            messages = session.reader.feed(data)
        except ProtocolError as exc:
            self._reply(session, None, error="protocol", message=str(exc))
            with self._lock:
                self._close(session)
            return
        for message in messages:
            if session.sock.fileno() < 0:
                return
            self._handle(session, message)

    def _reply(self, session: Session, request_id: object, **fields: Any) -> None:
        if len(session.outbox) > MAX_OUTBOX:
            log.warning("dropping pid %d: it does not read its replies", session.pid)
            with self._lock:
                self._close(session)
            return
        reply = {"id": request_id, "ok": "error" not in fields, **fields}
        try:
            session.outbox += encode(reply, MAX_REPLY)
        except ProtocolError as exc:
            session.outbox += encode(
                {"id": request_id, "ok": False, "error": "too_large", "message": str(exc)}
            )
        self._flush(session)

    def _flush(self, session: Session) -> None:
        if session.sock.fileno() < 0:
            return
        try:
            sent = session.sock.send(session.outbox)
            del session.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            session.outbox.clear()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.outbox else 0)
        self._selector.modify(session.sock, events, session)

    def _drop_silent(self) -> None:
        deadline = time.monotonic() - HELLO_TIMEOUT
        with self._lock:
            for session in list(self._sessions.values()):
                if not session.greeted and session.opened < deadline:
                    log.warning("dropping pid %d: no hello within %.0fs", session.pid, HELLO_TIMEOUT)
                    self._close(session)

    def _still_alive(self, session: Session) -> bool:
        """False, and the session freed, if its peer is gone but its EOF is not processed yet.

        A process killed a moment ago has its socket closed by the kernel at once; a newcomer's
        request may still be served first. Peeking at the socket settles it without a race.
        """
        try:
            alive = session.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except (BlockingIOError, InterruptedError):
            alive = True
        except OSError:
            alive = False
        if not alive:
            self._close(session)
        return alive

    def _close(self, session: Session) -> None:
        """Free everything the session registered (caller holds the lock)."""
        if session.sock.fileno() < 0:
            return
        for key in session.writers:
            if self._writers.get(key) is session:
                del self._writers[key]
        for name in session.readers:
            if self._readers.get(name) is session:
                del self._readers[name]
        self._sessions.pop(session.sock.fileno(), None)
        self._selector.unregister(session.sock)
        session.sock.close()

    # -- requests ------------------------------------------------------------------------------

    def _handle(self, session: Session, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        try:
            op = check_request(message)
            if not session.greeted and op != "hello":
                raise ProtocolError("the first request must be hello")
            if op == "status":
                self._queue_status(session, request_id)
                return
            handler = self._handlers()[op]
            with self._lock:
                reply = handler(session, message)
        except _Refusal as refusal:
            self._reply(session, request_id, error=refusal.code, message=clip(str(refusal)), **refusal.extra)
            return
        except Exception as exc:
            self._reply_error(session, request_id, exc)
            return
        self._reply(session, request_id, **reply)

    def _reply_error(self, session: Session, request_id: object, exc: Exception) -> None:
        """A bad request is the peer's mistake; anything else is ours: logged, and only it fails."""
        request_id = request_id if isinstance(request_id, int) and not isinstance(request_id, bool) else None
        if isinstance(exc, (ProtocolError, UsageError)):
            self._reply(session, request_id, error="bad_request", message=clip(str(exc), 500))
            return
        log.error("request from pid %d failed: %s", session.pid, clip(repr(exc), 500))
        message = f"the service failed on this request: {clip(repr(exc), 500)}"
        self._reply(session, request_id, error="internal", message=message)

    def _handlers(self) -> dict[str, Callable[[Session, dict[str, Any]], dict[str, Any]]]:
        return {
            "hello": self._hello,
            "register_writer": self._register_writer,
            "unregister_writer": self._unregister_writer,
            "page": self._page,
            "register_reader": self._register_reader,
            "unregister_reader": self._unregister_reader,
            "add_journal": self._add_journal,
            "remove_journal": self._remove_journal,
        }

    def _hello(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        if message["version"] != PROTOCOL_VERSION:
            raise _Refusal(
                "version", f"this service speaks protocol {PROTOCOL_VERSION}, not {message['version']}"
            )
        session.greeted = True
        return {"version": PROTOCOL_VERSION, "service_pid": os.getpid(), "home": self.home}

    def _register_writer(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        key = _journal_key(message)
        holder = self._writers.get(key)
        if holder is not None and holder is not session and not self._still_alive(holder):
            holder = None
        if holder is not None and holder is not session:
            raise _Refusal(
                "journal_locked",
                f"journal {key[1]} in {key[0]} already has a live writer (pid {holder.pid})",
                pid=holder.pid,
            )
        self._writers[key] = session
        self._known.add(key)
        session.writers[key] = session.writers.get(key, -1)
        return {}

    def _unregister_writer(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        key = _journal_key(message)
        if self._writers.get(key) is session:
            del self._writers[key]
        session.writers.pop(key, None)
        return {}

    def _page(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        key = _journal_key(message)
        check_page_size(message["page_size"])
        mode = check_mode(message.get("mode", DEFAULT_MODE))  # the writer's, for the pages made for it
        if not 0 <= message["page_no"] < MAX_PAGE_NO:
            raise ProtocolError(f"page: page_no {message['page_no']} is outside 0..{MAX_PAGE_NO - 1}")
        if self._writers.get(key) is not session:
            raise _Refusal("not_writer", f"this session is not the writer of journal {key[1]} in {key[0]}")
        flags = message.get("flags", 0)  # the page flags the writer chose (format v2); absent: none
        if flags not in (0, 1) or isinstance(flags, bool):
            raise _Refusal("bad_request", f"page flags {flags!r} are not 0 or 1")
        session.writers[key] = message["page_no"]
        self._ahead.started(key[0], key[1], message["page_no"], message["page_size"], mode=mode, flags=flags)
        return {}

    def _register_reader(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        name = check_name(message["name"], "reader")
        holder = self._readers.get(name)
        if holder is not None and holder is not session and not self._still_alive(holder):
            holder = None
        if holder is not None:
            raise _Refusal(
                "reader_name_taken", f"reader name {name!r} is taken by pid {holder.pid}", pid=holder.pid
            )
        self._readers[name] = session
        session.readers[name] = set()
        return {}

    def _unregister_reader(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        name = message["name"]
        if self._readers.get(name) is session:
            del self._readers[name]
        session.readers.pop(name, None)
        return {}

    def _add_journal(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        key = _journal_key(message)
        self._reader_journals(session, message["reader"]).add(key)
        self._known.add(key)
        return {}

    def _remove_journal(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        self._reader_journals(session, message["reader"]).discard(_journal_key(message))
        return {}

    def _reader_journals(self, session: Session, reader: str) -> set[JournalKey]:
        if reader not in session.readers:
            raise _Refusal("not_reader", f"this session has no reader named {reader!r}")
        return session.readers[reader]

    def _known_journals(self) -> list[JournalKey]:
        with self._lock:
            return sorted(self._known)

    def _has_writer(self, directory: str, name: str) -> bool:
        with self._lock:
            return (directory, name) in self._writers

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The service's view: journals with their writers, readers with their journals, uptime.

        Files are read without the service's lock, as for a status request (see the rules).

        Example: ``service.status()["journals"]``
        """
        with self._lock:
            snapshot = self._snapshot()
        return self._status(snapshot)

    def _queue_status(self, session: Session, request_id: object) -> None:
        if self._status_jobs.qsize() >= MAX_STATUS_QUEUE:
            raise _Refusal("busy", f"{MAX_STATUS_QUEUE} status requests are waiting; try again later")
        with self._lock:
            snapshot = self._snapshot()
        self._status_jobs.put((session, request_id, snapshot))

    def _serve_status(self) -> None:
        """The status thread: compute each queued status, hand the reply to the event loop."""
        while (job := self._status_jobs.get()) is not None:
            session, request_id, snapshot = job
            try:
                reply: dict[str, Any] = {"status": self._status(snapshot)}
            except Exception as exc:  # a bug of ours: that request fails, the thread lives on
                log.error("status for pid %d failed: %s", session.pid, clip(repr(exc), 500))
                reply = {
                    "error": "internal",
                    "message": f"the service failed on this status: {clip(repr(exc), 500)}",
                }
            self._status_done.put((session, request_id, reply))
            try:
                os.write(self._wake_w, b"s")
            except OSError:
                pass  # the pipe is full: the loop is being woken anyway

    def _deliver_status(self) -> None:
        """Send the replies the status thread finished to sessions that are still open (loop thread)."""
        while True:
            try:
                session, request_id, reply = self._status_done.get_nowait()
            except queue.Empty:
                return
            if self._sessions.get(session.sock.fileno()) is session:
                self._reply(session, request_id, **reply)

    def _snapshot(self) -> _Snapshot:
        """What the status needs of the registry (caller holds the lock)."""
        writers = {key: (s.pid, s.writers.get(key, -1)) for key, s in self._writers.items()}
        return _Snapshot(
            journals=sorted(self._known | set(writers)),
            writers=writers,
            live={name: (s.pid, sorted(s.readers[name])) for name, s in self._readers.items()},
            sessions=len(self._sessions),
        )

    def _status(self, snapshot: _Snapshot) -> dict[str, Any]:
        """The status from a snapshot of the registry; reads files, so never under the lock. Each
        journal directory is listed once (`one_listing`), not three times per journal."""
        with one_listing():
            journals = [self._journal_status(key, snapshot.writers.get(key)) for key in snapshot.journals]
            readers = [
                {
                    **reader,
                    "journals": [[j["directory"], j["name"]] for j in reader["journals"]],
                    "lag": reader["journals"],
                }
                for reader in self.monitor.readers(snapshot.live)
            ]
        return {
            "service": {
                "pid": os.getpid(),
                "home": self.home,
                "socket": self.socket_path,
                "started": self.started,
                "uptime_s": round(time.time() - self.started, 3),
                "sessions": snapshot.sessions,
                "pages_prepared": self._preparer.prepared,
                "pages_stale": self._preparer.stale,
                "page_failures": self._preparer.failures,
                "last_page_error": self._preparer.last_error,
                "pages_removed": self.monitor.pages_removed,
                "monitor_ticks": self.monitor.ticks,
                "retention_errors": self.monitor.retention_errors,
                "last_retention_error": self.monitor.last_retention_error,
            },
            "journals": journals,
            "readers": readers,
        }

    def _journal_status(self, key: JournalKey, writer: tuple[int, int] | None) -> dict[str, Any]:
        return {
            **journal_status(key[0], key[1]),
            "writer_pid": writer[0] if writer is not None else None,
            "page": writer[1] if writer is not None else -1,
            **self.monitor.journal(key),
        }


@dataclass(frozen=True)
class _Snapshot:
    """The registry as a status needs it: journals, their writers' (pid, page), live readers."""

    journals: list[JournalKey]
    writers: dict[JournalKey, tuple[int, int]]
    live: dict[str, tuple[int, list[JournalKey]]]
    sessions: int


class _Refusal(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class _RefusalLog:
    """Logs refused connections, at most one line per LOG_EVERY seconds (a flood must not flood the log)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._quiet = 0

    def note(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last < LOG_EVERY:
            self._quiet += 1
            return
        more = f" (and {self._quiet} more refused since the last report)" if self._quiet else ""
        log.warning("refused %s%s", what, more)
        self._last, self._quiet = now, 0


def _session_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_SESSIONS
    return max(1, min(MAX_SESSIONS, soft - FD_RESERVE))


def _journal_key(message: dict[str, Any]) -> JournalKey:
    directory = message["directory"]
    if "\0" in directory:
        raise ProtocolError(f"directory {clip(repr(directory))} contains a NUL byte")
    return os.path.realpath(directory), check_name(message["name"])


def _send_quietly(conn: socket.socket, message: dict[str, Any]) -> None:
    """Send a short message to a fresh connection without ever waiting (its buffer is empty)."""
    try:
        conn.setblocking(False)
        conn.send(encode(message))
    except OSError:
        pass


def spawn_service(
    home: str, stderr: int | None = None, options: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """Start `mmipc service --home HOME [OPTIONS]` as a child process and return it once its socket
    is bound.

    `stderr` is where its log goes (default: ours). The child runs in its own session (a terminal's
    Ctrl-C reaches only its parent, which stops it) and gets SIGTERM, a clean shutdown, if its
    parent dies.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "mmipc", "service", "--home", home, "--quiet", *options],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
        preexec_fn=preexec_die_with_me(signal.SIGTERM),
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    if not ready.startswith("mmipc service pid"):
        child.kill()
        child.wait()
        raise ServiceUnavailableError(f"the service for {home} did not start (exit {child.returncode})")
    return child
