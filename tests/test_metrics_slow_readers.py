"""The metrics endpoint and clients that never read their response. A request had REQUEST_DEADLINE
to arrive, but its response was then written with IDLE_TIMEOUT (10 s) per socket operation: a
client that sent its request and never read a large response held its slot for 10 s per write,
and MAX_SCRAPES of them held every slot, so a scrape meanwhile was closed. Now the whole exchange
is under one deadline, and a connection taking its response is evicted, like one still sending its
request, when a new connection finds every slot taken. Real sockets: a tiny SO_RCVBUF, no read."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import termios
from pathlib import Path

import pytest

from conftest import wait_for
from mmipc import Writer
from mmipc.service._prometheus import MAX_SCRAPES
from test_red_team_3 import MetricsService

pytestmark = pytest.mark.once  # .ci/run: native pass only (the endpoint is not the backend's)
JOURNALS = 200
BIG = 6 << 20  # more than the endpoint's send buffer can take (4 MiB at most) and the client's


def _deep_directory(root: Path) -> str:
    """A journal directory whose path is about 3,900 bytes long: every label of its journals is."""
    path = str(root)
    while len(path) < 3800:
        path = os.path.join(path, "d" * 200)
    return path


def _slow_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # before connect: the window stays tiny
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    return sock


def _unread(sock: socket.socket) -> int:
    """Bytes of the response waiting in the client's receive queue (never read)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


def test_clients_that_never_read_their_response_never_starve_a_scrape(tmp_path: Path) -> None:
    svc = MetricsService(str(tmp_path / "home"))
    svc.start()
    directory = _deep_directory(tmp_path)
    slow: list[socket.socket] = []
    try:
        for i in range(JOURNALS):
            with Writer.create(directory, f"j{i}", page_size=64 * 1024, service=svc.home) as writer:
                writer.write(b"x")
        assert len(svc.scrape()) > BIG  # the response cannot all sit in socket buffers
        slow = [_slow_reader(svc.port) for _ in range(MAX_SCRAPES)]
        # each has sent its request and is being answered: none is waiting for its request any more
        wait_for(lambda: all(_unread(s) > 0 for s in slow), what="every slow client's response to start")
        body = svc.scrape()  # every slot is held by a client that does not read
        assert body.endswith("\n") and len(body) > BIG and "mmipc_journal_pages" in body
        assert svc.child is not None and "Traceback" not in svc.child.stderr()
        # the slow clients were dropped, not served in full: reading now, the first ends short
        first = slow[0]
        first.settimeout(120)
        got = b""
        try:
            while chunk := first.recv(1 << 20):
                got += chunk
        except ConnectionResetError:  # a reset instead of the end: dropped all the same
            pass
        assert len(got) < len(body)
    finally:
        for sock in slow:
            sock.close()
        svc.stop()
