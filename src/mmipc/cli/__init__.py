"""The `mmipc` command: a thin layer over the library; each command is a few lines in its module.

The rules every command follows live in two modules, not in the commands: `_args` (how flags are
spelled and checked) and `_errors` (exit codes and one-line messages).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..journal._backend import BACKEND
from . import (
    _args,
    _bench,
    _cursors,
    _demo,
    _errors,
    _export,
    _inspect,
    _replay,
    _rw,
    _service,
    _tail,
    _torture,
    bridge,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (docs/make_cli_md.py documents them from it)."""
    parser = _args.Parser(prog="mmipc", description="Messaging over memory-mapped journals.")
    parser.add_argument("--version", action="version", version=f"mmipc {__version__} (backend {BACKEND})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo.add_commands(commands)
    _rw.add_commands(commands)
    _tail.add_commands(commands)
    _inspect.add_commands(commands)
    _service.add_commands(commands)
    _cursors.add_commands(commands)
    _torture.add_commands(commands)
    _bench.add_commands(commands)
    _export.add_commands(commands)
    _replay.add_commands(commands)
    bridge.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; return its exit code (0 ok, 1 runtime error, 2 usage, 130 Ctrl-C).

    ``main(["ls", "/data/md"])``
    """
    words, rewritten = _args.rewrite_deprecated(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(words)  # bad usage: argparse prints it and exits 2
    if extra:  # said by the command's own parser, so its usage is shown, not the top level's
        _args.refuse_extra(parser, args.command, extra, rewritten)

    def command(args: argparse.Namespace) -> int:
        _args.check_rewritten(args, rewritten)
        code: int = args.run(args)
        return code

    return _errors.run(command, args)
