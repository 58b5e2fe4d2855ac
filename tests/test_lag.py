"""Status with lag: journal rates and disk figures, readers' lag, dead readers, Prometheus text."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Child, Procs, ServiceProcess, wait_for
from mmipc import Reader, Writer, service_status
from mmipc._errors import UsageError
from mmipc.service._prometheus import exposition, parse_loopback
from mmipc.service._protocol import encode
from test_service import answer, ask, raw_client

PAGE = 1024 * 1024
PAYLOAD = 200
FRAME = 232  # 32-byte header + 200, already 8-aligned


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(str(tmp_path / "home"))
    svc.start()
    yield svc
    svc.stop()


def mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300)


def reader_entry(home: str, name: str) -> dict[str, Any] | None:
    return next((r for r in service_status(home)["readers"] if r["name"] == name), None)


def lag_bytes(home: str, name: str) -> int | None:
    entry = reader_entry(home, name)
    return entry["lag"][0].get("lag_bytes") if entry and entry["lag"] else None


def journal_entry(home: str, name: str) -> dict[str, Any]:
    [journal] = [j for j in service_status(home)["journals"] if j["name"] == name]
    return dict(journal)


def test_reader_lag_matches_known_traffic_and_never_goes_negative(fresh: ServiceProcess, jdir: str) -> None:
    writer = Writer.create(jdir, "j", page_size=PAGE, service=fresh.home)
    for i in range(1000):
        writer.write(i.to_bytes(8, "little") * (PAYLOAD // 8))
    reader = Reader.create("lagger", service=fresh.home)
    reader.add_journal(jdir, "j")
    frames = [reader.read() for _ in range(400)]
    assert frames[-1] is not None
    last_read = frames[-1].nano

    def lag_published() -> bool:
        entry = reader_entry(fresh.home, "lagger")
        return entry is not None and entry["lag"] and entry["lag"][0].get("lag_bytes") == 600 * FRAME

    wait_for(lag_published, what="the reader's published position in the status")
    entry = reader_entry(fresh.home, "lagger")
    assert entry is not None
    [row] = entry["lag"]
    assert entry["state"] == "live" and entry["pid"] == os.getpid() and entry["wait"] == "read"
    assert row["lag_ns"] == writer.last_nano - last_read
    assert row["lag_frames"] == 600  # from the sequence numbers of format v2
    assert row["stalled_s"] >= 0
    for _ in range(600):
        reader.read()
    wait_for(lambda: reader_entry(fresh.home, "lagger")["lag"][0]["lag_bytes"] == 0, what="lag 0")  # type: ignore[index]
    [row] = reader_entry(fresh.home, "lagger")["lag"]  # type: ignore[index]
    assert row["lag_ns"] == 0 and row["stalled_s"] == 0 and row["lag_frames"] == 0
    journal = journal_entry(fresh.home, "j")
    assert journal["writer_pid"] == os.getpid() and journal["disk_bytes"] >= PAGE
    assert journal["free_bytes"] > 0 and journal["last_frame_age_s"] >= 0
    text = mmipc("status", "--prometheus", "--home", fresh.home).stdout
    labels = f'{{reader="lagger",directory="{os.path.realpath(jdir)}",name="j"}}'
    assert f"mmipc_reader_lag_bytes{labels} 0" in text
    assert f'mmipc_journal_writer_up{{directory="{os.path.realpath(jdir)}",name="j"}} 1' in text
    writer.close()
    reader.close()
    wait_for(lambda: journal_entry(fresh.home, "j")["writer_pid"] is None, what="the journal without writer")
    assert reader_entry(fresh.home, "lagger") is None  # closed: its counter file is gone


def test_rates_are_those_of_the_traffic(fresh: ServiceProcess, jdir: str) -> None:
    """Same-sized frames on one big page: bytes/s over frames/s is exactly the frame's size."""
    with Writer.create(jdir, "rated", page_size=PAGE, service=fresh.home) as writer:

        def flowing() -> bool:
            for _ in range(20):
                writer.write(bytes(PAYLOAD))
            journal = journal_entry(fresh.home, "rated")
            return bool(journal["frames_per_s"] > 0 and journal["bytes_per_s"] > 0)

        wait_for(flowing, what="the monitor to measure the traffic")
        journal = journal_entry(fresh.home, "rated")
        assert journal["bytes_per_s"] / journal["frames_per_s"] == pytest.approx(FRAME, rel=1e-3)
        assert journal["time_to_full_s"] is not None and journal["time_to_full_s"] > 0


