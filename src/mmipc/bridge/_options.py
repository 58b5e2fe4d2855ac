"""The settings of the two bridges (standard library only: the CLI builds them without nats-py)."""

from __future__ import annotations

import dataclasses
import os
import socket

from ..journal._cursor import Start
from ..journal._files import check_name
from ._wire import MAX_BATCH, BridgeError, check_token, check_url


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
        self.subject_prefix = check_token(self.subject_prefix or f"mmipc.{self.stream}", "subject prefix")
        self.name = check_name(self.name or f"bridge-{kind}.{self.stream}", "bridge")
        if not self.ack_timeout > 0:
            raise BridgeError(f"ack timeout must be > 0 seconds, not {self.ack_timeout}")


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
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise BridgeError(
                f"--batch must be 1 to {MAX_BATCH} frames (JetStream's limit), not {self.max_batch}"
            )
        return self


@dataclasses.dataclass
class InOptions(Common):
    """`mmipc bridge in --nats URL --stream S --to DIRECTORY`."""

    to: str = "."
    fetch_batch: int = 512

    def checked(self) -> InOptions:
        self.check("in")
        self.to = os.path.abspath(self.to)
        return self
