"""What the service reports about one journal, read from its files (read-only).

Whatever the files hold (a directory turned into a file or a symlink loop, a page that cannot be
read), the report says so in its "error" field: nothing found on disk may raise out of here.
"""

from __future__ import annotations

import os
from typing import Any

from .._errors import MmipcError
from ..journal._files import list_pages, page_path
from ..journal._page import MappedPage


def journal_status(directory: str, name: str) -> dict[str, Any]:
    """Pages on disk, bytes, and the last frame's timestamp (0 if none) of a journal."""
    info: dict[str, Any] = {"directory": directory, "name": name, "pages": 0, "bytes": 0, "last_nano": 0}
    try:
        pages = list_pages(directory, name)
        info["pages"] = len(pages)
        info["bytes"] = sum(_size(page_path(directory, name, no)) for no in pages)
        info["last_nano"] = _last_nano(directory, name, pages)
    except (MmipcError, OSError, ValueError) as exc:
        info["error"] = str(exc)
    return info


def _last_nano(directory: str, name: str, pages: list[int]) -> int:
    """The last frame's timestamp in the last two pages (the last one may be empty); 0 if none."""
    for number in reversed(pages[-2:]):
        page = MappedPage.open(page_path(directory, name, number), name, number)
        try:
            _, last = page.tail()
        finally:
            page.release()
        if last is not None:
            return last.nano
    return 0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
