"""The exceptions of mmipc.

Everything mmipc raises on purpose derives from `MmipcError`. Two families are kept apart, as h11 keeps
local and remote protocol errors apart:

* `UsageError` (also a `ValueError`): the caller asked for something impossible: a bad name, a frame
  larger than a page, a closed handle. Fix the calling code.
* `CorruptJournalError`, `StorageError`: the disk holds bad data, or refused to store more. Nothing the
  caller did wrong; the message names the file and what to do.
"""

from __future__ import annotations


class MmipcError(Exception):
    """Base class of every error mmipc raises on purpose."""


class UsageError(MmipcError, ValueError):
    """The API was called with arguments or in a state it cannot accept."""


class InvalidNameError(UsageError):
    """A journal or reader name breaks the naming rule (see docs/format.md)."""


class FrameTooLargeError(UsageError):
    """A payload does not fit in one page of the journal."""


class ClosedError(UsageError):
    """A writer or reader was used after `close()`."""


class JournalLockedError(MmipcError):
    """Another live writer holds the journal (by its OS lock, or by the service's registry)."""


class CorruptJournalError(MmipcError):
    """A page file holds bytes that are not a valid mmipc journal.

    `path` is the page file and `offset` the byte offset in it where the problem was found.
    """

    def __init__(self, path: str, offset: int, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__(
            f"corrupt journal page {path} at offset {offset}: {problem}; "
            "run `mmipc check` on the journal, and move the damaged page aside to read past it"
        )


class StorageError(MmipcError):
    """The operating system refused to create or open a journal file."""


class DiskFullError(StorageError):
    """No space (or file-size limit, or quota) left to create the next page.

    Every frame written before stays intact and readable; the write that needed the page was not made
    and may be retried once space is freed.
    """


class ServiceUnavailableError(MmipcError):
    """No mmipc service answers on the home's socket."""


class ServiceRefusedError(MmipcError):
    """The service answered but refused the request; `code` names the reason, the message explains."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class ReaderNameTakenError(ServiceRefusedError):
    """A live reader already has this name (names identify readers to the service, as in Kungfu)."""


class ServiceAlreadyRunningError(MmipcError):
    """Another service already serves this home."""
