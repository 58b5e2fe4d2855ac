"""`mmipc demo`: the seed's three-terminal scenario (service, market-data writer, latency reader)
in one command.

It uses the running service if there is one, else starts one in a temporary home. It starts the
reader first, pinned to one core, then the writer, pinned to another. It passes the reader's lines
through, and ends with the reader's summary. Every child runs in its own session, so a Ctrl-C
reaches only the demo, which then stops the children and removes every temporary file it made
before it exits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from .. import ServiceUnavailableError, service_status
from ..service._home import socket_path
from ..service._orphans import preexec_die_with_me
from ..service._service import spawn_service
from ._args import add_cpu, add_home, add_wait, count, rate

JOURNAL = "md.ctp"


def add_commands(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the seed's scenario: service, CTP writer, latency reader",
        description="Start a service (unless one runs), a writer of CTP market-data frames and a reader "
        "that prints each frame's latency, then a summary: sent, received, lost, latency percentiles.",
    )
    demo.add_argument("--count", type=count, default=101, help="frames to send (default 101, as the seed)")
    demo.add_argument("--rate", type=rate, default=8.0, help="frames per second, 0 = flat out (default 8)")
    demo.add_argument(
        "--fast", action="store_true", help="flat out, 100,000 frames unless --count; histogram"
    )
    add_wait(demo, default="spin")
    add_cpu(demo, pair=True, help="CPUs for writer and reader (default 0,1)")
    add_home(demo)
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    count = 100_000 if args.fast and args.count == 101 else args.count
    rate = 0.0 if args.fast else args.rate
    writer_cpu, reader_cpu = (str(c) for c in (args.cpu or _default_cpus()))
    scratch = tempfile.mkdtemp(prefix="mmipc-demo-")
    children: list[subprocess.Popen[str]] = []
    try:
        env = _service_env(scratch, children, args.home)
        journals = os.path.join(scratch, "journals")
        os.mkdir(journals)  # the reader starts first, and a missing directory is a typo to it
        read = [
            "read",
            journals,
            JOURNAL,
            "--cpu",
            reader_cpu,
            "--name",
            f"demo-{os.getpid()}",
            "--since",
            "0",
        ]
        read += ["--wait", args.wait]
        reader = _start([*read, *(["--quiet", "--histogram"] if args.fast else [])], env, children)
        assert reader.stdout is not None
        print(reader.stdout.readline(), end="", flush=True)  # "reader ... following": it is ready
        write = ["write", journals, JOURNAL, "--count", str(count), "--rate", str(rate)]
        writer = _start([*write, "--cpu", writer_cpu], env, children, quiet=True)
        print(
            f"demo: writer pid {writer.pid} on cpu {writer_cpu}, reader pid {reader.pid} "
            f"on cpu {reader_cpu}, {count} frames at {'full speed' if rate == 0 else f'{rate:g}/s'}",
            flush=True,
        )
        if args.wait == "spin":
            print(f"demo: the reader busy-polls: cpu {reader_cpu} runs at 100% (--wait backoff spares it)")
        for line in reader.stdout:
            print(line, end="", flush=True)
        return max(reader.wait(), writer.wait())
    except KeyboardInterrupt:
        print("demo: interrupted; stopping", file=sys.stderr)
        return 130
    finally:
        _stop(children)
        shutil.rmtree(scratch, ignore_errors=True)


def _default_cpus() -> tuple[int, int]:
    available = sorted(os.sched_getaffinity(0))
    return available[0], available[-1] if len(available) > 1 else available[0]


def _service_env(scratch: str, children: list[subprocess.Popen[str]], home: str | None) -> dict[str, str]:
    """The environment for the children: the running service's home, or a new one's (in `home` if
    given, else in the scratch directory)."""
    try:
        home = (service_status(home) if home else service_status())["service"]["home"]
        print(f"demo: using the running service in {home}", flush=True)
    except ServiceUnavailableError:
        home = home or os.path.join(scratch, "home")
        service = spawn_service(home)
        children.append(service)
        print(f"demo: started service pid {service.pid} listening on {socket_path(home)}", flush=True)
    assert home is not None
    return {**os.environ, "MMIPC_HOME": home}


def _start(
    args: list[str], env: dict[str, str], children: list[subprocess.Popen[str]], quiet: bool = False
) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "mmipc", *args],
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a terminal's Ctrl-C reaches the demo only; it stops the children
        preexec_fn=preexec_die_with_me(),  # and if the demo is killed outright, they die with it
    )
    children.append(child)
    return child


def _stop(children: list[subprocess.Popen[str]]) -> None:
    """Stop the children, newest first (the service last), and wait for each."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
