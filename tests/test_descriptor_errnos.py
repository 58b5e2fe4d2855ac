"""One set of "out of descriptors" errnos (`_files.DESCRIPTOR_ERRNOS`), used everywhere: a second copy
(the service's accept loop had its own tuple) drifts apart from the first when one of them changes."""

from __future__ import annotations

from pathlib import Path

import pytest

import mmipc

pytestmark = pytest.mark.once  # .ci/run: about the source, not a backend

SOURCE = Path(mmipc.__file__).parent


def test_only_files_spells_out_the_descriptor_errnos() -> None:
    spelled = [
        str(path.relative_to(SOURCE))
        for path in sorted(SOURCE.rglob("*.py"))
        if "errno.EMFILE" in path.read_text() or "errno.ENFILE" in path.read_text()
    ]
    assert spelled == ["journal/_files.py"], spelled
