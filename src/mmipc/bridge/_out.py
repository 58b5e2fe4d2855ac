"""The out-bridge: journals -> one JetStream stream, one subject per journal (rules in __init__).

Why it reaches into the reader: it reads each journal's cursor on its own (a merge across journals
would let one slow subject hold up the others), and it commits the positions the stream
acknowledged rather than those it has read. This module is the only one that does either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .._errors import CursorError
from ..journal._cursor import Cursor
from ..journal._durable import Position, check_position, fallback_page
from ..journal._layout import PAGE_HEADER_SIZE
from ..journal._reader import Reader
from ..service._lag import journal_tail
from ..service._servicehome import DEFAULT_HOME, ServiceHome
from ._conn import Backoff, Idle, Status, nap, serve
from ._options import OutOptions
from ._state import StateFile
from ._wire import (
    BATCH_COMMIT,
    BATCH_ID,
    BATCH_SEQ,
    DUPLICATE_IN_BATCH,
    EXPECTED_LAST_SUBJECT_SEQ,
    WRONG_LAST_SEQUENCE,
    BridgeError,
    Shipped,
    covers,
    headers_for,
    parse_headers,
    redact,
    subject_for,
    wire_size,
)

log = logging.getLogger("mmipc.bridge")
HOUSEKEEPING_S = 0.5
PAUSED_AFTER_S = 1.0


class Resync(Exception):
    """The stream holds something else than this pump expected: ask it again."""


class Costs:
    """Round-trip times of a single fenced publish and of an atomic batch, as moving averages.

    A batch costs the server more than a publish: on a file-backed stream it syncs the batch to
    disk before acknowledging it (about 12 ms on the test VM's disk, against 0.15 ms for a publish),
    so with few frames pending, publishing them one by one is sooner; with many, one batch is.
    Both are fenced, so the choice changes only latency and throughput, never what the stream holds.
    """

    def __init__(self) -> None:
        self.one, self.batch = 200e-6, 1e-3  # seconds: optimistic until measured

    def batch_pays(self, count: int) -> bool:
        return count * self.one > self.batch

    def took(self, batch: bool, seconds: float) -> None:
        if batch:
            self.batch += (seconds - self.batch) / 8
        else:
            self.one += (seconds - self.one) / 8


class Pump:
    """One journal: its cursor, its subject, and what the stream has acknowledged of it."""

    def __init__(
        self, options: OutOptions, cursor: Cursor, committed: Position | None, status: Status
    ) -> None:
        self.options = options
        self.status = status
        self.cursor = cursor
        self.jid = cursor.jid
        self.subject = subject_for(options.subject_prefix, self.jid.name)
        self.expected = 0  # the stream sequence of the subject's last message
        self.committed = committed
        # a cursor committed before any frame was acknowledged holds its start, timestamp 0: no frame
        self.acked = committed if committed is not None and committed.nano > 0 else None
        self.pending: list[tuple[Shipped, bytes]] = []
        self.in_flight_since = 0.0
        self.frames = self.batches = self.resyncs = 0
        self.refusals = 0  # in a row, without an acknowledgement between them
        self.backoff = Backoff()
        self.costs = Costs()

    # -- resuming from the stream ----------------------------------------------------------------

    async def resync(self, js: JetStreamContext) -> None:
        """Learn the subject's last message and put the cursor right after the frame it carries."""
        self.pending.clear()
        self.resyncs += 1
        try:
            last = await js.get_last_msg(self.options.stream, self.subject)
        except NotFoundError:
            self.expected = 0
            self.place(self.committed)
            return
        shipped = parse_headers(last.headers, self.subject, last.seq)
        if shipped.host != self.options.host or shipped.journal != self.jid.name:
            raise BridgeError(
                f"subject {self.subject} of stream {self.options.stream} holds frames of journal "
                f"{shipped.journal} from host {shipped.host}, not from this bridge ({self.options.host}): "
                "give journals of different hosts different subject prefixes (--subject-prefix)"
            )
        self.expected = int(last.seq or 0)
        self.acked = Position(shipped.page_no, shipped.end, shipped.nano, shipped.seq)
        self.place(self.acked)

    def place(self, position: Position | None) -> None:
        if position is None:
            self.cursor.position(self.options.start)
            return
        try:
            fits = check_position(self.jid, position)
        except CursorError as exc:
            raise BridgeError(
                f"journal {self.jid} does not match what stream {self.options.stream} holds of it "
                f"(its last frame ends at page {position.page_no}, offset {position.offset}): was the "
                "journal deleted and written anew? Purge the subject or use another stream"
            ) from exc
        if fits is not None:
            self.cursor.resume(position.page_no, position.offset, position.nano)
            return
        page = fallback_page(self.jid, position)
        if page is None:
            self.cursor.position("begin")
        else:
            self.cursor.resume(page, PAGE_HEADER_SIZE, position.nano)

    # -- shipping ---------------------------------------------------------------------------------

    def fill(self) -> None:
        """Read up to max_batch frames: the journal is the buffer, nothing more is taken from it."""
        cursor, pending, limit = self.cursor, self.pending, self.options.max_batch
        host, journal = self.options.host, self.jid.name
        while len(pending) < limit:
            frame = cursor.read()
            if frame is None:
                return
            shipped = Shipped(
                host, journal, frame.seq, cursor.page_no, cursor.pos, frame.nano, frame.msg_type, frame.source
            )
            pending.append((shipped, bytes(frame.data)))

    async def run(self, client: Client, js: JetStreamContext, stop: asyncio.Event) -> None:
        await self.resync(js)
        idle = Idle()
        while not stop.is_set():
            if client.is_closed:
                raise ConnectionError("the connection closed")
            self.fill()
            if not self.pending:
                await idle.wait()
                continue
            idle.reset()
            try:
                await self.send(client)
            except Resync as exc:
                await self.refused(exc, stop)
                await self.resync(js)

    async def refused(self, exc: Resync, stop: asyncio.Event) -> None:
        """After a refusal, ask the stream at once the first time; if it refuses again before it
        acknowledges anything (the subject ends with an old frame someone published again, so every
        frame after it is a duplicate id), wait longer each time instead of asking in a loop."""
        self.refusals += 1
        if self.refusals == 1:
            log.info("journal %s: %s; asking the stream where it stands", self.jid, exc)
            return
        delay = self.backoff.next()
        log.warning(
            "journal %s: %s, %d times in a row; asking again in %.1f s", self.jid, exc, self.refusals, delay
        )
        await nap(delay, stop)

    async def send(self, client: Client) -> None:
        """Ship the pending frames: one fenced publish, or one fenced atomic batch of them all,
        whichever the round trips measured so far say is sooner (see `Costs`)."""
        count = len(self.pending)
        batch = count > 1 and self.costs.batch_pays(count)
        self.in_flight_since = start = time.monotonic()
        try:
            reply = await (self.publish_batch(client) if batch else self.publish_one(client))
        finally:
            self.in_flight_since = 0.0
        self.costs.took(batch, time.monotonic() - start)
        self.acknowledged(json.loads(reply.data), count if batch else 1)

    async def publish_one(self, client: Client) -> Msg:
        shipped, payload = self.pending[0]
        headers = headers_for(shipped)
        headers[EXPECTED_LAST_SUBJECT_SEQ] = str(self.expected)
        fits(client, shipped, headers, payload)
        return await client.request(self.subject, payload, timeout=self.options.ack_timeout, headers=headers)

    async def publish_batch(self, client: Client) -> Msg:
        batch_id, subject = uuid.uuid4().hex, self.subject
        messages = []
        for i, (shipped, payload) in enumerate(self.pending, 1):
            headers = headers_for(shipped)
            headers[BATCH_ID], headers[BATCH_SEQ] = batch_id, str(i)
            if i == 1:
                headers[EXPECTED_LAST_SUBJECT_SEQ] = str(self.expected)
            if i == len(self.pending):
                headers[BATCH_COMMIT] = "1"
            fits(client, shipped, headers, payload)  # all of them before any is sent
            messages.append((headers, payload))
        for headers, payload in messages[:-1]:
            await client.publish(subject, payload, headers=headers)
        headers, payload = messages[-1]
        return await client.request(subject, payload, timeout=self.options.ack_timeout, headers=headers)

    def acknowledged(self, ack: dict[str, Any], count: int) -> None:
        """Take the stream's answer for the first `count` pending frames."""
        error = ack.get("error")
        if error:
            text = f"the stream refused frames: {error.get('description', error)}"
            if error.get("err_code") in (WRONG_LAST_SEQUENCE, DUPLICATE_IN_BATCH):
                raise Resync(text)
            raise ConnectionError(text)
        if ack.get("duplicate"):  # stored before, by someone else: the subject moved on
            raise Resync(f"the stream already holds frame {self.pending[0][0].msg_id}")
        shipped = self.pending[count - 1][0]
        self.expected = int(ack["seq"])
        self.acked = Position(shipped.page_no, shipped.end, shipped.nano, shipped.seq)
        self.frames += count
        self.batches += count > 1
        self.status.progress += count
        if self.refusals:
            self.refusals = 0
            self.backoff.reset()
        del self.pending[:count]

    # -- reporting --------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        acked = self.acked
        tail = journal_tail(self.jid.directory, self.jid.name)
        lag_frames: int | None = None
        lag_s: float | None = 0.0
        if tail is not None:
            if tail.next_seq >= 0:
                lag_frames = max(0, tail.next_seq - (acked.seq + 1 if acked and acked.seq >= 0 else 0))
            behind = acked is None or (tail.page_no, tail.end) != (acked.page_no, acked.offset)
            if behind and lag_frames != 0:
                # None: frames wait and none is acknowledged yet, so there is no "last acknowledged
                # timestamp" to measure from (now minus an empty page's 0 read as 56 years)
                lag_s = None if acked is None else max(0, tail.last_nano - acked.nano) / 1e9
        return {
            "journal": str(self.jid),
            "subject": self.subject,
            "acked_seq": acked.seq if acked else None,
            "acked_stream_seq": self.expected,
            "lag_frames": lag_frames,
            "lag_s": None if lag_s is None else round(lag_s, 6),
            "frames_sent": self.frames,
            "batches": self.batches,
            "costs_us": {"publish": round(self.costs.one * 1e6), "batch": round(self.costs.batch * 1e6)},
            "resyncs": self.resyncs,
        }


def fits(client: Client, shipped: Shipped, headers: dict[str, str], payload: bytes) -> None:
    """Refuse a message the server would refuse: it counts the headers in its max_payload (nats-py
    does not), and closes the connection on one too large, so a retry would send it again for ever."""
    size, limit = wire_size(headers, payload), client.max_payload
    if size > limit:
        raise BridgeError(
            f"frame {shipped.msg_id} ({len(payload)} bytes, {size} with its headers) is larger than the "
            f"NATS server's max_payload ({limit} bytes), so no retry can ship it: raise max_payload in "
            "the server's configuration (NATS allows up to 64 MB)"
        )


class OutBridge:
    def __init__(self, options: OutOptions) -> None:
        self.options = options.checked()
        self.status = Status()
        self.state = StateFile(options.home, options.name)
        service: ServiceHome = DEFAULT_HOME if options.home is None else options.home
        self.state.lock()
        try:
            self.reader = Reader.create(options.name, service=service, durable=True)
        except BaseException:
            self.state.unlock()
            raise
        self.pumps: list[Pump] = []
        durable = self.reader._durable
        assert durable is not None
        self.cursor_file = durable.file
        for journal in options.journals:
            jid = self.reader.add_journal(options.directory, journal)  # a durable one resumes
            cursor = self.reader._cursors[-1]
            assert cursor.jid == jid
            self.pumps.append(Pump(options, cursor, self.cursor_file.positions.get(jid), self.status))

    async def session(self, client: Client, stop: asyncio.Event) -> None:
        js = client.jetstream(timeout=self.options.ack_timeout)
        await self.ensure_stream(js)
        await asyncio.gather(*(pump.run(client, js, stop) for pump in self.pumps))

    async def ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream if it is missing; make sure it takes our subjects and atomic batches."""
        options = self.options
        wanted = f"{options.subject_prefix}.>"
        try:
            info = await js.stream_info(options.stream)
        except NotFoundError:
            config = StreamConfig(
                name=options.stream,
                subjects=[wanted],
                storage=StorageType.FILE,
                num_replicas=options.replicas,
                allow_atomic=True,
                allow_direct=True,
            )
            await js.add_stream(config)
            return
        config = info.config
        if not any(covers(taken, wanted) for taken in config.subjects or []):
            raise BridgeError(
                f"stream {options.stream} does not take subjects {wanted} (it takes {config.subjects}): "
                "add them to it, or pass the --subject-prefix it takes"
            )
        if config.no_ack or config.sealed:  # it stores without a word, or refuses every publish
            what = "does not acknowledge what it stores (no_ack)" if config.no_ack else "is sealed"
            raise BridgeError(
                f"stream {options.stream} {what}: the bridge ships a frame once the stream acknowledges "
                "it; give it a stream of its own"
            )
        if not config.allow_atomic:
            config.allow_atomic = True
            await js.update_stream(config)

    async def housekeeping(self) -> None:
        await self.commit()
        await asyncio.to_thread(self.state.write, self.record())  # fsync off the loop

    async def commit(self) -> None:
        """Commit the acknowledged positions: retention may then remove what is behind them."""
        changed = {p.jid: p.acked for p in self.pumps if p.acked is not None and p.acked != p.committed}
        if not changed:
            return
        await asyncio.to_thread(self.cursor_file.commit, changed)
        for pump in self.pumps:
            pump.committed = changed.get(pump.jid, pump.committed)

    def record(self) -> dict[str, Any]:
        """The state file's record, taken between two steps of the loop (so it is consistent)."""
        stalled = any(
            p.in_flight_since and time.monotonic() - p.in_flight_since > PAUSED_AFTER_S for p in self.pumps
        )
        status = self.status.fields()
        if stalled and status["state"] == "connected":
            status["state"] = "paused"
            status["error"] = f"the stream has not acknowledged a batch for over {PAUSED_AFTER_S} s"
        journals = {p.jid.name: p.report() for p in self.pumps}
        return {
            "kind": "out",
            "name": self.options.name,
            "host": self.options.host,
            "nats": redact(self.options.nats_url),
            "stream": self.options.stream,
            **status,
            "acked_stream_seq": max((p.expected for p in self.pumps), default=0),
            "journals": journals,
        }

    async def main(self) -> None:
        options = self.options
        banner = (
            f"mmipc bridge out {options.name}: {len(self.pumps)} journal(s) of "
            f"{options.directory} -> {redact(options.nats_url)} stream {options.stream}"
        )
        await serve(
            options.nats_url,
            options.name,
            self.status,
            self.session,
            self.housekeeping,
            HOUSEKEEPING_S,
            banner,
        )

    def close(self) -> None:
        """Leave the durable cursor at the acknowledged positions (close() would commit those read)."""
        for pump in self.pumps:
            pump.cursor.detach()
        self.reader.close()
        self.state.unlock()


def run(options: OutOptions) -> None:
    bridge = OutBridge(options)
    try:
        asyncio.run(bridge.main())
    finally:
        bridge.close()
