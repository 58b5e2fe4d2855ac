"""The public API is pinned: removing or renaming a name is a deliberate, visible change."""

from __future__ import annotations

import mmipc

PUBLIC = {
    "Backoff",
    "Block",
    "BusySpin",
    "ClosedError",
    "CorruptJournalError",
    "CursorError",
    "DEFAULT_PAGE_SIZE",
    "DiskFullError",
    "Frame",
    "FrameClaim",
    "FrameTooLargeError",
    "InvalidNameError",
    "JournalId",
    "JournalLockedError",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "MmipcError",
    "MsgType",
    "Reader",
    "StorageError",
    "UsageError",
    "WaitStrategy",
    "Writer",
    "max_payload",
    "DEFAULT_HOME",
    "ReaderNameTakenError",
    "Service",
    "ServiceAlreadyRunningError",
    "ServiceRefusedError",
    "ServiceUnavailableError",
    "service_status",
}


def test_all_is_pinned() -> None:
    assert set(mmipc.__all__) == PUBLIC
    assert all(hasattr(mmipc, name) for name in mmipc.__all__)


def test_every_error_derives_from_mmipc_error_and_usage_errors_are_value_errors() -> None:
    errors = [getattr(mmipc, n) for n in PUBLIC if n.endswith("Error")]
    assert all(issubclass(e, mmipc.MmipcError) for e in errors)
    for usage in (mmipc.UsageError, mmipc.InvalidNameError, mmipc.FrameTooLargeError, mmipc.ClosedError):
        assert issubclass(usage, ValueError)
    assert not issubclass(mmipc.CorruptJournalError, ValueError)


def test_the_package_imports_nothing_outside_the_standard_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys; before = set(sys.modules); import mmipc; "
        "print(sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] not in sys.stdlib_module_names and m.split('.')[0] != 'mmipc'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
