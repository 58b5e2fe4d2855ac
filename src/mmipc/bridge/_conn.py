"""Connections, backoff and the loop that keeps a bridge going through failures.

Rules:

* A session is one connection: the bridge connects, resynchronises from the stream and works until
  anything fails. Then it closes the connection, waits (`Backoff`: 0.1 s doubling to 5 s, with
  jitter, reset by progress) and starts a new session. nats-py's own reconnection is off, so that
  every failure takes this one path and the state file tells the truth.
* A dead peer is found by pings (every second; three unanswered close the connection) and by the
  acknowledgement timeout; a paused server is therefore a failure after a few seconds, not a hang.
* Idle waiting sleeps (50 us doubling to 2 ms): a bridge with nothing to do never spins.
* `BridgeError` and the journal's own errors (`MmipcError`, but `StorageError`) end the bridge
  (a frame larger than the server's max_payload is one: `_out.fits` refuses it, headers counted,
  before nats-py would); everything else is transient.
* A ``tls://`` server's greeting (INFO) is read first, on a connection of its own that sends
  nothing: a server that does not require TLS is refused before nats-py, which would go on in
  plaintext, sends it the credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoServersError

from .._errors import MmipcError, StorageError
from ._wire import BridgeError, redact

log = logging.getLogger("mmipc.bridge")
MIN_DELAY, MAX_DELAY = 0.1, 5.0
IDLE_MIN, IDLE_MAX = 50e-6, 2e-3
CONNECT_TIMEOUT = 2.0


class Backoff:
    def __init__(self) -> None:
        self.delay = MIN_DELAY

    def next(self) -> float:
        delay = self.delay * random.uniform(0.5, 1.0)
        self.delay = min(MAX_DELAY, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = MIN_DELAY


class Idle:
    """Sleeps that grow while there is nothing to do, and start short again after work."""

    def __init__(self) -> None:
        self.delay = IDLE_MIN

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(IDLE_MAX, self.delay * 2)

    def reset(self) -> None:
        self.delay = IDLE_MIN


class Status:
    """What the state file says of the link."""

    def __init__(self) -> None:
        self.state = "connecting"
        self.error = ""
        self.retry_in = 0.0
        self.failures = 0
        # frames acknowledged (out) or applied (in): a session that moved resets the backoff
        self.progress = 0

    def fields(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error,
            "retry_in_s": round(self.retry_in, 3),
            "failures": self.failures,
        }


def fatal(exc: BaseException) -> BaseException | None:
    """The error that ends the bridge for `exc`, or None if `exc` is transient."""
    if isinstance(exc, MmipcError) and not isinstance(exc, StorageError):
        return exc
    return None


async def connect(url: str, name: str) -> Client:
    """A connection to `url`, or ConnectionError saying why there is none."""
    urls = [u.strip() for u in url.split(",")]  # a cluster: nats://a:4222,nats://b:4222
    for one in urls:
        await _refuse_plaintext(url, one)
    seen: list[Exception] = []

    async def quiet(exc: Exception) -> None:  # failures reach the session as exceptions
        seen.append(exc)

    # nats-py retries a refused first connection `max_reconnect_attempts` times (forever if 0):
    # one more try here, then the failure comes back to `supervise`, which owns the backoff.
    connecting = nats.connect(
        urls,
        name=name,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.05,
        connect_timeout=CONNECT_TIMEOUT,
        ping_interval=1,
        max_outstanding_pings=3,
        error_cb=quiet,
    )
    try:
        client = await asyncio.wait_for(connecting, 3 * CONNECT_TIMEOUT)
    except (NoServersError, TimeoutError) as exc:
        why = _why_not(seen[-1] if seen else exc)
        raise ConnectionError(f"cannot connect to {redact(url)}: {why}") from None
    if _plaintext_for_tls(client):  # the probe's server was another, or changed its mind since
        await _close(client)
        raise _not_tls(url, client_url(client))
    return client


def _not_tls(url: str, server: str) -> BridgeError:
    return BridgeError(
        f"--nats {redact(url)} asks for TLS (tls://), but the server at {server} does not require it, "
        "so the connection was not encrypted and the bridge sent nothing: configure TLS on the server, "
        "or give nats:// to mean plaintext"
    )


async def _refuse_plaintext(url: str, one: str) -> None:
    """`BridgeError` if `one` is a tls:// URL whose server greets without requiring TLS. Only its
    INFO line is read, nothing is sent; a server that cannot be reached is left to nats-py."""
    split = urllib.parse.urlsplit(one)
    if split.scheme != "tls" or split.hostname is None:
        return
    port = split.port or 4222
    try:
        opening = asyncio.open_connection(split.hostname, port)
        reader, writer = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
    except (OSError, TimeoutError):
        return
    try:
        line = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError):  # ValueError: a line over the reader's 64 KiB
        return
    finally:
        writer.close()
    if line.startswith(b"INFO ") and not _info(line[5:]).get("tls_required"):
        raise _not_tls(url, f"{split.hostname}:{port}")


def _info(body: bytes) -> dict[str, Any]:
    """A NATS INFO line's JSON object ({} if it is none)."""
    try:
        info = json.loads(body)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _why_not(exc: BaseException) -> str:
    """Why a connection failed; a bare timeout says what did not come (a NATS server greets at once)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no NATS greeting (INFO) within {CONNECT_TIMEOUT:g} s: is a NATS server listening there?"
    return _describe(exc)


def _plaintext_for_tls(client: Client) -> bool:
    """Whether `client` reached a tls:// URL in plaintext: nats-py upgrades to TLS only when the
    server's INFO says tls_required, whatever the URL's scheme (the Go client refuses instead)."""
    url = client.connected_url
    info: dict[str, Any] = getattr(client, "_server_info", None) or {}
    return url is not None and url.scheme == "tls" and not info.get("tls_required")


def client_url(client: Client) -> str:
    url = client.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def supervise(
    url: str, name: str, status: Status, stop: asyncio.Event, session: Callable[[Client], Awaitable[None]]
) -> None:
    """Run `session` on fresh connections until `stop` is set, backing off after each failure."""
    backoff = Backoff()
    while not stop.is_set():
        client: Client | None = None
        progress = status.progress
        try:
            status.state = "connecting"
            client = await _unless_stopped(connect(url, name), stop)
            if client is None:
                return
            status.state, status.error = "connected", ""
            await _until(session(client), stop)
            if not stop.is_set():
                raise ConnectionError("the session ended")
            backoff.reset()
        except Exception as exc:
            if (error := fatal(exc)) is not None:
                raise error from None
            if status.progress != progress:  # it worked for a while: a new failure starts short
                backoff.reset()
            delay = backoff.next()
            status.state, status.error, status.retry_in = "retrying", _describe(exc), delay
            status.failures += 1
            log.warning("bridge %s: %s; retrying in %.1f s", name, status.error, delay)
            await _close(client)
            client = None
            await nap(delay, stop)
        finally:
            await _close(client)


async def nap(seconds: float, stop: asyncio.Event) -> None:
    """Sleep `seconds`, or less if `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _unless_stopped(connecting: Awaitable[Client], stop: asyncio.Event) -> Client | None:
    """The connection, or None if `stop` was set first (a paused server can hold a connect)."""
    task = asyncio.ensure_future(connecting)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


async def _until(work: Awaitable[None], stop: asyncio.Event) -> None:
    """Run `work` until it ends or `stop` is set (then give it a moment to finish its batch)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            return
        await asyncio.wait({task}, timeout=10.0)
        if task.done() and not task.cancelled():
            task.result()
    finally:
        for t in (task, stopper):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)


async def _close(client: Client | None) -> None:
    if client is None or client.is_closed:
        return
    try:
        await asyncio.wait_for(client.close(), 2.0)
    except Exception as exc:  # a dead link may not close cleanly; it is dropped either way
        log.debug("close: %s", exc)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


async def serve(
    url: str,
    name: str,
    status: Status,
    session: Callable[[Client, asyncio.Event], Awaitable[None]],
    housekeeping: Callable[[], Awaitable[None]],
    period: float,
    banner: str,
) -> None:
    """A bridge's life until SIGINT or SIGTERM: `session` on connections kept by `supervise`, and
    `housekeeping` every `period` seconds and once more after the last session ended. `banner` is
    printed once the signals are handled (a test may stop the bridge as soon as it sees it)."""
    logging.getLogger("asyncio").addFilter(_quiet_tls_eof)
    stop = stop_event()
    keeper = asyncio.ensure_future(_every(period, housekeeping, stop))
    print(banner, flush=True)
    try:
        await supervise(url, name, status, stop, lambda client: session(client, stop))
    finally:
        stop.set()
        await keeper


def _quiet_tls_eof(record: logging.LogRecord) -> bool:
    """Drop asyncio's "returning true from eof_received() has no effect when using ssl": nats-py's
    stream protocol asks to half-close, which TLS cannot, whenever the server ends a TLS
    connection (as at every stop); the connection closes all the same."""
    return "eof_received()" not in record.getMessage()


async def _every(period: float, action: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    failing = ""
    while True:
        failing = await _attempt(action, failing, period)
        if stop.is_set():
            return
        await nap(period, stop)


async def _attempt(action: Callable[[], Awaitable[None]], failing: str, period: float) -> str:
    """Run `action` (housekeeping: the state file, committed positions); return why it failed, or "".
    A failure (a full or read-only disk under the home) is logged when it starts or changes and
    tried again next period: it never ends housekeeping, nor, later, the bridge."""
    try:
        await action()
    except (OSError, StorageError) as exc:
        why = _describe(exc)
        if why != failing:
            log.warning(
                "cannot update the state file or commit positions: %s; trying every %g s", why, period
            )
        return why
    if failing:
        log.warning("the state file and committed positions are updated again")
    return ""
