"""Red team 7: paths with NUL bytes, counter files version 2, forked children, the service's
socket, attacked as a careless or hostile user would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmipc import Reader, UsageError, Writer

NUL_PATHS: dict[str, Callable[[str], Any]] = {
    "writer": lambda d: Writer.create(d, "md", service=None),
    "add_journal": lambda d: Reader.create("nul-reader", service=None).add_journal(d, "md"),
    "remove_journal": lambda d: Reader.create("nul-reader", service=None).remove_journal(d, "md"),
    "cursor_dir": lambda d: Reader.create("nul-reader", service=None, durable=True, cursor_dir=d),
    "service_home": lambda d: Reader.create("nul-reader", service=d),
    "analysis": lambda d: _to_numpy(d),
}


def _to_numpy(directory: str) -> Any:
    analysis = pytest.importorskip("mmipc.analysis")
    return analysis.to_numpy(directory, "md", msg_type=101)


@pytest.mark.parametrize("use", NUL_PATHS.values(), ids=NUL_PATHS.keys())
def test_a_directory_with_a_nul_byte_is_a_usage_error_naming_it(jdir: str, use: Callable[[str], Any]) -> None:
    """A path with a NUL byte (a C string cut short, a bad decode) raised a bare ValueError
    "embedded null byte" from deep inside the first os call: no path, not our error."""
    with pytest.raises(UsageError, match="NUL byte") as caught:
        use(jdir + "\0evil")
    assert "evil" in str(caught.value)


@pytest.mark.parametrize("directory", [b"/tmp", 5], ids=["bytes", "int"])
def test_a_directory_that_is_not_a_str_path_is_a_usage_error(jdir: str, directory: object) -> None:
    """bytes made it to a str regex (TypeError "cannot use a string pattern on a bytes-like
    object"), an int to os.fspath (TypeError): now our error, naming what was given."""
    with Reader.create("typed-reader", service=None) as reader:
        with pytest.raises(UsageError, match="must be a str or a path of str"):
            reader.add_journal(directory, "md")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be a str or a path of str"):
        Writer.create(directory, "md", service=None)  # type: ignore[arg-type]
