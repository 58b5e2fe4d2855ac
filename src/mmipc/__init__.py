"""mmipc: inter-process messaging over memory-mapped journal files.

One writer appends frames to a journal of fixed-size page files; any number of readers in other
processes read them live or replay them from disk, merged across journals in timestamp order.
The on-disk format and its memory-ordering contract are in docs/format.md.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    ClosedError,
    CorruptJournalError,
    CursorError,
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
from .journal._block import Block
from .journal._layout import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE, MsgType, max_payload
from .journal._reader import Reader
from .journal._types import Frame, JournalId
from .journal._wait import Backoff, BusySpin, WaitStrategy
from .journal._writer import FrameClaim, Writer
from .service._servicehome import DEFAULT_HOME

__version__ = "0.1.0"

# Loaded on first use, so that `import mmipc` in a trading process stays fast and does not pull in the
# service's sockets, threads, logging and JSON (a test pins the modules `import mmipc` loads).
_LAZY = ("Service", "service_status", "backend")


def __getattr__(name: str) -> Any:
    value: Any
    if name == "Service":
        from .service._service import Service as value
    elif name == "service_status":
        from .service._link import service_status as value
    elif name == "backend":  # "native" (the C extension mmipc.journal._native) or "python" (MMIPC_BACKEND)
        from .journal._backend import BACKEND as value
    else:
        raise AttributeError(f"module 'mmipc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:
    from .journal._backend import BackendName

    backend: BackendName  # resolved by __getattr__ (not in __all__: a str, not an API)
    from .service._link import service_status
    from .service._service import Service

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "Backoff",
    "Block",
    "BusySpin",
    "ClosedError",
    "CorruptJournalError",
    "CursorError",
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
