"""This process's link to a service: one connection (one session) per service home.

Rules:

* Every writer and reader of a process shares its process's link to a home; the service sees one
  session per process and frees all of it when the process dies.
* The calling thread does the socket I/O itself, under a lock: `request` sends and reads until its
  own reply; `notify` sends and then drains, without blocking, the replies already waiting, so none
  pile up at the service. A writer notifies only at a page switch: about 5 us, on its own thread.
* `notify` never blocks, whatever the service does (stopped, swapped out, slow): it sends without
  waiting, keeps what the socket did not take, and coalesces the messages not sent yet (the newest
  per op and journal wins); if another thread holds the socket, it only queues. The next `notify`,
  `request` or the watcher's FLUSH_INTERVAL tick sends the rest. Requests are not hot: they wait.
* A watcher thread sleeps in `poll(POLLRDHUP)`, which wakes it when the service hangs up, never for
  a reply, and otherwise once per FLUSH_INTERVAL. So in normal operation no thread of ours competes
  with the writer for the GIL or the CPU: measured, a link thread woken at each page switch cost a
  pinned writer 1.5 ms per switch.
* Nothing is sent before the peer is known: the home must be a directory of this user that no other
  user may write, and the process on the socket must run as this user (SO_PEERCRED).
* What the process registered is remembered. When the service goes away the watcher retries every
  RECONNECT_INTERVAL and, once connected, replays the registrations in order, so a restarted service
  sees every live client again without the application doing anything.
* A forked child drops the links it inherited (their sessions belong to the parent).
* A request (or a link's making) from inside another of the same thread, or inside its `notify`
  (which holds the socket's lock too), a signal handler's, is refused (UsageError): it would wait
  for the lock its own thread holds, for good (`_one_at_a_time`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from .._errors import MmipcError, ServiceRefusedError, ServiceUnavailableError, UsageError
from ._home import check_home, resolve_home, socket_path
from ._protocol import MAX_REPLY, PROTOCOL_VERSION, MessageReader, ProtocolError, encode
from ._servicehome import DEFAULT_HOME as DEFAULT_HOME  # re-exported: callers import them from here
from ._servicehome import ServiceHome as ServiceHome
from ._servicehome import link_for as link_for

log = logging.getLogger("mmipc.link")

RECONNECT_INTERVAL = 0.2
RECONNECT_GRACE = 2.0
REQUEST_TIMEOUT = 10.0
FLUSH_INTERVAL = 1.0
_UCRED = struct.Struct("3i")
Key = tuple[str, ...]
_HANGUP = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
_inside = threading.local()  # `busy`: this thread is in a request or in the making of a link


@contextlib.contextmanager
def _one_at_a_time(lock: threading.Lock, what: str) -> Iterator[None]:
    """Hold `lock`, unless this thread is already in a request or making a link: a signal handler
    that interrupted it would wait for its own thread's lock for good. Marked before the lock is
    taken and cleared after it is released, so no instant between leaves a handler waiting."""
    if getattr(_inside, "busy", False):
        raise UsageError(
            f"{what} from inside another service call of the same thread (a signal handler's): "
            "the link is busy until that call returns; make it outside the handler"
        )
    _inside.busy = True
    try:
        with lock:
            yield
    finally:
        _inside.busy = False


class Link:
    """One connection to one service, re-established (and re-registered) by a watcher thread."""

    _links: dict[str, Link] = {}
    _guard = threading.Lock()

    @classmethod
    def for_home(cls, home: str | os.PathLike[str] | None) -> Link:
        """This process's link to the service of `home`; raise `ServiceUnavailableError` if none."""
        path = socket_path(resolve_home(home))
        with _one_at_a_time(cls._guard, "a service link"):
            link = cls._links.get(path)
            if link is None:
                link = cls(path)
                cls._links[path] = link
            return link

    def __init__(self, path: str) -> None:
        self.path = path
        self._io = threading.Lock()
        self._ids = itertools.count(1)
        self._reader = MessageReader(MAX_REPLY)
        self._registrations: dict[Key, dict[str, Any]] = {}
        self._pending: dict[Key, dict[str, Any]] = {}  # notifications not sent yet, newest per key
        self._queue = threading.RLock()  # guards _pending only, never held across I/O; a
        # notify from a signal handler may interrupt its thread's (one statement each: reentrant is safe)
        self._outgoing = bytearray()  # encoded notifications the socket has not taken yet
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        self._timed_out = False  # the last lost exchange ran out of time (not closed by the service)
        self._attach(_connect(path))
        self._thread = threading.Thread(target=self._watch, name="mmipc-link", daemon=True)
        self._thread.start()

    # -- for writers and readers ---------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return the service's reply (raise if it refuses or is gone)."""
        if not self._connected.wait(RECONNECT_GRACE):
            raise ServiceUnavailableError(_gone(self.path))
        with _one_at_a_time(self._io, f"a service request ({op})"):
            reply = self._exchange({"op": op, **fields})
        if reply is None:
            raise ServiceUnavailableError(_gone(self.path))
        if not reply.get("ok"):
            raise ServiceRefusedError(str(reply.get("message", reply)), str(reply.get("error", "refused")))
        return reply

    def notify(self, op: str, **fields: Any) -> None:
        """Send a message whose reply nobody waits for; never block (dropped while the service is away)."""
        if not self._connected.is_set():
            return
        with self._queue:
            self._pending[(op, str(fields.get("directory")), str(fields.get("name")))] = {"op": op, **fields}
        was, _inside.busy = getattr(_inside, "busy", False), True  # a handler's request is refused
        try:  # here, not left waiting for the lock its own thread holds (`_one_at_a_time`)
            if not self._io.acquire(blocking=False):
                return  # a request or a reconnection has the socket: it sends the rest when done
            try:
                self._send_notifications(block=False)
            finally:
                self._io.release()
        finally:
            _inside.busy = was

    def remember(self, key: Key, op: str, **fields: Any) -> None:
        """Replay this registration after every reconnection, until `forget`."""
        self._registrations[key] = {"op": op, **fields}

    def forget(self, prefix: Key) -> None:
        """Stop replaying every registration whose key starts with `prefix`.

        Any thread may remember or forget at any time (a reader's close, a writer's page switch):
        `list()` copies the keys in one step, where iterating the dict itself raised RuntimeError
        ("changed size") when another thread remembered meanwhile; pop tolerates a concurrent forget."""
        for key in [k for k in list(self._registrations) if k[: len(prefix)] == prefix]:
            self._registrations.pop(key, None)

    # -- socket I/O (callers hold self._io) ----------------------------------------------------

    def _send_notifications(self, block: bool) -> None:
        """Send queued notifications (waiting for the socket only with `block`); without `block`,
        also drain the replies already waiting, so that none pile up at the service."""
        sock = self._sock
        if sock is None:
            self._take_pending()
            self._outgoing.clear()
            return  # registrations are replayed on reconnection; these are stale by then
        try:
            self._push(sock, block)
            while self._pending and not self._outgoing:  # coalesce while the socket is full
                for message in self._take_pending():
                    self._outgoing += encode({**message, "id": next(self._ids)})
                self._push(sock, block)
            if not block:
                self._drain(sock)
        except (OSError, ProtocolError):
            self._lose(sock)

    def _take_pending(self) -> list[dict[str, Any]]:
        with self._queue:
            pending, self._pending = self._pending, {}
        return list(pending.values())

    def _push(self, sock: socket.socket, block: bool) -> None:
        if not self._outgoing:
            return
        if block:
            sock.sendall(self._outgoing)
            self._outgoing.clear()
            return
        try:  # a socket with a timeout is non-blocking underneath: os.write never waits on it
            del self._outgoing[: os.write(sock.fileno(), self._outgoing)]
        except (BlockingIOError, InterruptedError):
            pass

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Send `message` and read until its reply; None if the connection is lost.

        A refusal of the whole connection (id None: the service closes it next) is the reply too.
        """
        self._send_notifications(block=True)
        sock = self._sock
        if sock is None:
            return None
        message["id"] = request_id = next(self._ids)
        try:
            try:
                sock.sendall(encode(message))
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed on us: its reason may wait in our receive queue
            while True:
                for reply in self._receive(sock, block=True):
                    if reply.get("id") == request_id or (reply.get("id") is None and not reply.get("ok")):
                        return reply
                    _log_refusal(reply)
        except (OSError, ProtocolError) as exc:
            self._timed_out = isinstance(exc, TimeoutError)
            self._lose(sock)
            return None

    def _drain(self, sock: socket.socket) -> None:
        for reply in self._receive(sock, block=False):
            _log_refusal(reply)

    def _receive(self, sock: socket.socket, block: bool) -> list[dict[str, Any]]:
        """Replies waiting on the socket; with `block`, wait (up to the socket timeout) for one."""
        replies: list[dict[str, Any]] = []
        while (block and not replies) or _readable(sock):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data and replies:
                break  # hand out what came before the end (a refusal, perhaps); the next call sees it
            if not data:
                raise ConnectionResetError("the service closed the connection")
            replies += self._reader.feed(data)
        return replies

    def _attach(self, sock: socket.socket) -> None:
        self._reader = MessageReader(MAX_REPLY)
        self._sock = sock
        hello = self._exchange({"op": "hello", "version": PROTOCOL_VERSION, "pid": os.getpid()})
        if hello is None:
            sock.close()
            if self._timed_out:  # a stopped (SIGSTOP) or stuck service holds the socket: not "no service"
                raise ServiceUnavailableError(
                    f"the service at {self.path} did not answer the handshake within "
                    f"{REQUEST_TIMEOUT:g} s: it is stopped or stuck (see the pid in its service.lock)"
                )
            raise ServiceUnavailableError(
                f"the service at {self.path} closed the connection in the handshake"
            )
        if not hello.get("ok"):
            self._sock = None
            sock.close()
            raise ServiceRefusedError(f"the service refused this client: {hello.get('message')}")
        self.service_pid = int(hello.get("service_pid", 0))
        self._connected.set()

    def _lose(self, sock: socket.socket) -> None:
        """Mark the connection gone; the shutdown wakes the watcher, which closes the socket."""
        if self._sock is sock:
            self._connected.clear()
            self._sock = None
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- the watcher thread --------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            sock = self._sock
            if sock is not None:
                poller = select.poll()
                poller.register(sock, select.POLLRDHUP)
                if not any(event & _HANGUP for _, event in poller.poll(FLUSH_INTERVAL * 1000)):
                    self._flush_stragglers()
                    continue
                log.info("lost the service at %s; reconnecting", self.path)
                with self._io:
                    self._lose(sock)
                sock.close()
            self._connected.wait(RECONNECT_INTERVAL)
            self._reconnect()

    def _flush_stragglers(self) -> None:
        """Send notifications a full socket or a busy lock held back (never waits for either)."""
        if (self._pending or self._outgoing) and self._io.acquire(blocking=False):
            try:
                self._send_notifications(block=False)
            finally:
                self._io.release()

    def _reconnect(self) -> None:
        try:
            sock = _connect(self.path)
        except MmipcError:
            return
        with self._io:
            try:
                self._attach(sock)
            except MmipcError:
                return
            for registration in list(self._registrations.values()):
                reply = self._exchange(dict(registration))
                if reply is not None:
                    _log_refusal(reply)
        log.info("reconnected to the service at %s; registrations replayed", self.path)

    @classmethod
    def _forget_all_in_child(cls) -> None:
        for link in cls._links.values():
            if link._sock is not None:
                link._sock.close()  # our copy only: the parent's connection stays open
        cls._links = {}
        cls._guard = threading.Lock()


def service_status(service: ServiceHome = DEFAULT_HOME) -> dict[str, Any]:
    """The service's view (journals, writers, readers, uptime), as `Service.status()` returns it.

    Example: ``service_status("/run/mmipc")["readers"]``
    """
    link = link_for(DEFAULT_HOME if service is None else service)
    assert link is not None
    status: dict[str, Any] = link.request("status")["status"]
    return status


def _connect(path: str) -> socket.socket:
    """Connect to the service at `path` after checking its home; check its uid before any byte."""
    check_home(os.path.dirname(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REQUEST_TIMEOUT)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ServiceUnavailableError(
            f"no mmipc service at {path} ({exc.strerror}): start it with `mmipc service`"
            + ("" if "MMIPC_HOME" in os.environ else " (or set MMIPC_HOME to the home of a running one)")
            + ", or pass service=None to run without one"
        ) from None
    _check_peer(sock, path)
    return sock


def _check_peer(sock: socket.socket, path: str) -> None:
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if uid != os.getuid():
        sock.close()
        raise ServiceRefusedError(
            f"the socket {path} is served by uid {uid} (pid {pid}), not by this user (uid {os.getuid()}): "
            "refusing to send it anything; stop that process, or choose another home",
            "peer_uid",
        )


def _log_refusal(reply: dict[str, Any]) -> None:
    if not reply.get("ok"):
        log.warning("the service refused: %s", reply.get("message"))


def _gone(path: str) -> str:
    return f"the mmipc service at {path} is not answering (reconnecting in the background)"


os.register_at_fork(after_in_child=Link._forget_all_in_child)


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has a reply (or its end) waiting, without waiting. poll, not select: select()
    refuses a descriptor past FD_SETSIZE (1024), and a process with that many files or sockets
    open (a gateway's connections) got ValueError from every Writer.create and Reader.create."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
