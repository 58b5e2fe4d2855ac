"""`mmipc export`: journals to Parquet, Arrow, CSV or .npy (needs the `analysis` extra).

``-o -`` is refused, not taken as standard output: Parquet, Arrow and .npy write their footer or
header at the end (a pipe cannot seek); and every format is written to a temporary file renamed
into place once complete, so that an interrupted export never looks like a whole one, which a
stream cut short on stdout would; CSV also writes its record of the export beside the file
(PATH.meta.json). It wrote a file named "-".
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import UsageError
from ..ctp import LAYOUTS
from ..journal._layout import MAX_MSG_TYPE
from ._args import add_journals, journals_in_one_directory, natural, time_arg
from ._common import Bar, format_time

STDOUT_REFUSED = (
    "-o - (standard output) is not supported: an export is written to a file and renamed into place "
    "only once complete; name a file (./- for a file named -)"
)


def add_commands(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="export journals to parquet, arrow, csv or npy",
        description="Export the frames of one msg_type of journals of DIR, merged by time, to a "
        "columnar file, in constant memory. The file records the journals, the frame count, the time "
        "range and the payload layout. Beside the payload's fields come the columns nano, journal and "
        "source: a payload field of one of these names is the column payload_nano, payload_journal or "
        "payload_source. A path named as a page, lock, schema or bells file of a journal is refused, "
        "even with --force. Needs: pip install 'mmipc[analysis]'.",
    )
    add_journals(export, elsewhere=False)
    export.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="the file to write (- is refused: no stdout)"
    )
    export.add_argument(
        "--format", choices=("parquet", "arrow", "csv", "npy"), help="default: from PATH's suffix"
    )
    export.add_argument(
        "--msg-type", type=msg_type_arg, help="the msg_type to export (default: the one declared)"
    )
    export.add_argument("--since", type=time_arg, help="from this time on")
    export.add_argument("--until", type=time_arg, help="up to this time (inclusive)")
    export.add_argument(
        "--struct", choices=sorted(LAYOUTS), help="payload layout, if the journal declares none"
    )
    export.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    export.set_defaults(run=run_export)


def msg_type_arg(text: str) -> int:
    value: int = natural(text)
    if value > MAX_MSG_TYPE:
        raise argparse.ArgumentTypeError(f"{text} is not a msg_type (0..{MAX_MSG_TYPE})")
    return value


def run_export(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except ImportError as exc:  # the analysis extra is not installed: say which
        raise UsageError(str(exc).replace("\n", " ")) from None


def _export(args: argparse.Namespace) -> int:
    from ..analysis._export import export, pick_format
    from ..analysis._scan import make_query

    if args.output == "-":  # a file named "-" was written, where the user meant standard output
        raise UsageError(STDOUT_REFUSED)
    fmt = pick_format(args.output, args.format)
    names = journals_in_one_directory(args)
    query = make_query(args.directory, names, args.msg_type, args.since, args.until, args.struct)
    bar = Bar(f"export {fmt}")
    try:
        done = export(query, args.output, fmt, force=args.force, progress=bar)
    finally:
        bar.close()
    span = f"{format_time(done.first_nano)} to {format_time(done.last_nano)}" if done.frames else "no frame"
    print(f"exported {done.frames} frame(s) of msg_type {query.msg_type} ({span}) to {done.path}")
    return 0
