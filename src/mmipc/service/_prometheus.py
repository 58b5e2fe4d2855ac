"""The service's status as Prometheus text (exposition format 0.0.4), and a loopback-only endpoint.

Rules:

* `exposition` is a pure function of a `status` dict: `mmipc status --prometheus` and the endpoint
  print the same text. A figure that is unknown (no sequence numbers on a version-1 page, no frame
  yet) is left out, never written as a made-up 0.
* The endpoint is off by default. `mmipc service --metrics HOST:PORT` serves ``GET /metrics`` on a
  loopback address only (127.0.0.0/8, ::1 or "localhost"); any other address is refused with a
  `UsageError` before anything is bound: the figures name files and processes of this user.
  Any local user can still connect to it: it serves MAX_SCRAPES connections at once, so that idle
  connections never take the descriptors the service needs for its own clients. A connection has
  REQUEST_DEADLINE seconds to send its whole request (a slow sender too, not only a silent one), and
  DEADLINE seconds from its accept to take its whole response: one deadline over the exchange,
  not a timeout per socket operation (a client that never read a large response held its slot for
  IDLE_TIMEOUT per write). A connection that is sending its request or taking its response (not one
  whose status is being computed) is *evictable*: it gives its slot to a new connection when every
  slot is taken, the one nearest its deadline first, so idle, slow or non-reading local clients can
  never starve a real scrape (8 silent connections did, for IDLE_TIMEOUT each, again and again).
  Over the cap with every slot computing a status, a new one is closed.
"""

from __future__ import annotations

import http.server
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._errors import UsageError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_SCRAPES = 8  # connections served at once; any local user can connect to a loopback port
IDLE_TIMEOUT = 10.0  # seconds a connection may keep silent before it is closed
REQUEST_DEADLINE = 3.0  # seconds a connection has to send its whole request
DEADLINE = 10.0  # seconds from a connection's accept to the end of its response
SLOT_WAIT = 5.0  # seconds the accept loop waits for the slot of a connection it evicted
log = logging.getLogger("mmipc.service")

_JOURNAL = (
    ("mmipc_journal_frames_per_second", "gauge", "frames written per second, recently", "frames_per_s"),
    ("mmipc_journal_bytes_per_second", "gauge", "bytes written per second, recently", "bytes_per_s"),
    ("mmipc_journal_last_frame_age_seconds", "gauge", "age of the newest frame", "last_frame_age_s"),
    ("mmipc_journal_disk_bytes", "gauge", "bytes the journal's pages take on disk", "disk_bytes"),
    ("mmipc_journal_free_bytes", "gauge", "bytes free on the journal's filesystem", "free_bytes"),
    ("mmipc_journal_time_to_full_seconds", "gauge", "free bytes over bytes per second", "time_to_full_s"),
    ("mmipc_journal_pages", "gauge", "page files on disk", "pages"),
    ("mmipc_journal_next_seq", "counter", "the sequence number of the next frame (format v2)", "next_seq"),
)  # fmt: skip
_LAG = (
    ("mmipc_reader_lag_frames", "gauge", "frames not read yet (v2 journals)", "lag_frames"),
    ("mmipc_reader_lag_seconds", "gauge", "newest frame's timestamp minus the reader's, in s", "lag_ns"),
    ("mmipc_reader_lag_bytes", "gauge", "bytes written but not read yet", "lag_bytes"),
    ("mmipc_reader_stalled_seconds", "gauge", "time since a lagging reader last moved", "stalled_s"),
)  # fmt: skip

_COMMITTED = (
    ("mmipc_reader_committed_page", "page of a durable reader's committed position", "page_no"),
    ("mmipc_reader_committed_seq", "seq of a durable reader's last acknowledged frame (v2)", "seq"),
)


def exposition(status: dict[str, Any]) -> str:
    """The Prometheus text of a service status."""
    svc = status["service"]
    lines: list[str] = []
    _family(lines, "mmipc_service_uptime_seconds", "gauge", "seconds since the service started")
    lines.append(f"mmipc_service_uptime_seconds {svc['uptime_s']}")
    _family(lines, "mmipc_service_sessions", "gauge", "connected client processes")
    lines.append(f"mmipc_service_sessions {svc['sessions']}")
    _family(lines, "mmipc_retention_pages_removed_total", "counter", "pages removed or archived by retention")
    lines.append(f"mmipc_retention_pages_removed_total {svc.get('pages_removed', 0)}")
    _family(lines, "mmipc_journal_writer_up", "gauge", "1 if a live writer holds the journal")
    journals = status["journals"]
    for j in journals:
        lines.append(f"mmipc_journal_writer_up{_labels(j)} {int(j['writer_pid'] is not None)}")
    for metric, kind, help_text, key in _JOURNAL:
        _family(lines, metric, kind, help_text)
        lines += [f"{metric}{_labels(j)} {j[key]}" for j in journals if j.get(key) is not None]
    _reader_lines(lines, status["readers"])
    return "\n".join(lines) + "\n"


