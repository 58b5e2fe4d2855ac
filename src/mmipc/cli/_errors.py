"""How every command ends: one place maps what went wrong to one line on stderr and an exit code.

* 0: done. 1: a runtime error: the command line is well-formed but the world does not match it (a
  missing directory or journal, no service, an output file that exists, a corrupt page, a full
  disk, a missing extra); the line says what and what to do. 2: bad usage: the command line itself
  is wrong (argparse's errors, `ArgumentsError` from a command's own checks of its arguments, and a
  journal or reader name that breaks the naming rule).
* 130: Ctrl-C. Commands print their summary so far in a `finally`, so it appears before this.
* 141: stdout closed early (`mmipc tail ... | head`): quiet, as for `cat`.
* Anything else is a bug in mmipc: one line asking for a report; MMIPC_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from .._errors import InvalidNameError, MmipcError, ServiceUnavailableError, UsageError

USAGE, RUNTIME, INTERRUPTED, BROKEN_PIPE = 2, 1, 130, 141
# Where the library's no-service message starts advising in API words (service=None, MMIPC_HOME).
_API_ADVICE = re.compile(r": start it with|,? or pass service=None| \(or set MMIPC_HOME")


class CommandError(MmipcError):
    """A runtime error found by a command itself (exit 1): a missing directory or journal."""


class ArgumentsError(UsageError):
    """Arguments that parse but do not go together, found by a command itself (exit 2)."""


def run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run `command(args)` and turn whatever it raises into a message and an exit code."""
    try:
        return command(args)
    except KeyboardInterrupt:
        _say(args, "interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except (ArgumentsError, InvalidNameError) as exc:
        _say(args, str(exc))
        return USAGE
    except ServiceUnavailableError as exc:
        _say(args, service_hint(str(exc), args))
        return RUNTIME
    except MmipcError as exc:
        _say(args, str(exc))
        return RUNTIME
    except OSError as exc:
        _say(args, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return RUNTIME
    except Exception as exc:
        if os.environ.get("MMIPC_DEBUG"):
            raise
        _say(
            args,
            f"internal error: {type(exc).__name__}: {exc} (a bug: please report it; MMIPC_DEBUG=1 "
            "shows the traceback)",
        )
        return RUNTIME


def service_hint(message: str, args: argparse.Namespace) -> str:
    """The library's no-service message in the command line's words: flags, not parameters."""
    head = _API_ADVICE.split(message, 1)[0]
    home = getattr(args, "home", None)
    start = f"`mmipc service --home {home}`" if home else "`mmipc service`"
    where = "" if home else " (or --home to name a running one's home)"
    alone = ", or add --standalone to run without one" if hasattr(args, "standalone") else ""
    return f"{head}: start one with {start}{where}{alone}"


def _say(args: argparse.Namespace, message: str) -> None:
    command = getattr(args, "command", None)
    print(f"mmipc {command}: {message}" if command else f"mmipc: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