def test_a_killed_reader_is_shown_dead_with_its_lag(fresh: ServiceProcess, jdir: str, procs: Procs) -> None:
    with Writer.create(jdir, "k", page_size=PAGE, service=fresh.home) as writer:
        for _ in range(100):
            writer.write(bytes(PAYLOAD))
        child = procs.spawn_code(
            "import os, sys, time\n"
            f"os.environ['MMIPC_HOME'] = {fresh.home!r}\n"
            "from mmipc import Reader\n"
            "r = Reader.create('doomed')\n"
            f"r.add_journal({jdir!r}, 'k')\n"
            "[r.read() for _ in range(30)]\n"
            "print('read', flush=True)\n"
            "time.sleep(600)\n"
        )
        child.expect_line("read")
        wait_for(
            lambda: (
                (reader_entry(fresh.home, "doomed") or {}).get("lag", [{}])[0].get("lag_bytes") == 70 * FRAME
            ),
            what="the child's position",
        )
        child.kill9()
        wait_for(lambda: (reader_entry(fresh.home, "doomed") or {}).get("state") == "dead", what="dead")
        entry = reader_entry(fresh.home, "doomed")
        assert entry is not None and entry["pid"] == child.pid and entry["lag"][0]["lag_bytes"] == 70 * FRAME
        text = mmipc("status", "--home", fresh.home).stdout
        assert "doomed" in text and "dead" in text


