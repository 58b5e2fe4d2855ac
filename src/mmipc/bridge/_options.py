"""The settings of the two bridges (standard library only: the CLI builds them without nats-py).

`checked()` refuses a value of the wrong type (`max_batch="5"`, `ack_timeout=True`) as it refuses
one out of range: with a BridgeError naming the setting, never a TypeError from a comparison.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket

from .._errors import UsageError
from ..journal._cursor import Start
from ..journal._files import check_name
from ..journal._layout import check_page_size
from ._wire import MAX_BATCH, BridgeError, check_token, check_url

MAX_STREAM_NAME = 255  # JetStream refuses a longer one (err_code 10052), which a retry cannot fix


@dataclasses.dataclass
class Common:
    nats_url: str
    stream: str
    name: str = ""
    subject_prefix: str = ""
    home: str | None = None
    ack_timeout: float = 5.0

    def check(self, kind: str) -> None:
        check_url(self.nats_url)
        check_token(self.stream, "stream name")
        if "." in self.stream:
            raise BridgeError(f"stream name {self.stream!r} cannot hold a '.'")
        if len(self.stream) > MAX_STREAM_NAME:
            raise BridgeError(
                f"stream name {self.stream[:20]!r}... is longer than JetStream's {MAX_STREAM_NAME}"
            )
        self.subject_prefix = check_token(self.subject_prefix or f"mmipc.{self.stream}", "subject prefix")
        self.name = check_name(self.name or f"bridge-{kind}.{self.stream}", "bridge")
        timeout = self.ack_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise BridgeError(f"ack timeout must be a number of seconds > 0, not {timeout!r}")


@dataclasses.dataclass
class OutOptions(Common):
    """`mmipc bridge out DIRECTORY JOURNAL... --nats URL --stream S`."""

    directory: str = "."
    journals: list[str] = dataclasses.field(default_factory=list)
    host: str = ""
    max_batch: int = 256
    start: Start = "begin"
    replicas: int = 1

    def checked(self) -> OutOptions:
        self.check("out")
        self.directory = os.path.abspath(self.directory)
        if not self.journals:
            raise BridgeError("the out-bridge needs at least one journal name")
        for journal in self.journals:
            check_name(journal)
        self.host = check_token(self.host or socket.gethostname().split(".")[0], "host id")
        if not _whole(self.max_batch, MAX_BATCH):
            raise BridgeError(
                f"--batch must be 1 to {MAX_BATCH} frames (JetStream's limit), not {self.max_batch!r}"
            )
        if not _whole(self.replicas):
            raise BridgeError(f"replicas must be a whole number >= 1, not {self.replicas!r}")
        return self


@dataclasses.dataclass
class InOptions(Common):
    """`mmipc bridge in --nats URL --stream S --to DIRECTORY`."""

    to: str = "."
    fetch_batch: int = 512
    page_size: int | None = None  # of the mirror's new pages: None keeps a journal's, or the default
    skip_foreign: bool = False  # skip (and count) messages that are no journal's frames, not stop

    def checked(self) -> InOptions:
        self.check("in")
        self.to = os.path.abspath(self.to)
        if not _whole(self.fetch_batch):
            raise BridgeError(f"fetch batch must be a whole number >= 1, not {self.fetch_batch!r}")
        if self.page_size is not None:
            try:
                check_page_size(self.page_size)
            except UsageError as exc:
                raise BridgeError(f"--page-size: {exc}") from None
        return self


def _whole(value: object, high: float = math.inf) -> bool:
    """Whether `value` is an int (not a bool) from 1 to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high
