"""The in-bridge: one JetStream stream -> journals of the same names in a directory (rules in __init__).

Its resume record (in its state file) holds `stream_seq`, the last stream sequence fully applied,
and per journal the mirror's last seq, timestamp and source id at that moment. The record is
written after the frames it counts, so the mirror is never behind it; frames written after it (a
SIGKILL came before the next record) are found in the mirror on restart and matched against the
next messages of their subject instead of being written twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamState
from nats.js.errors import NotFoundError

from .._errors import FrameTooLargeError, UsageError
from ..journal._files import check_name, list_pages
from ..journal._layout import max_payload
from ..journal._reader import Reader
from ..journal._writer import Writer
from ..service._lag import journal_tail
from ..service._servicehome import DEFAULT_HOME, ServiceHome
from ._conn import Status, serve
from ._options import InOptions
from ._state import StateFile
from ._wire import BridgeError, ForeignMessage, Shipped, journal_of, parse_headers, redact, where

log = logging.getLogger("mmipc.bridge")
RECORD_S = 0.5
FOREIGN_LOGGED = 5  # foreign messages logged one line each (--skip-foreign); the rest are summed up
FOREIGN_SUM_S = 60.0  # at most this often, and when the bridge stops


def _checked_resume(resume: object, path: str) -> dict[str, Any]:
    """The resume record if every field has its type, else a `BridgeError`: a damaged record is
    never guessed at (the mirror could get frames twice or lose some)."""
    problem = _resume_problem(resume)
    if problem:
        raise BridgeError(
            f"the resume record in {path} is damaged ({problem}): restore it, or remove the file to "
            "mirror the stream again from its start"
        )
    assert isinstance(resume, dict)
    return resume


_RESUME_FIELDS: tuple[tuple[str, type], ...] = (
    ("stream_seq", int),
    ("created", str),
    ("to", str),
    ("journals", dict),
)
_MARK_FIELDS: tuple[tuple[str, type], ...] = (
    ("mirror_seq", int),
    ("nano", int),
    ("host", str),
    ("last", list),
)


def _resume_problem(resume: object) -> str:
    if not isinstance(resume, dict):
        return "not a JSON object"
    for key, kind in _RESUME_FIELDS:
        if key in resume and not _is(resume[key], kind):
            return f"{key} is not a {kind.__name__}"
    for name, mark in resume.get("journals", {}).items():
        if not isinstance(mark, dict):
            return f"journal {name!r} is not a JSON object"
        for key, kind in _MARK_FIELDS:
            if key in mark and not _is(mark[key], kind):
                return f"journal {name!r}: {key} is not a {kind.__name__}"
        last = mark.get("last", [0, 0, 0])
        if len(last) != 3 or not all(_is(x, int) for x in last):
            return f"journal {name!r}: last is not three integers"
    return ""


def _is(value: object, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _other_journal(subject: str, named: str, prefix: str) -> BridgeError:
    """The error for a message whose subject is not that of the journal its headers name."""
    if subject.endswith("." + named):  # PREFIX.gw1.md holds journal md: another bridge's prefix
        why = f"its prefix is longer than {prefix}; mirror each prefix with its own --subject-prefix and --to"
        return BridgeError(f"message on subject {subject} names journal {named}: {why}")
    why = "keep other publishers off the bridge's subjects"
    return ForeignMessage(f"message on subject {subject} names journal {named}: {why}")


class Mirrored:
    """One mirror journal: its writer, how far it is, and the frames to match before writing."""

    def __init__(self, to: str, name: str, mark: dict[str, Any], page_size: int | None) -> None:
        self.name = name
        self.page_size = page_size
        self.seq = int(mark.get("mirror_seq", -1))  # the mirror's last seq at the resume record
        self.nano = int(mark.get("nano", 0))
        self.host = str(mark.get("host", ""))
        self.last: tuple[int, int, int] = tuple(mark.get("last", (-2, -1, -1)))
        tail = journal_tail(to, name) if list_pages(to, name) else None
        mirror_last = tail.next_seq - 1 if tail is not None else -1
        if mirror_last < self.seq:
            raise BridgeError(
                f"mirror journal {to}/{name} ends at seq {mirror_last}, before the {self.seq} this bridge "
                "wrote: it was cut or replaced; move it away and remove the bridge's state file to start over"
            )
        self.to_match = mirror_last - self.seq
        self.matcher: Reader | None = None
        if self.to_match:
            self.matcher = Reader.create("bridge-in-match", service=None)
            self.matcher.add_journal(to, name, start=self.nano if self.seq >= 0 else "begin")
        self.writer: Writer | None = None
        self.frames = self.duplicates = self.missing = 0

    def apply(self, shipped: Shipped, payload: bytes, to: str, service: ServiceHome) -> None:
        if self.to_match:
            self._match(shipped, payload)
        elif shipped.host == self.host and shipped.order <= self.last:
            self.duplicates += 1
            return
        else:
            if self.writer is None:
                self.writer = Writer.create(to, self.name, service=service, page_size=self.page_size)
            self.writer.write_at(payload, shipped.nano, shipped.msg_type, shipped.source)
            self.seq += 1
            self.frames += 1
            self._notice_gap(shipped)
        self.nano, self.host, self.last = shipped.nano, shipped.host, shipped.order

    def _notice_gap(self, shipped: Shipped) -> None:
        """Say so when frames of the source journal never reached the mirror: the stream lost them
        (its limits, a purge, a message deleted) before this bridge read them."""
        before = self.last[0]
        if shipped.host != self.host or shipped.seq < 0 or before < 0 or shipped.seq == before + 1:
            return
        self.missing += shipped.seq - before - 1
        log.warning(
            "mirror journal %s: frames %d to %d of %s's journal are not in the stream (removed by its "
            "limits or by hand before this bridge read them): the mirror goes on without them",
            self.name,
            before + 1,
            shipped.seq - 1,
            shipped.host,
        )

    def _match(self, shipped: Shipped, payload: bytes) -> None:
        """The mirror already holds this frame (written before a crash): check it is the same."""
        assert self.matcher is not None
        while True:
            frame = self.matcher.read()
            if frame is None:
                raise BridgeError(f"mirror journal {self.name}: a frame it holds vanished while matching")
            if frame.seq > self.seq:
                break
        same = (frame.nano, frame.msg_type, frame.source, bytes(frame.data)) == (
            shipped.nano,
            shipped.msg_type,
            shipped.source,
            payload,
        )
        if not same:
            raise BridgeError(
                f"mirror journal {self.name} frame seq {frame.seq} differs from the stream's message "
                f"{shipped.msg_id}: the mirror was written by something else; move it away"
            )
        self.seq = frame.seq
        self.to_match -= 1
        if not self.to_match:
            self.matcher.close()
            self.matcher = None

    def mark(self) -> dict[str, Any]:
        return {"mirror_seq": self.seq, "nano": self.nano, "host": self.host, "last": list(self.last)}

    def close(self) -> None:
        for closer in (self.matcher, self.writer):
            if closer is not None:
                closer.close()


class Foreign:
    """The messages `--skip-foreign` skipped: the first FOREIGN_LOGGED logged one line each, the
    rest counted and summed up in one line at most every FOREIGN_SUM_S, and once at the end (a
    flood from a misconfigured publisher logged a line per message)."""

    def __init__(self) -> None:
        self.count = 0
        self.said = 0  # the count at the last line about them
        self.said_at = 0.0
        self.last = ""

    def skipped(self, exc: ForeignMessage) -> None:
        self.count += 1
        self.last = str(exc)
        if self.count <= FOREIGN_LOGGED:
            more = (
                "; further ones are counted (`mmipc status`) and summed up"
                if self.count == FOREIGN_LOGGED
                else ""
            )
            log.warning("skipped (--skip-foreign): %s%s", exc, more)
            self.said, self.said_at = self.count, time.monotonic()

    def sum_up(self, final: bool = False) -> None:
        """Say how many were skipped since the last line, if any were and one is due (or `final`)."""
        if self.count == self.said or not final and time.monotonic() - self.said_at < FOREIGN_SUM_S:
            return
        log.warning(
            "skipped (--skip-foreign): %d foreign message(s) in all, %d since the last line; the last: %s",
            self.count,
            self.count - self.said,
            self.last,
        )
        self.said, self.said_at = self.count, time.monotonic()


class InBridge:
    def __init__(self, options: InOptions) -> None:
        self.options = options.checked()
        self.status = Status()
        self.state = StateFile(options.home, options.name).lock()
        self.service: ServiceHome = DEFAULT_HOME if options.home is None else options.home
        resume = _checked_resume(self.state.load().get("resume") or {}, self.state.path)
        if resume and resume.get("to") != options.to:
            self.state.unlock()
            raise BridgeError(
                f"bridge {options.name} mirrors into {resume.get('to')}, not {options.to}: give this one "
                "another --name"
            )
        self.stream_seq = int(resume.get("stream_seq", 0))
        self.created = str(resume.get("created", ""))  # the stream's creation time: its identity
        self.marks: dict[str, dict[str, Any]] = resume.get("journals", {})
        self.mirrors: dict[str, Mirrored] = {}
        self.foreign = Foreign()  # messages skipped by --skip-foreign
        self.pending = 0
        self.last_applied = time.monotonic()

    def mirror(self, name: str) -> Mirrored:
        found = self.mirrors.get(name)
        if found is None:
            mark = self.marks.get(name, {})
            found = self.mirrors[name] = Mirrored(self.options.to, name, mark, self.options.page_size)
        return found

    def apply(self, msg: Msg) -> None:
        meta = msg.metadata
        try:
            journal, shipped = self.parse(msg, meta.sequence.stream)
        except ForeignMessage as exc:
            if not self.options.skip_foreign:
                raise
            self.foreign.skipped(exc)
        else:
            self.write(journal, shipped, msg, meta.sequence.stream)
        self.stream_seq = meta.sequence.stream
        self.pending = meta.num_pending

    def parse(self, msg: Msg, stream_seq: int) -> tuple[str, Shipped]:
        """The journal and frame of `msg`; `ForeignMessage` if it is no frame of a journal here."""
        journal = self.journal_of(msg)
        shipped = parse_headers(msg.headers, msg.subject, stream_seq)
        if journal != shipped.journal:
            raise _other_journal(msg.subject, shipped.journal, self.options.subject_prefix)
        return journal, shipped

    def write(self, journal: str, shipped: Shipped, msg: Msg, stream_seq: int) -> None:
        """Mirror one frame; the mirror journal's refusal names the message (a `BridgeError`)."""
        mirror = self.mirror(journal)
        try:
            mirror.apply(shipped, msg.data, self.options.to, self.service)
        except FrameTooLargeError:
            page = mirror.writer.page_size if mirror.writer is not None else 0
            raise BridgeError(
                f"the message on {where(msg.subject, stream_seq)} is a frame of {len(msg.data)} bytes: "
                f"mirror journal {journal}'s {page}-byte pages take at most {max_payload(page)}; give "
                "`mmipc bridge in` a larger --page-size (up to 1G)"
            ) from None
        except UsageError as exc:
            message = where(msg.subject, stream_seq)
            raise BridgeError(f"cannot mirror the message on {message}: {exc}") from None

    def journal_of(self, msg: Msg) -> str:
        """The journal of `msg`'s subject; `ForeignMessage` naming the subject if it cannot be one."""
        journal = journal_of(self.options.subject_prefix, msg.subject) or ""
        try:
            return check_name(journal)
        except UsageError as exc:
            raise ForeignMessage(
                f"message on {where(msg.subject, msg.metadata.sequence.stream)} is not for a journal "
                f"({exc}): keep other publishers off the bridge's subjects"
            ) from None

    async def session(self, client: Client, stop: asyncio.Event) -> None:
        js = client.jetstream(timeout=self.options.ack_timeout)
        puller = Puller(client, self.options.stream, await self.consumer(js), self.options.fetch_batch)
        await puller.start()
        try:
            while not stop.is_set():
                msg = await puller.next()
                if msg is not None:
                    self.apply(msg)
                    self.last_applied = time.monotonic()
                    self.status.progress += 1
                else:  # nothing came for a while: caught up
                    self.pending = 0
        finally:
            await puller.stop()

    def check_stream(self, held: StreamState, created: str) -> None:
        """Notice a stream made anew (read it all: ids tell what the mirror has) or trimmed."""
        if self.created and created != self.created:
            log.warning(
                "stream %s was made anew (created %s, not %s): reading it from its start, dropping "
                "the frames the mirror holds (by id)",
                self.options.stream,
                created,
                self.created,
            )
            self.stream_seq = 0
        elif held.first_seq > self.stream_seq + 1 and held.messages:
            log.warning(
                "stream %s starts at %d: messages %d to %d were removed (its limits) before this "
                "bridge mirrored them",
                self.options.stream,
                held.first_seq,
                self.stream_seq + 1,
                held.first_seq - 1,
            )
        self.created = created

    async def consumer(self, js: JetStreamContext) -> str:
        """An ephemeral consumer of the prefix's subjects from the message after our last one."""
        options = self.options
        try:
            info = await js.stream_info(options.stream)
        except NotFoundError:
            raise ConnectionError(f"stream {options.stream} does not exist (yet)") from None
        self.check_stream(info.state, str(info.created))
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.stream_seq + 1,
            ack_policy=AckPolicy.NONE,
            filter_subject=f"{options.subject_prefix}.>",
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        )
        consumer = await js.add_consumer(options.stream, config)
        return str(consumer.name)

    def record(self) -> dict[str, Any]:
        """The state file's record, taken between two steps of the loop (so it is consistent)."""
        self.marks.update({name: m.mark() for name, m in self.mirrors.items()})
        lag_s = 0.0
        if self.pending:
            newest = max((m.nano for m in self.mirrors.values()), default=0)
            lag_s = max(0.0, time.time() - newest / 1e9) if newest else 0.0
        journals = {
            name: {
                "frames_written": m.frames,
                "duplicates": m.duplicates,
                "missing": m.missing,
                "mirror_seq": m.seq,
                "lag_frames": None,
                "lag_s": 0.0,
            }
            for name, m in self.mirrors.items()
        }
        return {
            "kind": "in",
            "name": self.options.name,
            "nats": redact(self.options.nats_url),
            "stream": self.options.stream,
            "to": self.options.to,
            **self.status.fields(),
            "acked_stream_seq": self.stream_seq,
            "lag_frames": self.pending,
            "lag_s": round(lag_s, 6),
            "foreign_skipped": self.foreign.count,
            "journals": journals,
            "resume": {
                "to": self.options.to,
                "stream_seq": self.stream_seq,
                "created": self.created,
                "journals": dict(self.marks),
            },
        }

    async def housekeeping(self) -> None:
        self.foreign.sum_up()
        await asyncio.to_thread(self.state.write, self.record())  # fsync off the loop

    async def main(self) -> None:
        options = self.options
        url = redact(options.nats_url)
        banner = f"mmipc bridge in {options.name}: {url} stream {options.stream} -> {options.to}"
        await serve(
            options.nats_url, options.name, self.status, self.session, self.housekeeping, RECORD_S, banner
        )

    def close(self) -> None:
        self.foreign.sum_up(final=True)
        for mirror in self.mirrors.values():
            mirror.close()
        self.state.unlock()


