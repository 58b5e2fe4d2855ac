"""The journal core: the format, page files, the writer, cursors and the merging reader.

Everything a trading process needs to write and read a journal lives here, with no service code:
`import mmipc` loads this package and nothing of `mmipc.service` but `_servicehome`.

- `_layout`: the on-disk format, on buffers only (docs/format.md says the same in prose).
- `_files`, `_page`: page files, names and the writer's lock; one mapped page.
- `_writer`, `_cursor`, `_reader`: the hot paths. `_merge` orders a reader's journals; `_batch`
  hands out a batch as numpy columns.
- `_bell`, `_wait`, `_block`, `_aio`: doorbells and how a reader waits (spin, back off, sleep,
  asyncio).
- `_durable`, `_metrics`: where a named reader stands, on disk; its position counters.
- `_schema`, `_types`, `_times`: payload layouts, the values a reader hands out, timestamps.
- `_backend`, `_native/`: the C core (`mmipc.h`) and its CPython extension, or the pure-Python
  reference (`MMIPC_BACKEND=python`).
"""
