"""What the service reports about one journal, read from its files (read-only)."""

from __future__ import annotations

import os
from typing import Any

from ._errors import MmipcError
from ._files import list_pages, page_path
from ._page import MappedPage


def journal_status(directory: str, name: str) -> dict[str, Any]:
    """Pages on disk, bytes, and the last frame's timestamp (0 if none) of a journal."""
    pages = list_pages(directory, name)
    info: dict[str, Any] = {"directory": directory, "name": name, "pages": len(pages), "last_nano": 0}
    info["bytes"] = sum(_size(page_path(directory, name, no)) for no in pages)
    for number in reversed(pages[-2:]):
        try:
            page = MappedPage.open(page_path(directory, name, number), name, number)
        except (MmipcError, OSError) as exc:
            info["error"] = str(exc)
            break
        try:
            _, last = page.tail()
        except MmipcError as exc:
            info["error"] = str(exc)
            last = None
        finally:
            page.release()
        if last is not None:
            info["last_nano"] = last.nano
            break
    return info


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
