"""mmipc: inter-process messaging over memory-mapped journal files.

One writer appends frames to a journal of fixed-size page files; any number of readers in other
processes read them live or replay them from disk, merged across journals in timestamp order.
The on-disk format and its memory-ordering contract are in docs/format.md.
"""

from ._errors import (
    ClosedError,
    CorruptJournalError,
    DiskFullError,
    FrameTooLargeError,
    InvalidNameError,
    JournalLockedError,
    MmipcError,
    ReaderNameTakenError,
    ServiceAlreadyRunningError,
    ServiceRefusedError,
    ServiceUnavailableError,
    StorageError,
    UsageError,
)
from ._layout import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE, MsgType, max_payload
from ._link import DEFAULT_HOME, service_status
from ._reader import Reader
from ._service import Service
from ._types import Frame, JournalId
from ._wait import Backoff, BusySpin, WaitStrategy
from ._writer import FrameClaim, Writer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "Backoff",
    "BusySpin",
    "ClosedError",
    "CorruptJournalError",
    "DiskFullError",
    "Frame",
    "FrameClaim",
    "FrameTooLargeError",
    "InvalidNameError",
    "JournalId",
    "JournalLockedError",
    "MmipcError",
    "MsgType",
    "Reader",
    "ReaderNameTakenError",
    "Service",
    "ServiceAlreadyRunningError",
    "ServiceRefusedError",
    "ServiceUnavailableError",
    "StorageError",
    "UsageError",
    "WaitStrategy",
    "Writer",
    "max_payload",
    "service_status",
]
