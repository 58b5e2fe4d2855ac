"""Timestamps as users write them: ns since the epoch, a `datetime`, or an ISO 8601 string.

Naive times (no UTC offset) are local time, as `date` prints them. `datetime` is imported on first
use, not by `import mmipc`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .._errors import UsageError

if TYPE_CHECKING:
    from datetime import datetime


def to_nano(when: int | datetime | str, what: str = "time") -> int:
    """ns since the epoch from an int (ns), a `datetime`, or an ISO 8601 string.

    >>> to_nano("1970-01-01T00:00:01+00:00")
    1000000000
    """
    from datetime import datetime

    if isinstance(when, int) and not isinstance(when, bool):
        return when
    if isinstance(when, str):
        if when.isdigit():
            return int(when)
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise UsageError(
                f"{what} {when!r} is not a time: give ns since the epoch, a datetime, "
                "or an ISO 8601 string like '2026-11-26 09:30:00'"
            ) from None
    if isinstance(when, datetime):
        seconds = int(when.timestamp())
        return seconds * 1_000_000_000 + when.microsecond * 1000
    raise UsageError(
        f"{what} must be ns since the epoch (int), a datetime or an ISO 8601 string, "
        f"not {type(when).__name__} {when!r}"
    )


def float_seconds(value: float) -> float:
    """A number of seconds as a float; an int too large for one is +-inf (float() overflows)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
