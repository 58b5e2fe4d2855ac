"""`mmipc service` and `mmipc status`."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from .._errors import ServiceUnavailableError
from ..bridge import read_states
from ..bridge._state import state_lines
from ..journal._backend import BACKEND
from ..service._home import resolve_home
from ..service._link import service_status
from ..service._prometheus import serve_metrics
from ..service._service import Service
from ._args import add_cpu, add_home, add_json, pin
from ._errors import service_hint
from ._lag import (
    add_service_options,
    add_status_options,
    check_archive,
    check_metrics,
    journal_lines,
    reader_lines,
    retention_dirs,
    retention_policy,
    show,
)

Commands = Any  # argparse's private _SubParsersAction


def add_commands(commands: Commands) -> None:
    service = commands.add_parser(
        "service",
        help="run the service in the foreground",
        description="Run the mmipc service until "
        "SIGINT or SIGTERM: it registers writers and readers, prepares pages ahead of writers, removes "
        "old pages by its retention policy (--retain*; never a page a reader still needs) and, with "
        "--metrics, serves Prometheus metrics on a loopback address.",
    )
    add_home(service)
    service.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    add_cpu(service, help="pin the service to CPU N")
    add_service_options(service)
    service.set_defaults(run=run_service)
    status = commands.add_parser(
        "status",
        help="show what the service sees",
        description="Show the service's journals (writer, rates, age of the last frame, disk use, free "
        "space, time until full) and readers (state, wait mode, lag in frames and time, how long "
        "stalled, committed position), and uptime. A journal stays listed after its writer exits.",
    )
    add_home(status)
    add_json(status, "print JSON on stdout, also when no service runs (then exit 1)")
    add_status_options(status)
    status.set_defaults(run=run_status)


def run_service(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s mmipc %(levelname)s %(message)s",
    )
    pin(args.cpu)
    check_metrics(args)
    check_archive(args)
    service = Service(
        args.home,
        retain=retention_policy(args),
        retain_dirs=retention_dirs(args),
        retain_interval=args.retain_interval,
        foreign_reader_limit=args.foreign_reader_limit,
    )

    def ready() -> None:
        if args.metrics:
            serve_metrics(args.metrics, service.status)
        print(f"mmipc service pid {os.getpid()} listening on {service.socket_path}", flush=True)

    service.serve_forever(on_ready=ready)
    return 0


def run_status(args: argparse.Namespace) -> int:
    def fetch() -> dict[str, Any]:
        try:
            status = service_status(args.home) if args.home else service_status()
        except ServiceUnavailableError as exc:
            if args.json:  # scripts get an answer on stdout too
                home = resolve_home(args.home)
                print(json.dumps({"service": None, "home": home, "error": service_hint(str(exc), args)}))
            raise
        status["backend"] = BACKEND  # this process's: which core a program started here would run
        status["bridges"] = read_states(args.home)  # their own state files: no nats-py needed
        return status

    show(args, fetch, (lambda status: json.dumps(status, indent=2)) if args.json else format_status)
    return 0


def format_status(status: dict[str, Any]) -> str:
    svc = status["service"]
    lines = [
        f"service pid {svc['pid']}, home {svc['home']}, up {_duration(svc['uptime_s'])}, "
        f"{_sessions(svc['sessions'])}, {svc['pages_prepared']} pages prepared",
        f"backend {status.get('backend', BACKEND)} (MMIPC_BACKEND=python forces the pure-Python one)",
        *_failures(svc),
        "",
        *journal_lines(status["journals"]),
        "",
        *reader_lines(status["readers"]),
        *state_lines(status.get("bridges", [])),
    ]
    return "\n".join(lines)


def _failures(svc: dict[str, Any]) -> list[str]:
    count = svc.get("page_failures", 0)
    if not count:
        return []
    return [f"{count} page failure{'s' if count != 1 else ''}, the last: {svc['last_page_error']}"]


def _sessions(sessions: int) -> str:
    """Client sessions, not counting the one asking for this status."""
    others = max(0, sessions - 1)
    return f"{others} session{'' if others == 1 else 's'}"


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
