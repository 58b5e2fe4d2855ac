"""The command line's one vocabulary: argument types, journal names, --home, --cpu, --json.

Rules (each command gets them by using these helpers, never by checking on its own):

* Numbers are checked when the command line is parsed: a negative count, rate, page or CPU that is
  not ours exits 2 with one line naming the flag, before anything runs.
* Journals are named `DIR NAME [NAME ...]` in every command (as `ls DIR` names a directory). A NAME
  with a slash is a path to a journal in another directory (`/data/md ctp.rb /data/td/orders`),
  since a journal name never holds one. The old `--journal DIR NAME` (repeatable) still works: it is
  rewritten to this form before parsing, with a deprecation warning on stderr.
* `--home` names the service's home on every command that talks to the service; the precedence is
  `--home`, then $MMIPC_HOME, then the per-user default, everywhere.
* `--cpu` pins; `--cpus` is a hidden alias kept for old scripts.
* `--json` means machine-readable output on stdout and nothing else there (messages go to stderr).
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..journal._layout import check_page_size
from ..journal._times import to_nano
from ..service._servicehome import DEFAULT_HOME, ServiceHome
from ._errors import ArgumentsError, CommandError

# Commands that name journals as DIR NAME...; the deprecated --journal is rewritten only for them.
JOURNAL_COMMANDS = {"write", "read", "tail", "inspect", "check", "export", "replay"}
DEPRECATED_JOURNAL = (
    "--journal DIR NAME is deprecated: name journals as `mmipc {command} DIR NAME [NAME ...]`"
)

BOTH_FORMS = "name journals as DIR NAME [NAME ...] or with --journal, not both"


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line that points at --help (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# -- numbers ----------------------------------------------------------------------------------------


def _number(kind: Callable[[str], Any], low: float, what: str, above: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (value <= low if above else value < low) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


count = _number(int, 1, "a count >= 1")
natural = _number(int, 0, "a whole number >= 0")
rate = _number(float, 0, "a rate >= 0 (0 = flat out)")
seconds = _number(float, 0, "a number of seconds > 0", above=True)


def time_arg(text: str) -> int:
    """ns since the epoch from '2026-11-26 09:30:00[.ffffff]' (local time), ISO 8601, or an integer."""
    try:
        return to_nano(text, "time")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (try '2026-11-26 09:30:00')") from None


def check_time_range(args: argparse.Namespace) -> None:
    """`ArgumentsError` if --since is after --until (the two swapped): the range selects nothing."""
    if args.since is not None and args.until is not None and args.since > args.until:
        raise ArgumentsError(f"--since ({args.since}) is after --until ({args.until}): it selects nothing")


def byte_size(text: str) -> int:
    """Bytes from '65536', '64K' or '1M'."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 65536, 64K or 1M)")
    return int(digits) * scale


def page_size(text: str) -> int:
    """A journal page size, like byte_size, checked against the format's rule."""
    size = byte_size(text)
    try:
        check_page_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return size


def sizes(text: str) -> list[int]:
    """Comma-separated payload sizes, each >= 1."""
    return [count(part) for part in text.split(",")]


def cpu(text: str) -> int:
    """A CPU this process may run on."""
    allowed = sorted(os.sched_getaffinity(0))
    value = natural(text)
    if value not in allowed:
        raise argparse.ArgumentTypeError(f"CPU {value} is not one of this process's CPUs {allowed}")
    return int(value)