class Puller:
    """Pull requests kept outstanding on one inbox, so a message is handed over as soon as it arrives.

    (nats-py's `fetch(n)` waits for all n messages, or its timeout, before it returns.) One request
    of `batch` messages is outstanding at a time, expiring after `EXPIRES`; a new one follows its
    last message or its expiry (status 408). If neither a message nor the expiry comes in time the
    server is asked for a pong: a dead link raises, and the session ends.
    """

    EXPIRES = 2.0

    def __init__(self, client: Client, stream: str, consumer: str, batch: int) -> None:
        self.client, self.batch = client, batch
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = client.new_inbox()
        self.remaining = 0
        self.subscription: Subscription | None = None

    async def start(self) -> None:
        self.subscription = await self.client.subscribe(self.inbox)
        await self.request()

    async def request(self) -> None:
        body = json.dumps({"batch": self.batch, "expires": int(self.EXPIRES * 1e9)}).encode()
        await self.client.publish(self.subject, body, reply=self.inbox)
        self.remaining = self.batch

    async def next(self) -> Msg | None:
        """The next message; None after an expired request or a quiet wait (a new one is out)."""
        assert self.subscription is not None
        try:
            msg = await self.subscription.next_msg(timeout=self.EXPIRES + 1.0)
        except (nats.errors.TimeoutError, TimeoutError):
            await self.client.flush(timeout=2)  # raises if the server is gone
            await self.request()
            return None
        status = (msg.headers or {}).get("Status")
        if status is None:
            self.remaining -= 1
            if not self.remaining:
                await self.request()
            return msg
        if status in ("404", "408", "100"):
            if status != "100":
                await self.request()
            return None
        description = (msg.headers or {}).get("Description", "")
        raise ConnectionError(f"the stream's consumer answered {status} {description}")

    async def stop(self) -> None:
        if self.subscription is not None and not self.client.is_closed:
            await self.subscription.unsubscribe()


def run(options: InOptions) -> None:
    _make_directory(options.to)
    bridge = InBridge(options)
    try:
        asyncio.run(bridge.main())
    finally:
        bridge.close()


def _make_directory(to: str) -> None:
    """The mirror's directory, made if missing; a `BridgeError` saying why it cannot be one."""
    try:
        os.makedirs(to, exist_ok=True)
    except FileExistsError:
        raise BridgeError(f"--to {to} is a file, not a directory: give a directory for the mirror") from None
    except OSError as exc:
        raise BridgeError(f"cannot make the mirror directory --to {to}: {exc.strerror}") from None
