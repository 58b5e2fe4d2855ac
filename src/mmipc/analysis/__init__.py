"""Journals as numpy arrays, Arrow tables, pandas and polars frames, for vectorised research.

Needs the `analysis` extra (`pip install 'mmipc[analysis]'`: numpy, pyarrow, pandas); the core of
mmipc needs none of them. Pages are read directly (see `_scan` for how, and what is guaranteed):
runs of frames of one size are strided numpy views over the mapped page, copied out once.

    from mmipc.analysis import to_numpy, to_arrow, iter_batches
    ticks = to_numpy("/data/md", ["md-shfe", "md-dce"], msg_type=101)   # merged as Reader merges
    table = to_arrow("/data/md", "md-shfe", since=t0, until=t1)          # schema from the journal
"""

from __future__ import annotations

try:
    import numpy  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mmipc.analysis needs numpy (and pyarrow and pandas for Arrow and pandas output): "
        "pip install 'mmipc[analysis]'"
    ) from None

from ._api import iter_arrays, iter_batches, to_arrow, to_numpy, to_pandas, to_polars
from ._scan import JournalNotFoundError, LayoutMismatchError

__all__ = [
    "JournalNotFoundError",
    "LayoutMismatchError",
    "iter_arrays",
    "iter_batches",
    "to_arrow",
    "to_numpy",
    "to_pandas",
    "to_polars",
]
