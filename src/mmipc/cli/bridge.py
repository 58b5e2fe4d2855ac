"""`mmipc bridge out` and `mmipc bridge in`: journals to and from a NATS JetStream stream."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..bridge import BridgeError, require_nats, run_in, run_out
from ..bridge._options import InOptions, OutOptions
from ._args import (
    add_home,
    add_journals,
    count,
    existing_directory,
    journals_in_one_directory,
    page_size,
    seconds,
    time_arg,
)
from ._errors import ArgumentsError

Options = TypeVar("Options", OutOptions, InOptions)


def add_commands(commands: Any) -> None:
    bridge = commands.add_parser(
        "bridge",
        help="ship journals to a NATS JetStream stream, or mirror one into journals (mmipc[nats])",
        description="Bridges to NATS JetStream (needs `pip install 'mmipc[nats]'`). `out` follows "
        "journals with a durable reader and publishes every frame, exactly once, to the stream; `in` "
        "mirrors the stream into journals of the same names with the original timestamps. Both "
        "resume where they stopped, retry with backoff when the network fails, and show their state "
        "and lag in `mmipc status`. See docs/bridge.md.",
    )
    kinds = bridge.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    out = kinds.add_parser(
        "out",
        help="publish journals of DIR to the stream",
        description="Follow journals of DIR and publish their frames to subjects PREFIX.NAME of the "
        "stream (created if missing), in fenced atomic batches; resume after the last frame the "
        "stream holds. Runs until Ctrl-C or SIGTERM.",
    )
    add_journals(out, elsewhere=False)
    _common(out, "out")
    out.add_argument("--host-id", default="", help="this host's id in message ids (default: the hostname)")
    out.add_argument(
        "--batch", type=count, default=256, metavar="N", help="frames per batch, at most (1-1000)"
    )
    out.add_argument(
        "--start",
        type=time_arg,
        metavar="T",
        help="a journal the stream and the cursor know nothing of starts at T (default: its beginning)",
    )
    out.add_argument("--replicas", type=count, default=1, help="replicas of a stream the bridge creates")
    out.set_defaults(run=run_bridge_out)
    into = kinds.add_parser(
        "in",
        help="mirror the stream into journals of --to",
        description="Copy every frame of the stream into journals of the same names in --to, with "
        "their original timestamps, types and sources; resume after the mirror's last frame. Runs "
        "until Ctrl-C or SIGTERM.",
    )
    _common(into, "in")
    into.add_argument("--to", required=True, metavar="DIR", help="the mirror journals' directory")
    into.add_argument(
        "--page-size",
        type=page_size,
        metavar="BYTES",
        help="size of the mirror's new pages, like 64M (default: a journal's own, else 32M); a frame "
        "must fit one page",
    )
    into.add_argument(
        "--skip-foreign",
        action="store_true",
        help="skip messages that are no mmipc frame (logged with subject and stream sequence, counted "
        "in `mmipc status`) instead of stopping",
    )
    into.set_defaults(run=run_bridge_in)


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--nats", required=True, metavar="URL", help="the NATS server, nats://HOST:PORT")
    parser.add_argument("--stream", required=True, metavar="S", help="the JetStream stream")
    parser.add_argument(
        "--subject-prefix", default="", metavar="P", help="subjects are P.JOURNAL (default mmipc.S)"
    )
    parser.add_argument(
        "--name", default="", help=f"the bridge's name: its state file and reader (default bridge-{kind}.S)"
    )
    parser.add_argument(
        "--ack-timeout", type=seconds, default=5.0, metavar="SEC", help="wait this long for acks"
    )
    add_home(parser)


def run_bridge_out(args: argparse.Namespace) -> int:
    require_nats()
    options = OutOptions(
        **_common_options(args),
        directory=existing_directory(args.directory),  # as read and tail: a typo is not waited for
        journals=journals_in_one_directory(args),
        host=args.host_id,
        max_batch=args.batch,
        start=args.start if args.start is not None else "begin",
        replicas=args.replicas,
    )
    return _run(options, run_out)


def run_bridge_in(args: argparse.Namespace) -> int:
    require_nats()
    options = InOptions(
        **_common_options(args), to=args.to, page_size=args.page_size, skip_foreign=args.skip_foreign
    )
    return _run(options, run_in)


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `_common` added, by their names in OutOptions and InOptions."""
    return {
        "nats_url": args.nats,
        "stream": args.stream,
        "name": args.name,
        "subject_prefix": args.subject_prefix,
        "home": args.home,
        "ack_timeout": args.ack_timeout,
    }


def _run(options: Options, run: Callable[[Options], None]) -> int:
    _log()
    _check(options)
    run(options)
    return 0


def _check(options: OutOptions | InOptions) -> None:
    """Settings that do not go together are usage errors (exit 2), said in one line."""
    try:
        options.checked()
    except BridgeError as exc:
        raise ArgumentsError(str(exc)) from None


def _log() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s mmipc %(levelname)s %(message)s")