def test_metrics_endpoint_serves_the_text_on_loopback_only(tmp_path: Path, jdir: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = str(tmp_path / "mhome")
    child = subprocess.Popen(
        [sys.executable, "-m", "mmipc", "service", "--home", home, "--metrics", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().startswith("mmipc service pid")
        with Writer.create(jdir, "m", service=home) as writer:
            writer.write(b"x")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
                body = response.read().decode()
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE mmipc_journal_disk_bytes gauge" in body and 'name="m"' in body
    finally:
        child.terminate()
        child.wait(timeout=30)
    refused = mmipc("service", "--home", home, "--metrics", f"0.0.0.0:{port}")
    assert refused.returncode == 1 and "loopback" in refused.stderr and "Traceback" not in refused.stderr


def test_parse_loopback() -> None:
    assert parse_loopback("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_loopback("[::1]:9464") == ("::1", 9464)
    assert parse_loopback("localhost:1") == ("127.0.0.1", 1)
    for bad in ("10.0.0.1:9464", "example.com:80", "127.0.0.1", "127.0.0.1:0", ":9464"):
        with pytest.raises(UsageError):
            parse_loopback(bad)


def test_exposition_escapes_labels_and_leaves_unknown_figures_out() -> None:
    status = {
        "service": {"uptime_s": 1.5, "sessions": 2, "pages_removed": 0},
        "journals": [
            {
                "directory": '/a"b\\c',
                "name": "j",
                "writer_pid": None,
                "pages": 1,
                "frames_per_s": 0.0,
                "bytes_per_s": 0.0,
                "last_frame_age_s": None,
                "disk_bytes": 4096,
                "free_bytes": 1,
                "time_to_full_s": None,
                "next_seq": None,
            }
        ],  # fmt: skip
        "readers": [],
    }
    text = exposition(status)
    assert 'mmipc_journal_writer_up{directory="/a\\"b\\\\c",name="j"} 0' in text
    assert "mmipc_journal_last_frame_age_seconds{" not in text and "mmipc_journal_next_seq{" not in text


def test_an_idle_journal_holds_one_page_until_it_is_half_full(fresh: ServiceProcess, jdir: str) -> None:
    """The next page is prepared when the first is half full, and at once for a busy journal."""
    page = 64 * 1024
    with Writer.create(jdir, "idle", page_size=page, service=fresh.home) as writer:
        writer.write(b"x" * 100)
        ticks = service_status(fresh.home)["service"]["monitor_ticks"]
        wait_for(lambda: service_status(fresh.home)["service"]["monitor_ticks"] >= ticks + 2, what="2 ticks")
        pages = sorted(f for f in os.listdir(jdir) if not f.endswith(".bells"))  # .bells: doorbells
        assert pages == ["idle.00000000.journal", "idle.lock"]
        for _ in range(5):
            writer.write(b"x" * 10000)  # past half of the page
        wait_for(lambda: os.path.exists(os.path.join(jdir, "idle.00000001.journal")), what="page 1 prepared")
        for _ in range(4):
            writer.write(
                b"x" * 10000
            )  # into page 1: page 0 lasted far less than a minute, page 2 comes at once
        wait_for(lambda: os.path.exists(os.path.join(jdir, "idle.00000002.journal")), what="page 2 prepared")


def test_status_watch_refreshes_until_ctrl_c(fresh: ServiceProcess) -> None:
    watch = Child(
        [sys.executable, "-m", "mmipc", "status", "--watch", "--interval", "0.2", "--home", fresh.home]
    )
    try:
        for _ in range(2):
            assert watch.expect_line("\x1b[H\x1b[2Jservice pid").endswith(
                "pages prepared"
            )  # cleared, redrawn
        watch.proc.send_signal(signal.SIGINT)
        assert watch.proc.wait(timeout=60) == 130 and "Traceback" not in watch.stderr()
    finally:
        if watch.proc.poll() is None:
            watch.kill9()


def test_status_aligns_the_last_frame_column_past_long_names(fresh: ServiceProcess, jdir: str) -> None:
    """The JOURNAL column had no width: a long name pushed its LAST FRAME out of line."""
    with (
        Writer.create(jdir, "a", service=fresh.home) as short,
        Writer.create(jdir, "a_much_longer_journal_name_than_the_others", service=fresh.home) as long,
    ):
        short.write(b"x")
        long.write(b"x")
        lines = mmipc("status", "--home", fresh.home).stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "JOURNAL" in line and "WRITER" in line)
    rows = [lines[head], *(line for line in lines[head + 1 :] if jdir in line)]
    assert len(rows) == 3, lines
    starts = {rows[0].index("LAST FRAME"), *(re.search(r"\d{4}-\d\d-\d\d ", row).start() for row in rows[1:])}  # type: ignore[union-attr]
    assert len(starts) == 1, "\n".join(rows)


def test_an_offline_durable_reader_shows_its_committed_seq(fresh: ServiceProcess, jdir: str) -> None:
    with Writer.create(jdir, "d", page_size=64 * 1024, service=fresh.home) as writer:
        for _ in range(1000):
            writer.write(bytes(PAYLOAD))  # about 260 frames a page: four pages
        with Reader.create("dur", durable=True, service=fresh.home) as reader:
            reader.add_journal(jdir, "d")
            assert all(reader.read() is not None for _ in range(700))
        entry = reader_entry(fresh.home, "dur")
        assert entry is not None and entry["state"] == "offline" and entry["durable"]
        [row] = entry["lag"]
        assert row["committed"]["seq"] == 699 and row["committed"]["page_no"] >= 2
        assert row["lag_frames"] == 300 and row["lag_bytes"] >= 300 * FRAME and row["lag_ns"] > 0
        assert "seq 699" in mmipc("status", "--home", fresh.home).stdout
        labels = f'{{reader="dur",directory="{os.path.realpath(jdir)}",name="d"}}'
        assert (
            f"mmipc_reader_committed_seq{labels} 699"
            in mmipc("status", "--prometheus", "--home", fresh.home).stdout
        )
        table = mmipc("cursors", "--home", fresh.home).stdout.splitlines()
        assert table[0].split()[:5] == ["READER", "JOURNAL", "PAGE", "OFFSET", "SEQ"]
        assert table[1].split()[0] == "dur" and table[1].split()[4] == "699"


def unread_by_the_service(sock: socket.socket) -> int:
    """Bytes we sent that the service has not read yet (an AF_UNIX sender's queue: SIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])


@pytest.mark.once  # .ci/run: native pass only (raw requests; the status reads files without the backend)
def test_a_slow_status_never_delays_another_clients_request(fresh: ServiceProcess, tmp_path: Path) -> None:
    """The status was computed on the service's event loop: while it read thousands of journals' files
    (here 400 journals in a directory of 4,000 files, which every listing must scan), no other client
    got an answer. Now the loop answers a hello while the status is still being computed.

    Deterministic under the old code: once the service has read the status requests (our sockets'
    send queues are empty), the hello could only be answered after every status reply was sent."""
    crowd = tmp_path / "crowd"
    crowd.mkdir()
    for i in range(4000):
        (crowd / f"other{i:05d}.txt").touch()
    client = raw_client(fresh)
    assert ask(client, {"op": "register_reader", "id": 2, "name": "crowd"})["ok"]
    adds = [
        {"op": "add_journal", "id": 3, "reader": "crowd", "directory": str(crowd), "name": f"j{i}"}
        for i in range(400)
    ]
    client.sendall(b"".join(encode(a) for a in adds))
    assert all(answer(client)["ok"] for _ in adds)
    # 40 statuses queued behind one another (one status thread): about 40 x 10 ms of reading, so
    # that a hello answered meanwhile is not a race the status could win on a loaded machine
    askers, other = [raw_client(fresh) for _ in range(40)], raw_client(fresh)
    for asker in askers:
        asker.sendall(encode({"op": "status", "id": 7}))
    wait_for(
        lambda: all(unread_by_the_service(a) == 0 for a in askers),
        what="the service to read the status requests",
    )
    assert ask(other, {"op": "hello", "id": 8, "version": 1, "pid": os.getpid()})["ok"]
    readable, _, _ = select.select(askers, [], [], 0)
    assert len(readable) < len(askers), "the hello waited for every status"
    for asker in askers:
        asker.settimeout(600)
        reply = answer(asker)
        assert reply["id"] == 7 and reply["ok"]
        assert sum(j["directory"] == str(crowd) for j in reply["status"]["journals"]) == 400  # type: ignore[index]


def test_fifos_for_counter_and_cursor_files_do_not_hang_the_status(fresh: ServiceProcess) -> None:
    """Both were opened without O_NONBLOCK: a FIFO found there blocked the status for good."""
    for sub, name in (("readers", "fifo.counters"), ("cursors", "fifo.cursor")):
        os.makedirs(os.path.join(fresh.home, sub), mode=0o700, exist_ok=True)
        os.mkfifo(os.path.join(fresh.home, sub, name))
    [entry] = [r for r in service_status(fresh.home)["readers"] if r["name"] == "fifo"]
    assert entry["state"] == "offline" and "not a regular file" in entry["cursor_error"]
    listed = mmipc("cursors", "--home", fresh.home)
    assert listed.returncode == 0 and "not a regular file" in listed.stdout


def prometheus_values(text: str) -> dict[str, float]:
    """'name{labels}' -> value of every sample line."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }


def test_status_json_and_prometheus_carry_every_figure_of_known_traffic(
    fresh: ServiceProcess, jdir: str
) -> None:
    """Issue 12's "Done means": every listed figure, in `status --json` and `--prometheus`, against
    traffic whose figures are known: 232-byte frames, a live reader 100 frames in, a durable reader
    that committed 50, then a stall."""
    home, real = fresh.home, os.path.realpath(jdir)
    writer = Writer.create(jdir, "k", page_size=PAGE, service=home)
    follower, keeper = (
        Reader.create("follower", service=home),
        Reader.create("keeper", durable=True, service=home),
    )
    follower.add_journal(jdir, "k")
    keeper.add_journal(jdir, "k")

    written = 0

    def flowing() -> bool:
        nonlocal written
        for _ in range(20):
            writer.write(bytes(PAYLOAD))
        written += 20
        return bool(journal_entry(home, "k")["frames_per_s"] > 0)

    wait_for(flowing, what="the monitor to measure the traffic")
    frames = follower.frames(wait="backoff")
    read = [next(frames) for _ in range(100)]
    assert all(keeper.read() is not None for _ in range(50))
    keeper.commit()

    def stalled() -> bool:
        row = (reader_entry(home, "follower") or {"lag": [{}]})["lag"][0]
        return bool(row.get("lag_frames") == written - 100 and row.get("stalled_s", 0) >= 0.5)

    wait_for(stalled, what="the follower shown stalled")
    status = json.loads(mmipc("status", "--json", "--home", home).stdout)
    [journal] = [j for j in status["journals"] if j["name"] == "k"]
    total = journal["next_seq"]
    assert total == written and total > 100
    assert journal["writer_pid"] == os.getpid() and journal["directory"] == real
    assert journal["frames_per_s"] > 0 and journal["bytes_per_s"] > 0 and journal["last_frame_age_s"] >= 0
    pages = [os.path.join(jdir, f) for f in os.listdir(jdir) if f.endswith(".journal")]
    assert journal["disk_bytes"] == sum(os.stat(p).st_blocks * 512 for p in pages)
    assert journal["free_bytes"] > 0 and journal["time_to_full_s"] > 0  # free / bytes per s
    readers = {r["name"]: r for r in status["readers"]}
    follow, keep = readers["follower"], readers["keeper"]
    assert (follow["state"], follow["pid"], follow["wait"], follow["durable"]) == (
        "live",
        os.getpid(),
        "backoff",
        False,
    )
    assert follow["journals"] == [[real, "k"]]
    [row] = follow["lag"]
    assert row["lag_frames"] == total - 100 and row["lag_ns"] == writer.last_nano - read[-1].nano
    assert row["stalled_s"] >= 0.5 and "committed" not in row
    [krow] = keep["lag"]
    assert keep["durable"] and keep["state"] == "live" and krow["committed"]["seq"] == 49
    assert krow["lag_frames"] == total - 50 and krow["committed"]["page_no"] == 0
    prom = prometheus_values(mmipc("status", "--prometheus", "--home", home).stdout)
    jl, fl, kl = (
        f'{{directory="{real}",name="k"}}',
        f'{{reader="follower",directory="{real}",name="k"}}',
        f'{{reader="keeper",directory="{real}",name="k"}}',
    )
    assert (
        prom[f"mmipc_journal_writer_up{jl}"] == 1
        and prom[f"mmipc_journal_disk_bytes{jl}"] == journal["disk_bytes"]
    )
    assert prom[f"mmipc_journal_next_seq{jl}"] == total
    for metric in ("frames_per_second", "bytes_per_second", "last_frame_age_seconds", "free_bytes"):
        assert prom[f"mmipc_journal_{metric}{jl}"] >= 0
    assert prom[f"mmipc_reader_lag_frames{fl}"] == total - 100
    assert prom[f"mmipc_reader_lag_seconds{fl}"] == pytest.approx(row["lag_ns"] / 1e9)
    assert prom[f"mmipc_reader_stalled_seconds{fl}"] >= 0.5
    assert prom['mmipc_reader_up{reader="follower",state="live"}'] == 1
    assert prom[f"mmipc_reader_committed_seq{kl}"] == 49 and prom[f"mmipc_reader_committed_page{kl}"] == 0
    follower.close()
    keeper.close()
    writer.close()
    wait_for(
        lambda: "no writer" in mmipc("status", "--home", home).stdout,
        what="the journal listed without writer",
    )


def test_pipelined_status_requests_each_get_their_reply(fresh: ServiceProcess) -> None:
    """Status replies come from the status thread, interleaved with the loop's own replies: each
    request still gets exactly one reply with its id (a status, or `busy` past 64 waiting)."""
    sock = raw_client(fresh)
    requests = [
        {"op": "status", "id": i} if i % 2 else {"op": "hello", "id": i, "version": 1, "pid": os.getpid()}
        for i in range(200)
    ]
    sock.sendall(b"".join(encode(r) for r in requests))
    replies = [answer(sock) for _ in requests]
    assert sorted(int(r["id"]) for r in replies) == list(range(200))  # type: ignore[call-overload]
    for reply in replies:
        assert reply["ok"] and ("status" in reply) == (int(reply["id"]) % 2 == 1) or reply["error"] == "busy"  # type: ignore[call-overload]
