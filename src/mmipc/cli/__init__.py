"""The `mmipc` command: a thin layer over the library; each command is a few lines in its module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import MmipcError, __version__
from . import _bench, _demo, _export, _inspect, _replay, _rw, _service, _tail, _torture


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmipc", description="Messaging over memory-mapped journals.")
    parser.add_argument("--version", action="version", version=f"mmipc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo.add_commands(commands)
    _rw.add_commands(commands)
    _tail.add_commands(commands)
    _inspect.add_commands(commands)
    _service.add_commands(commands)
    _torture.add_commands(commands)
    _bench.add_commands(commands)
    _export.add_commands(commands)
    _replay.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except MmipcError as exc:
        print(f"mmipc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
