"""The metrics endpoint's slots: silent or slow local connections never starve a real scrape."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest

from mmipc.service._prometheus import MAX_SCRAPES
from test_red_team_3 import MetricsService

pytestmark = pytest.mark.once  # .ci/run: native pass only (the endpoint is not the backend's)


def test_silent_connections_holding_every_slot_never_starve_a_scrape(tmp_path: Path) -> None:
    """8 connections that sent nothing held all MAX_SCRAPES slots for IDLE_TIMEOUT (10 s) each, and a
    scrape meanwhile was closed at once; connecting again and again starved Prometheus for ever."""
    svc = MetricsService(str(tmp_path / "home"))
    svc.start()
    silent: list[socket.socket] = []
    try:
        for _ in range(3 * MAX_SCRAPES):
            silent.append(socket.create_connection(("127.0.0.1", svc.port), timeout=60))
            assert "# TYPE mmipc_service_sessions gauge" in svc.scrape()
        assert svc.child is not None and "Traceback" not in svc.child.stderr()
    finally:
        for sock in silent:
            sock.close()
        svc.stop()


def test_a_connection_that_trickles_its_request_is_closed_at_its_deadline(tmp_path: Path) -> None:
    """The idle timeout was per read: a byte every few seconds kept a slot for ever."""
    svc = MetricsService(str(tmp_path / "home"))
    svc.start()
    try:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=60) as slow:
            slow.sendall(b"GET /metrics HTTP/1.0\r\n")
            deadline = time.monotonic() + 120  # generous: the endpoint's deadline is 3 s
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    slow.sendall(b"X")  # one byte of a header every half second, never its end
                    readable, _, _ = select.select([slow], [], [], 0.5)
                    closed = bool(readable) and slow.recv(1024) == b""
                except OSError:  # reset by the endpoint: closed
                    closed = True
            assert closed, "the trickling connection was never closed"
        assert "# TYPE mmipc_service_sessions gauge" in svc.scrape()
    finally:
        svc.stop()
