"""Which service a writer or reader talks to, without importing the service link.

`DEFAULT_HOME` and `ServiceHome` live here, not in `_link`, so that `import mmipc` (and a standalone
writer) never loads the link's sockets, threads, logging and JSON: `link_for` imports `_link` on
first use, when a writer or reader actually registers with a service.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._link import Link


class _Default(enum.Enum):
    HOME = "the default service home"


DEFAULT_HOME = _Default.HOME
ServiceHome = str | os.PathLike[str] | None | Literal[_Default.HOME]


def link_for(service: ServiceHome) -> Link | None:
    """The link for `service`: None for standalone mode, else this process's link to that home."""
    if service is None:
        return None
    from ._link import Link

    return Link.for_home(None if service is DEFAULT_HOME else service)
