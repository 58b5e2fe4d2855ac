"""This process's link to a service: one connection (one session) per service home.

Rules:

* Every writer and reader of a process shares its process's link to a home; the service sees one
  session per process and frees all of it when the process dies.
* A daemon thread owns the socket. Callers either `request` (send, then wait for the reply) or
  `notify` (queue, wake the thread with one byte, go on). A writer notifies only at a page switch:
  its hot path never touches the link.
* What the process registered is remembered. If the service goes away, the thread retries every
  RECONNECT_INTERVAL and, once connected, replays the registrations in order, so a restarted service
  sees every live client again without the application doing anything.
* A forked child drops the links it inherited (their sessions belong to the parent).
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import select
import socket
import threading
from collections import deque
from typing import Any, Literal

from ._errors import ServiceRefusedError, ServiceUnavailableError
from ._home import resolve_home, socket_path
from ._protocol import PROTOCOL_VERSION, MessageReader, ProtocolError, encode

log = logging.getLogger("mmipc.link")

RECONNECT_INTERVAL = 0.2
RECONNECT_GRACE = 2.0
REQUEST_TIMEOUT = 10.0
Key = tuple[str, ...]


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: dict[str, Any] | None = None


class Link:
    """One connection to one service, kept alive (and re-registered) by a daemon thread."""

    _links: dict[str, Link] = {}
    _guard = threading.Lock()

    @classmethod
    def for_home(cls, home: str | os.PathLike[str] | None) -> Link:
        """This process's link to the service of `home`; raise `ServiceUnavailableError` if none."""
        path = socket_path(resolve_home(home))
        with cls._guard:
            link = cls._links.get(path)
            if link is None:
                link = cls(path)
                cls._links[path] = link
            return link

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = _connect(path)
        self.service_pid = self._hello(self._sock)
        self._ids = itertools.count(1)
        self._outbox: deque[tuple[dict[str, Any], _Waiter | None]] = deque()
        self._pending: dict[int, _Waiter] = {}
        self._registrations: dict[Key, dict[str, Any]] = {}
        self._reader = MessageReader()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._connected = threading.Event()
        self._connected.set()
        self._thread = threading.Thread(target=self._run, name="mmipc-link", daemon=True)
        self._thread.start()

    # -- for writers and readers ---------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return the service's reply (raise if it refuses or is gone)."""
        if self._sock is None:
            self._wake()  # reconnect now, and give the service a moment to come back
            if not self._connected.wait(RECONNECT_GRACE):
                raise ServiceUnavailableError(_gone(self.path))
        waiter = _Waiter()
        self._enqueue({"op": op, **fields}, waiter)
        if not waiter.done.wait(REQUEST_TIMEOUT) or waiter.reply is None:
            raise ServiceUnavailableError(_gone(self.path))
        if not waiter.reply.get("ok"):
            message = str(waiter.reply.get("message", waiter.reply))
            raise ServiceRefusedError(message, str(waiter.reply.get("error", "refused")))
        return waiter.reply

    def notify(self, op: str, **fields: Any) -> None:
        """Queue a message whose reply nobody waits for (dropped while the service is away)."""
        if self._sock is not None:
            self._enqueue({"op": op, **fields}, None)

    def remember(self, key: Key, op: str, **fields: Any) -> None:
        """Replay this registration after every reconnection, until `forget(key)`."""
        self._registrations[key] = {"op": op, **fields}

    def forget(self, prefix: Key) -> None:
        """Stop replaying every registration whose key starts with `prefix`."""
        for key in [k for k in self._registrations if k[: len(prefix)] == prefix]:
            del self._registrations[key]

    def _enqueue(self, message: dict[str, Any], waiter: _Waiter | None) -> None:
        self._outbox.append((message, waiter))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            sock = self._sock
            if sock is None:
                self._reconnect()
                continue
            self._send_outbox(sock)
            if self._sock is not sock:
                continue  # the send found the connection gone
            readable, _, _ = select.select([sock.fileno(), self._wake_r], [], [], 1.0)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            if sock.fileno() in readable:
                self._receive(sock)

    def _send_outbox(self, sock: socket.socket) -> None:
        while self._outbox:
            message, waiter = self._outbox.popleft()
            message["id"] = next(self._ids)
            if waiter is not None:
                self._pending[message["id"]] = waiter
            try:
                sock.sendall(encode(message))
            except OSError:
                self._lose(sock)
                return

    def _receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            replies = self._reader.feed(data) if data else None
        except (OSError, ProtocolError):
            replies = None
        if replies is None:
            self._lose(sock)
            return
        for reply in replies:
            waiter = self._pending.pop(reply.get("id"), None)  # type: ignore[arg-type]
            if waiter is not None:
                waiter.reply = reply
                waiter.done.set()
            elif not reply.get("ok"):
                log.warning("service refused: %s", reply.get("message"))

    def _lose(self, sock: socket.socket) -> None:
        log.warning("lost the service at %s; reconnecting", self.path)
        self._connected.clear()
        self._sock = None
        sock.close()
        self._reader = MessageReader()
        waiters = [*self._pending.values(), *(w for _, w in self._outbox if w is not None)]
        self._pending.clear()
        self._outbox.clear()
        for waiter in waiters:
            waiter.done.set()  # with no reply: the caller raises ServiceUnavailableError now

    def _reconnect(self) -> None:
        if select.select([self._wake_r], [], [], RECONNECT_INTERVAL)[0]:
            os.read(self._wake_r, 4096)
        try:
            sock = _connect(self.path)
            self.service_pid = self._hello(sock)
        except (ServiceUnavailableError, ServiceRefusedError, OSError):
            return
        sock.settimeout(REQUEST_TIMEOUT)
        for registration in list(self._registrations.values()):
            self._outbox.append((dict(registration), None))
        self._sock = sock
        self._connected.set()
        log.warning("reconnected to the service at %s; registrations replayed", self.path)

    @staticmethod
    def _hello(sock: socket.socket) -> int:
        """Handshake on a fresh, blocking socket; return the service's pid."""
        try:
            sock.sendall(encode({"op": "hello", "id": 0, "version": PROTOCOL_VERSION, "pid": os.getpid()}))
            reader = MessageReader()
            replies: list[dict[str, Any]] = []
            while not replies:
                data = sock.recv(65536)
                if not data:
                    raise ServiceUnavailableError("the service closed the connection during the handshake")
                replies = reader.feed(data)
        except (OSError, ProtocolError) as exc:
            sock.close()
            raise ServiceUnavailableError(f"handshake with the service failed: {exc}") from exc
        if not replies[0].get("ok"):
            sock.close()
            raise ServiceRefusedError(f"the service refused this client: {replies[0].get('message')}")
        return int(replies[0].get("service_pid", 0))

    @classmethod
    def _forget_all_in_child(cls) -> None:
        for link in cls._links.values():
            if link._sock is not None:
                link._sock.close()  # our copy only: the parent's connection stays open
            os.close(link._wake_r)
            os.close(link._wake_w)
        cls._links = {}
        cls._guard = threading.Lock()


class _Default(enum.Enum):
    HOME = "the default service home"


DEFAULT_HOME = _Default.HOME
ServiceHome = str | os.PathLike[str] | None | Literal[_Default.HOME]


def link_for(service: ServiceHome) -> Link | None:
    """The link for `service`: None for standalone mode, else this process's link to that home."""
    if service is None:
        return None
    return Link.for_home(None if service is DEFAULT_HOME else service)


def _connect(path: str) -> socket.socket:
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
    return sock


def _gone(path: str) -> str:
    return f"the mmipc service at {path} is not answering (reconnecting in the background)"


os.register_at_fork(after_in_child=Link._forget_all_in_child)


def service_status(service: ServiceHome = DEFAULT_HOME) -> dict[str, Any]:
    """The service's view (journals, writers, readers, uptime), as `Service.status()` returns it."""
    link = link_for(DEFAULT_HOME if service is None else service)
    assert link is not None
    status: dict[str, Any] = link.request("status")["status"]
    return status
