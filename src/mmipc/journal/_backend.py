"""Which backend runs the hot paths: the C extension `mmipc.journal._native`, or the pure-Python reference.

Rules:

* `BACKEND` is "native" when the extension imports and the environment does not ask otherwise,
  else "python". It is decided once, at import: a process never mixes the two.
* `MMIPC_BACKEND=python` forces the pure-Python backend; `MMIPC_BACKEND=native` requires the
  extension (an ImportError names what is missing); unset or empty means "native if available".
  Any other value is a `UsageError` naming the accepted values, raised by ``import mmipc``. In the
  `mmipc` program (its console script, or ``python -m mmipc``) the import cannot reach the CLI's
  error handling, so that error is one line on stderr and exit 2 (exit 1 for a missing extension).
* The C sources are in the directory ``mmipc/journal/_native/`` (shipped, for C users: ``mmipc.h``); without
  the extension, ``import mmipc.journal._native`` finds that directory as a namespace package, so never
  test for the extension with a bare import: use `native` or `BACKEND`.
* `native` is the extension module, or None with the Python backend. Callers branch on it once,
  when they bind their hot paths, never per frame.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Literal

from .._errors import UsageError

BackendName = Literal["native", "python"]
ENV_VAR = "MMIPC_BACKEND"
CHOICES = ("native", "python")


def _import_native() -> ModuleType | None:
    """The extension, or None. The C sources live in a directory of the same name, which Python
    imports as an empty namespace package when the extension is not built: that is not it."""
    try:
        from . import _native
    except ImportError:
        return None
    if not hasattr(_native, "WriterCore"):
        return None
    return _native


def select(requested: str | None) -> tuple[BackendName, ModuleType | None]:
    """The backend for a requested value of MMIPC_BACKEND (None or "" : the best available)."""
    if requested not in (None, "", *CHOICES):
        raise UsageError(
            f"{ENV_VAR}={requested!r} is not a backend: use 'native', 'python', or leave it unset"
        )
    if requested == "python":
        return "python", None
    module = _import_native()
    if module is None and requested == "native":
        raise ImportError(
            f"{ENV_VAR}=native but the C extension mmipc.journal._native is not built: reinstall mmipc "
            "on a machine with a C compiler and the Python headers, or unset MMIPC_BACKEND"
        )
    return ("native", module) if module is not None else ("python", None)


def _is_the_cli() -> bool:
    """True in the `mmipc` program: its console script, or ``python -m mmipc``."""
    if os.path.basename(sys.argv[0]) == "mmipc":
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(flag == "-m" and module == "mmipc" for flag, module in zip(argv, argv[1:], strict=False))


def _select_from_environment() -> tuple[BackendName, ModuleType | None]:
    try:
        return select(os.environ.get(ENV_VAR))
    except (UsageError, ImportError) as exc:
        if not _is_the_cli():
            raise
        print(f"mmipc: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2 if isinstance(exc, UsageError) else 1) from None


BACKEND, native = _select_from_environment()