def _reader_lines(lines: list[str], readers: list[dict[str, Any]]) -> None:
    _family(
        lines, "mmipc_reader_up", "gauge", "1 if the reader's process is alive (state: live, dead, offline)"
    )
    for r in readers:
        labels = f'{{reader="{_escape(r["name"])}",state="{r["state"]}"}}'
        lines.append(f"mmipc_reader_up{labels} {int(r['state'] == 'live')}")
    for metric, kind, help_text, key in _LAG:
        _family(lines, metric, kind, help_text)
        for r in readers:
            for row in r.get("lag", []):
                if row.get(key) is not None:
                    value = row[key] / 1e9 if key == "lag_ns" else row[key]
                    lines.append(f"{metric}{_labels(row, r['name'])} {value}")
    for metric, help_text, key in _COMMITTED:
        _family(lines, metric, "gauge", help_text)
        for r in readers:
            for row in r.get("lag", []):
                value = row.get("committed", {}).get(key, -1)
                if value >= 0:
                    lines.append(f"{metric}{_labels(row, r['name'])} {value}")


def _family(lines: list[str], metric: str, kind: str, help_text: str) -> None:
    lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]


def _labels(journal: dict[str, Any], reader: str | None = None) -> str:
    pairs = [("directory", journal["directory"]), ("name", journal["name"])]
    if reader is not None:
        pairs.insert(0, ("reader", reader))
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _escape(value: str) -> str:
    """A label value: UTF-8 (a path's bytes that are not show as U+FFFD), escaped as the format says."""
    value = os.fsencode(value).decode("utf-8", "replace")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_loopback(address: str) -> tuple[str, int]:
    """HOST:PORT (or [::1]:PORT) of a loopback address; a `UsageError` for anything else."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--metrics wants HOST:PORT, for example 127.0.0.1:9464, not {address!r}")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            f"--metrics refuses {host!r}: the endpoint binds a loopback address only "
            "(127.0.0.1, ::1 or localhost); put a proxy in front of it to expose it"
        )
    return ("127.0.0.1" if host == "localhost" else host), int(port_text)


def serve_metrics(address: str, status: Callable[[], dict[str, Any]]) -> http.server.HTTPServer:
    """Serve ``GET /metrics`` at loopback `address` on a daemon thread; returns the server."""
    host, port = parse_loopback(address)

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = IDLE_TIMEOUT

        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is here")
                return
            try:
                body = exposition(status()).encode()
            except Exception as exc:  # the service's trouble: the scraper is told, the service lives
                self.send_error(500, f"no status: {type(exc).__name__}: {exc}"[:200])
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def parse_request(self) -> bool:
            parsed = super().parse_request()
            server.request_read(self.request)  # its whole request is in: no longer evicted
            return parsed

        def send_response_only(self, code: int, message: str | None = None) -> None:
            server.responding(self.request)  # evictable again while its response is written
            super().send_response_only(code, message)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            pass

    server_class = _IPv6Server if ":" in host else _Server
    try:
        server: _Server = server_class((host, port), Handler)
    except OSError as exc:  # alone, "Address already in use" named neither the option nor the port
        raise UsageError(
            f"--metrics {address}: cannot listen there ({exc.strerror or exc}): is another program "
            "on that port? Pick another"
        ) from None
    threading.Thread(target=server.serve_forever, name="mmipc-metrics", daemon=True).start()
    return server


class _Server(http.server.ThreadingHTTPServer):
    """At most MAX_SCRAPES connections at a time; one that is sending its request or taking its
    response (`_evictable`) is closed at its deadline, or at once when a new connection needs its
    slot (the one nearest its deadline first)."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: at socketserver's 5, a burst of connections waits
    # for SYN retries (1 s, 3 s, 7 s ...) before the accept loop can refuse or serve it

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES)
        self._accepted: dict[socket.socket, float] = {}  # every connection served: since when
        self._evictable: dict[socket.socket, float] = {}  # sending its request or taking its
        # response: its deadline (REQUEST_DEADLINE, then DEADLINE, after its accept)
        self._lock = threading.Lock()  # over both, and every shutdown or close of their sockets
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._evict(min(self._evictable_now(), key=lambda item: item[1], default=None))
            if not self._slots.acquire(timeout=SLOT_WAIT):  # every slot computes a status
                self.shutdown_request(request)
                return
        now = time.monotonic()
        with self._lock:
            self._accepted[request], self._evictable[request] = now, now + REQUEST_DEADLINE
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: it would have released the slot
            self.shutdown_request(request)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def request_read(self, request: socket.socket) -> None:
        with self._lock:
            self._evictable.pop(request, None)

    def responding(self, request: socket.socket) -> None:
        """Its response is being written: evictable again, by the deadline of its accept."""
        with self._lock:
            accepted = self._accepted.get(request)
            if accepted is not None:
                self._evictable[request] = accepted + DEADLINE

    def service_actions(self) -> None:
        """Close the connections past their deadline (serve_forever calls this twice a second)."""
        now = time.monotonic()
        for item in self._evictable_now():
            if item[1] < now:
                self._evict(item)

    def _evictable_now(self) -> list[tuple[socket.socket, float]]:
        with self._lock:
            return list(self._evictable.items())

    def _evict(self, item: tuple[socket.socket, float] | None) -> None:
        """Shut an evictable connection down: its thread reads the end of it (or fails its write),
        and frees its slot."""
        with self._lock:
            if item is not None and self._evictable.pop(item[0], None) is not None:
                try:
                    item[0].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def shutdown_request(self, request: Any) -> None:
        with self._lock:  # never closed while `_evict` shuts it down: its descriptor could be reused
            self._evictable.pop(request, None)
            self._accepted.pop(request, None)
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a client gone, or evicted while its response was written
            log.debug("metrics: a request from %s ended: %s", client_address, exc)
        else:
            log.warning("metrics: a request from %s failed: %s", client_address, exc)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6