def cpu_pair(text: str) -> tuple[int, int]:
    """Two CPUs, like '0,1': the sender's (or writer's) and the receiver's (or reader's)."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give two CPUs, like 0,1")
    return cpu(parts[0]), cpu(parts[1])


# -- flags every command spells the same way --------------------------------------------------------


def add_cpu(parser: argparse.ArgumentParser, pair: bool = False, help: str | None = None) -> None:
    """`--cpu` (one CPU, or two like 0,1 with `pair`); `--cpus` is a hidden alias."""
    kind = cpu_pair if pair else cpu
    text = help or ("pin to these two CPUs, like 0,1" if pair else "pin this process to CPU N")
    parser.add_argument("--cpu", type=kind, metavar="N,M" if pair else "N", help=text)
    parser.add_argument("--cpus", type=kind, dest="cpu", help=argparse.SUPPRESS)


def add_home(parser: argparse.ArgumentParser, standalone: bool = False) -> None:
    """`--home` (and, for writers and readers, `--standalone`)."""
    parser.add_argument(
        "--home", type=_home, help="the service's home (default: $MMIPC_HOME, else a per-user directory)"
    )
    if standalone:
        parser.add_argument("--standalone", action="store_true", help="do not register with a service")


def _home(text: str) -> str:
    """A home directory: an empty one (`--home "$UNSET"`) made the service take the current directory
    (and chmod it 0700) while clients looked in the default home."""
    if not text:
        raise argparse.ArgumentTypeError(
            "an empty home: name a directory (is the variable you passed unset?)"
        )
    return text


def service_of(args: argparse.Namespace) -> ServiceHome:
    """What to pass as `service=` for these arguments."""
    if getattr(args, "standalone", False):
        return None
    return args.home if args.home else DEFAULT_HOME


def add_wait(parser: argparse.ArgumentParser, default: str = "block") -> None:
    """`--wait spin|backoff|block` (how a reader waits for frames); `--spin` is a hidden alias."""
    parser.add_argument(
        "--wait",
        choices=("spin", "backoff", "block"),
        default=default,
        help=f"spin busy-polls a whole core for the lowest latency; backoff polls less; block sleeps "
        f"until a writer rings (default {default})",
    )
    parser.add_argument("--spin", action="store_const", const="spin", dest="wait", help=argparse.SUPPRESS)


def add_json(
    parser: argparse.ArgumentParser, what: str = "print JSON on stdout (and nothing else there)"
) -> None:
    parser.add_argument("--json", action="store_true", help=what)


def pin(number: int | None) -> None:
    if number is not None:
        os.sched_setaffinity(0, {number})


# -- naming journals --------------------------------------------------------------------------------


def add_journals(parser: argparse.ArgumentParser, one: bool = False, elsewhere: bool = True) -> None:
    """Positional `DIR NAME` (or `DIR NAME [NAME ...]`); `elsewhere=False` for commands that take
    journals of DIR only (`journals_in_one_directory`), whose help must not offer paths."""
    parser.add_argument("directory", metavar="DIR", help="the journals' directory")
    if one:
        parser.add_argument("name", metavar="NAME", help="the journal's name")
    else:
        where = "a path with a slash names a journal elsewhere" if elsewhere else "names only, no paths"
        help_text = f"journals of DIR (repeat for more); {where}"
        parser.add_argument("names", nargs="+", metavar="NAME", help=help_text)


def journals(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(directory, name) of each journal the command line names."""
    names = args.names if hasattr(args, "names") else [args.name]
    found = []
    for name in names:
        found.append(os.path.split(name) if "/" in name else (args.directory, name))
    return found


def journals_in_one_directory(args: argparse.Namespace) -> list[str]:
    """The NAMEs, for commands whose journals must all be in DIR (a NAME with a slash is refused)."""
    elsewhere = [name for name in args.names if "/" in name]
    if elsewhere:
        raise ArgumentsError(
            f"{', '.join(elsewhere)}: this command takes journals of DIR only (names, no paths)"
        )
    return list(args.names)


def rewrite_deprecated(argv: Sequence[str]) -> tuple[list[str], int]:
    """Turn the old `--journal DIR NAME` flags into `DIR NAME [NAME ...]` (warning once on stderr);
    return the new arguments and how many journals were rewritten."""
    argv = list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in JOURNAL_COMMANDS or "--journal" not in argv:
        return argv, 0
    rest: list[str] = []
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--journal" and len(argv) - i >= 3:
            pairs.append((argv[i + 1], argv[i + 2]))
            i += 3
        else:
            rest.append(argv[i])
            i += 1
    if not pairs:
        return argv, 0
    print(f"mmipc: warning: {DEPRECATED_JOURNAL.format(command=command)}", file=sys.stderr)
    directory = pairs[0][0]
    names = [name if d == directory else os.path.join(d, name) for d, name in pairs]
    return [*rest, directory, *names], len(pairs)


def check_rewritten(args: argparse.Namespace, rewritten: int) -> None:
    """Refuse a command line that names journals both ways (the rewrite would misread it)."""
    if rewritten and len(journals(args)) != rewritten:
        raise ArgumentsError(BOTH_FORMS)


def refuse_extra(parser: argparse.ArgumentParser, command: str, extra: list[str], rewritten: int) -> None:
    """Exit 2 for arguments no flag took, with the command's usage (and a hint for one journal)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    takes_one = not any(a.dest == "names" for a in command_parser._actions)
    hint = f" ({BOTH_FORMS})" if rewritten else ""
    hint = f" ({command} names one journal: DIR NAME)" if command in JOURNAL_COMMANDS and takes_one else hint
    command_parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def existing_directory(directory: str) -> str:
    """`directory`, or a `CommandError` if it is not there (a typo must not pass in silence)."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise CommandError(f"journal directory {directory} does not exist") from None
    except OSError as exc:  # permission denied on it or a parent: say so, it is not a typo
        raise CommandError(f"cannot access journal directory {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CommandError(f"journal directory {directory} is not a directory")
    return directory
