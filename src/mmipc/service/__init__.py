"""The service and its client: a registry of writers and readers, pages prepared ahead, status.

- `_service`: the service itself; `_protocol`: its length-prefixed JSON messages.
- `_link`: a process's connection to its service; `_servicehome`, `_home`: which service, where.
- `_pages_ahead`, `_lazy_ahead`: background page preparation.
- `_monitor`, `_lag`, `_status`, `_prometheus`: rates, reader lag and status, and their export.
- `_retention`: removing or archiving a journal's oldest pages.
- `_orphans`: helper processes that die with their parent.
"""
