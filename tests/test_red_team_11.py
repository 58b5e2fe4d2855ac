"""Red team 11: the NATS bridge against a hostile or unlucky user, with a real nats-server.

Each test is a defect found (and fixed): it failed before its fix.
"""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

import mmipc
from conftest import Child, Procs, ServiceProcess, wait_for
from mmipc.bridge._wire import covers
from mmipc.journal._durable import CursorFile, cursor_dir_for
from test_bridge import (
    NatsServer,
    bridge_child,
    bridge_in,
    bridge_once,
    bridge_out,
    free_port,
    journal_frames,
    mirrored,
    nats_server,  # noqa: F401 (a fixture)
    state,
    stop,
    stream_messages,
    with_nats,
    write_frames,
)

# .ci/run: native pass only. These are the bridge's dealings with NATS (and its own files), whatever
# backend reads the journals; test_bridge.py runs the journal side under both.
pytestmark = pytest.mark.once


def _max_payload(url: str) -> int:
    async def ask(client: Any) -> int:
        return int(client.max_payload)

    return with_nats(url, ask)


def test_a_frame_that_fits_max_payload_only_without_headers_stops_the_out_bridge(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The server counts a message's headers in max_payload, nats-py checks only the payload: a
    frame a few bytes under the limit passed nats-py, the server closed the connection ("maximum
    payload exceeded"), and the bridge reconnected and sent it again for ever, reporting
    "TimeoutError". No retry can ship it: the bridge stops with one line, as for a larger frame."""
    source = str(tmp_path / "src")
    limit = _max_payload(nats_server.url)
    with mmipc.Writer.create(source, "md", service=None) as writer:
        writer.write(b"small")
        writer.write(bytes(limit - 64))
    name = f"bo-{uuid.uuid4().hex[:8]}"
    done = bridge_once("out", nats_server.url, source, "md", "--name", name, "--ack-timeout", "2", timeout=90)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "max_payload" in line and f"({limit} bytes)" in line and "md/1" in line, line
    assert [data for _, _, data, _ in stream_messages(nats_server.url, "DESK")] == [b"small"]


def _add_stream(url: str, stream: str, subjects: list[str], no_ack: bool = False) -> None:
    async def add(client: Any) -> None:
        from nats.js.api import StreamConfig

        await client.jetstream().add_stream(StreamConfig(name=stream, subjects=subjects, no_ack=no_ack))

    with_nats(url, add)


def test_two_hosts_share_one_stream_under_two_prefixes_as_documented(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
) -> None:
    """docs/bridge.md: a stream made with subjects 'mmipc.DESK.>' takes the bridges of two hosts
    under --subject-prefix mmipc.DESK.gw1 and .gw2. The out-bridge looked for its own wildcard
    among the stream's subjects, literally, and stopped: "stream DESK does not take subjects
    mmipc.DESK.gw1.>". A subject the stream takes through a wildcard is taken."""
    _add_stream(nats_server.url, "DESK", ["mmipc.DESK.>"])
    frames, outs = {}, []
    for seed, gateway in enumerate(("gw1", "gw2")):
        source, prefix = str(tmp_path / gateway), f"mmipc.DESK.{gateway}"
        frames[gateway] = write_frames(source, "md", 20, seed)
        extra = ("--name", f"bo-{gateway}-{uuid.uuid4().hex[:6]}", "--host-id", gateway)
        outs.append(bridge_out(procs, nats_server, source, ["md"], "--subject-prefix", prefix, *extra))
    into = []
    for gateway in ("gw1", "gw2"):
        to, prefix = str(tmp_path / f"mirror-{gateway}"), f"mmipc.DESK.{gateway}"
        into.append(bridge_in(procs, nats_server, to, "--subject-prefix", prefix, "--name", f"bi-{gateway}"))
        wait_for(functools.partial(mirrored, to, "md", 20), what=f"the mirror of {gateway}")
        assert journal_frames(to, "md") == frames[gateway]
    for child in [*outs, *into]:
        stop(child)


def test_stream_subjects_cover_a_prefix_by_nats_wildcards() -> None:
    assert covers("mmipc.DESK.>", "mmipc.DESK.gw1.>")
    assert covers("mmipc.DESK.>", "mmipc.DESK.>")
    assert covers("mmipc.*.gw1.>", "mmipc.DESK.gw1.>")
    assert covers(">", "mmipc.DESK.>")
    assert not covers("mmipc.DESK.*", "mmipc.DESK.>")  # one token only: md.ctp would not be taken
    assert not covers("mmipc.DESK.gw1.>", "mmipc.DESK.>")
    assert not covers("mmipc.OTHER.>", "mmipc.DESK.>")
    assert not covers("mmipc.DESK.gw1.md", "mmipc.DESK.gw1.>")


def _failed_once(name: str, pid: int) -> bool:
    record = state(name)
    return bool(record.get("pid") == pid and record.get("failures", 0) > 0)


def test_a_restarted_out_bridge_that_has_acknowledged_nothing_reports_no_lag_s(
    procs: Procs, tmp_path: Path
) -> None:
    """Its durable reader committed its starting position (no frame: timestamp 0) when it first
    stopped. Started again, still with no server, it took that position for an acknowledged frame:
    `acked_seq` -1 and `lag_s` the newest frame's timestamp minus 0, 56 years."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 5, 1)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        child = bridge_child(procs, "out", f"nats://127.0.0.1:{free_port()}", source, "md", "--name", name)
        wait_for(functools.partial(_failed_once, name, child.pid), what="a record of a failed connection")
        journal = state(name)["journals"]["md"]
        assert (journal["acked_seq"], journal["lag_s"], journal["lag_frames"]) == (None, None, 5), journal
        stop(child)


def _publish_again(url: str, stream: str, seq: int) -> None:
    """Another client publishes stored message `seq` again, as it is but for its id and fence."""

    async def replay(client: Any) -> None:
        js = client.jetstream()
        old = await js.get_msg(stream, seq)
        assert old.subject is not None and old.data is not None
        headers = {k: v for k, v in (old.headers or {}).items() if k.startswith("Mmipc-")}
        await js.publish(old.subject, old.data, headers=headers)

    with_nats(url, replay)


def test_a_replayed_old_frame_on_the_subject_does_not_make_the_out_bridge_spin(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
) -> None:
    """Another client publishes an old frame of the subject again (its mmipc headers, a fresh id).
    The out-bridge's next publish is refused (wrong last sequence), it asks the stream, resumes
    after that old frame and sends the next ones again: duplicate ids, refused, ask again... It did
    so in a tight loop, thousands of round trips a second. Refusals in a row now back off."""
    source = str(tmp_path / "src")
    writer = mmipc.Writer.create(source, "md", service=None)
    for i in range(5):
        writer.write(b"frame %d" % i)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    wait_for(lambda: state(name).get("acked_stream_seq") == 5, what="shipping")
    _publish_again(nats_server.url, "DESK", 2)
    writer.write(b"after the replay")
    writer.close()
    wait_for(lambda: state(name)["journals"]["md"]["resyncs"] > 2, what="the refusals")
    first = state(name)
    wait_for(functools.partial(_updated_after, name, first["updated_ns"] + 3_000_000_000), what="3 s")
    resyncs = state(name)["journals"]["md"]["resyncs"] - first["journals"]["md"]["resyncs"]
    assert resyncs < 40, f"{resyncs} resyncs in 3 s"
    stop(out)


def _updated_after(name: str, nano: int) -> bool:
    return int(state(name).get("updated_ns", 0)) > nano


def test_a_tls_url_to_a_server_without_tls_is_refused_not_used_in_plaintext(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """nats-py upgrades to TLS only when the server requires it, whatever the URL says: given
    tls://HOST:PORT of a server without TLS, the bridge connected and shipped every frame in
    plaintext (and `mmipc status` said "connected"). It now stops in one line, sending nothing."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 5, 1)
    url = nats_server.url.replace("nats://", "tls://")
    for kind in ("out", "in"):
        where = [source, "md"] if kind == "out" else ["--to", str(tmp_path / "mirror")]
        done = bridge_once(kind, url, *where, "--name", f"b{kind}-{uuid.uuid4().hex[:8]}")
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "asks for TLS" in line and "not encrypted" in line, line
    assert not stream_messages_or_none(nats_server.url, "DESK")


def stream_messages_or_none(url: str, stream: str) -> list[tuple[str, dict[str, str], bytes, int]]:
    """The stream's messages, or none if it does not exist."""

    async def exists(client: Any) -> bool:
        from nats.js.errors import NotFoundError

        try:
            await client.jetstream().stream_info(stream)
            return True
        except NotFoundError:
            return False

    return stream_messages(url, stream) if with_nats(url, exists) else []


def test_a_listener_that_is_not_nats_gets_a_clear_retry_reason(procs: Procs, tmp_path: Path) -> None:
    """A TCP port that accepts and says nothing (not a NATS server): the state file's error was
    "TimeoutError: TimeoutError". It says now what did not come."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 1, 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nothing ever answers
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        name = f"bo-{uuid.uuid4().hex[:8]}"
        child = bridge_child(procs, "out", url, source, "md", "--name", name)
        wait_for(lambda: state(name).get("state") == "retrying", what="a failed connection")
        error = state(name)["error"]
        assert "no NATS greeting (INFO) within 2 s" in error, error
        stop(child)


def _fill(path: Path) -> None:
    """Write zeros to `path` until its file system is full."""
    with open(path, "wb", buffering=0) as filler:
        try:
            while filler.write(bytes(4096)):
                pass
        except OSError:
            pass


def _record(home: Path, name: str) -> dict[str, Any]:
    try:
        record: dict[str, Any] = json.loads((home / "bridges" / f"{name}.json").read_text())
        return record
    except (OSError, ValueError):
        return {}


def _committed_seq(home: str, name: str) -> int | None:
    cursor = CursorFile(cursor_dir_for(None, home), name)
    cursor.load()
    position = next(iter(cursor.positions.values()), None)
    return None if position is None else position.seq


def test_a_full_disk_under_the_home_pauses_the_state_file_and_commits_only_while_it_lasts(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
    small_tmpfs: Path,
) -> None:
    """The state file and the durable cursor live in the home. One failed write there (a full
    disk) ended the bridge's housekeeping for good, silently: the state file froze at its last
    record ("connected", the lag of then), the acknowledged positions were never committed again
    (retention kept every page), and at SIGTERM the bridge exited 1 saying "No space left on
    device". A failure is now logged and tried again: once there is room, both move again."""
    home = small_tmpfs / "home"
    home.mkdir(mode=0o700)
    service = ServiceProcess(str(home))
    service.start()
    try:
        source = str(tmp_path / "src")
        writer = mmipc.Writer.create(source, "md", service=None)
        writer.write(b"before")
        name = f"bo-{uuid.uuid4().hex[:8]}"
        out = bridge_out(procs, nats_server, source, ["md"], "--name", name, "--home", str(home))
        wait_for(lambda: _record(home, name).get("acked_stream_seq") == 1, what="the first frame")
        _fill(small_tmpfs / "filler")
        wait_for(lambda: "cannot update the state file" in out.stderr(), what="the failure logged")
        (small_tmpfs / "filler").unlink()
        writer.write(b"after")
        writer.close()
        wait_for(lambda: _record(home, name).get("acked_stream_seq") == 2, what="a record again")
        wait_for(lambda: _committed_seq(str(home), name) == 1, what="the second frame committed")
        stop(out)
        assert "updated again" in out.stderr(), out.stderr()
    finally:
        service.stop()


def _delays(child: Child) -> list[float]:
    """The backoff of each retry the bridge logged ("...; retrying in 0.1 s")."""
    return [
        float(line.rsplit("retrying in ", 1)[1].split()[0])
        for line in child.errors
        if line and "retrying in" in line
    ]


def test_a_bridge_that_made_progress_retries_soon_after_its_next_failure(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
) -> None:
    """The backoff (0.1 s doubling to 5 s) was reset only when the bridge stopped, never by
    progress: after a few outages in its life every later one, however long it had shipped
    between, waited 2.5 to 5 s before its first retry. A session that moved frames resets it."""
    source = str(tmp_path / "src")
    writer = mmipc.Writer.create(source, "md", service=None)
    writer.write(b"one")
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    wait_for(lambda: state(name).get("acked_stream_seq") == 1, what="the first frame")
    nats_server.stop()
    wait_for(lambda: len(_delays(out)) >= 7, what="seven failed connections")  # the backoff at 5 s
    assert max(_delays(out)) >= 2.5, _delays(out)
    nats_server.start()
    writer.write(b"two")
    writer.close()
    wait_for(lambda: state(name).get("acked_stream_seq") == 2, timeout=120, what="shipping again")
    seen = len(_delays(out))
    nats_server.stop()
    wait_for(lambda: len(_delays(out)) > seen, what="the next failure")
    assert _delays(out)[seen] <= 0.1, _delays(out)[seen:]
    nats_server.start()
    stop(out)


def _publish(url: str, subject: str, headers: dict[str, str]) -> None:
    async def publish(client: Any) -> None:
        await client.jetstream().publish(subject, b"not a frame", headers=headers)

    with_nats(url, publish)


def _in_bridge_once(server: NatsServer, to: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return bridge_once("in", server.url, "--to", str(to), "--name", f"bi-{uuid.uuid4().hex[:8]}", *extra)


def test_a_message_whose_subject_is_no_journal_stops_the_in_bridge_naming_it(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
) -> None:
    """Another client publishes, with a bridge's headers, on mmipc.DESK.a/b: the in-bridge exited
    2 (a usage error) with "invalid journal name 'a/b'", naming neither the stream nor the
    subject. And the in-bridge of a stream two gateways share (subjects mmipc.DESK.gw1.md) said
    only "names journal md". Both now exit 1 naming the subject and what to do."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 1, 1)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    prefix = ("--subject-prefix", "mmipc.DESK.gw1")
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name, *prefix)
    wait_for(lambda: state(name).get("acked_stream_seq") == 1, what="shipping")
    stop(out)
    done = _in_bridge_once(nats_server, tmp_path / "mirror")
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "subject mmipc.DESK.gw1.md names journal md" in line and "--subject-prefix" in line, line
    stored = stream_messages(nats_server.url, "DESK")[0][1]
    headers = {k: v for k, v in stored.items() if k.startswith("Mmipc-")} | {"Mmipc-Journal": "a/b"}
    _publish(nats_server.url, "mmipc.DESK.gw1.a/b", headers)
    done = _in_bridge_once(nats_server, tmp_path / "mirror", *prefix)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "subject mmipc.DESK.gw1.a/b is not for a journal" in line, line


def test_a_stream_that_never_acknowledges_stops_the_out_bridge_saying_so(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A stream made with no_ack stores every publish and answers none: the out-bridge retried for
    ever, "TimeoutError: nats: timeout", while the frames piled up in the stream."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 3, 1)
    _add_stream(nats_server.url, "DESK", ["mmipc.DESK.>"], no_ack=True)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    done = bridge_once("out", nats_server.url, source, "md", "--name", name, "--ack-timeout", "2")
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "stream DESK does not acknowledge what it stores (no_ack)" in line, line


def _delete_message(url: str, stream: str, seq: int) -> None:
    async def delete(client: Any) -> None:
        await client.jetstream().delete_msg(stream, seq)

    with_nats(url, delete)


def test_frames_the_stream_lost_are_reported_by_the_in_bridge(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
) -> None:
    """A message removed from the stream before the in-bridge read it (by hand here; a
    max_msgs_per_subject or max_bytes limit does the same) left a hole in the mirror that nothing
    showed: no warning, no count. The source's sequence numbers tell: it now warns and counts them."""
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    frames = write_frames(source, "md", 10, 3)
    name = f"bo-{uuid.uuid4().hex[:8]}"
    out = bridge_out(procs, nats_server, source, ["md"], "--name", name)
    wait_for(lambda: state(name).get("acked_stream_seq") == 10, what="shipping")
    _delete_message(nats_server.url, "DESK", 5)  # frame seq 4
    into = bridge_in(procs, nats_server, to, "--name", f"bi-{name}")
    wait_for(functools.partial(mirrored, to, "md", 9), what="the mirror")
    assert journal_frames(to, "md") == frames[:4] + frames[5:]
    wait_for(
        lambda: state(f"bi-{name}").get("journals", {}).get("md", {}).get("missing") == 1, what="a count"
    )
    stop(into)
    assert "frames 4 to 4 of" in into.stderr(), into.stderr()
    stop(out)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--nats", "nats://a b:4222", "is not a NATS server URL"),
        ("--nats", "nats://127.0.0.1:0", "is not a NATS server URL"),
        ("--stream", "S" * 256, "longer than JetStream's 255"),
    ],
)
def test_a_nats_option_no_retry_can_fix_is_a_usage_error(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    """A host with a space (retried as a DNS failure), port 0 (refused) and a stream name over
    JetStream's 255 characters (refused by the server, err_code 10052) were retried for ever."""
    source = str(tmp_path / "src")
    write_frames(source, "md", 1, 1)
    args = {"--nats": "nats://127.0.0.1:4222", "--stream": "DESK", option: value}
    try:
        done = bridge_once("out", args["--nats"], source, "md", stream=args["--stream"])
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the bridge retries {option} {value[:30]!r} for ever") from None
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert says in line, line
