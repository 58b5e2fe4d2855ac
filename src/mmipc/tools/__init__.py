"""Looking inside journals (read-only walks), replay, and the torture harness.

The walks (`list_journals`, `summarize`, `check_journal`, ...) are re-exported here from `_walk`;
`_replay` copies recorded journals at their recorded pace; `torture` is the fault-injection harness
(`mmipc torture`), conducted by `_torture_run`.
"""

from ._walk import (
    CheckResult,
    Problem,
    Summary,
    check_journal,
    last_written_page,
    list_journals,
    nth_last_nano,
    open_page,
    page_frames,
    summarize,
)

__all__ = [
    "CheckResult",
    "Problem",
    "Summary",
    "check_journal",
    "last_written_page",
    "list_journals",
    "nth_last_nano",
    "open_page",
    "page_frames",
    "summarize",
]
