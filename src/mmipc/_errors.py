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
    """Base class of every error mmipc raises on purpose.

    Example: ``except mmipc.MmipcError as exc: log.error("mmipc: %s", exc)``
    """


class UsageError(MmipcError, ValueError):
    """The API was called with arguments or in a state it cannot accept.

    Example: ``Writer.create("/data/md", "md", page_size=1000) raises it (not a multiple of 4096)``
    """


class InvalidNameError(UsageError):
    """A journal or reader name breaks the naming rule (see docs/format.md).

    Example: ``Writer.create("/data/md", "no spaces") raises it``
    """


class FrameTooLargeError(UsageError):
    """A payload does not fit in one page of the journal.

    Example: ``writer.write(bytes(max_payload(writer.page_size) + 1)) raises it``
    """


class ClosedError(UsageError):
    """A writer or reader was used after `close()`.

    Example: ``writer.close(); writer.write(b"x") raises it``
    """


class JournalLockedError(MmipcError):
    """Another live writer holds the journal (by its OS lock, or by the service's registry).

    Example: ``a second Writer.create("/data/md", "md") while the first is open raises it``
    """


class CorruptJournalError(MmipcError):
    """A page file holds bytes that are not a valid mmipc journal.

    `path` is the page file and `offset` the byte offset in it where the problem was found.

    Example: ``except CorruptJournalError as exc: print(exc.path, exc.offset)  # then `mmipc check```
    """

    def __init__(self, path: str, offset: int, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        if path.endswith(".schema.json"):  # the payload layouts (mmipc.journal._schema), not a page
            what, advice = "schema file", "move it aside to read the payloads undecoded"
        else:
            what, advice = "journal page", "move the damaged page aside to read past it"
        super().__init__(
            f"corrupt {what} {path} at offset {offset}: {problem}; "
            f"run `mmipc check` on the journal, and {advice}"
        )


class StorageError(MmipcError):
    """The operating system refused to create or open a journal file.

    Example: ``Writer.create("/proc/md", "md") raises it (the directory cannot be made)``
    """


class DiskFullError(StorageError):
    """No space (or file-size limit, or quota) left to create the next page.

    Every frame written before stays intact and readable; the write that needed the page was not made
    and may be retried once space is freed.

    Example: ``except DiskFullError: free space, then retry the same write``
    """


class ServiceUnavailableError(MmipcError):
    """No mmipc service answers on the home's socket.

    Example: ``Writer.create("/data/md", "md", service="/no/home") raises it; service=None runs without``
    """


class ServiceRefusedError(MmipcError):
    """The service answered but refused the request; `code` names the reason, the message explains.

    Example: ``except ServiceRefusedError as exc: print(exc.code)``
    """

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class ReaderNameTakenError(ServiceRefusedError):
    """A live reader already has this name (names identify readers to the service, as in Kungfu).

    Example: ``Reader.create("strategy-1") while another live reader has that name raises it``
    """


class ServiceAlreadyRunningError(MmipcError):
    """Another service already serves this home.

    Example: ``Service("/run/mmipc").start() while another serves that home raises it``
    """


class CursorError(MmipcError):
    """A durable reader's committed position cannot be used: damaged, held by another process, or it
    no longer matches its journal (reset it with `mmipc cursors --reset NAME`).

    Example: ``Reader.create("r", durable=True)`` while another process has "r" open raises it
    """
