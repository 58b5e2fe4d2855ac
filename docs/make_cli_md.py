"""Write docs/cli.md from the code: each command's description and usage from its parser, and the
real output of an example run against real journals and a real service.

    python docs/make_cli_md.py
    python docs/make_cli_md.py read status   # only these sections; the others are kept as they are
                                             # (and the long-running demo, bench, torture not run)

Temporary paths are shown as /data/md (journals) and /run/mmipc (the service home).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mmipc.cli import build_parser

OUT = Path(__file__).with_name("cli.md")
MAX_LINES = 14

# (command, example arguments); {md} is the journal directory.
EXAMPLES: list[tuple[str, list[str]]] = [
    ("demo", ["demo", "--count", "12", "--rate", "20"]),
    ("write", ["write", "{md}", "ctp.rb", "--count", "101", "--rate", "0"]),
    ("read", ["read", "{md}", "ctp.rb", "--since", "0", "--count", "5", "--name", "risk", "--durable"]),
    ("tail", ["tail", "{md}", "ctp.rb", "-n", "4", "--no-follow"]),
    ("ls", ["ls", "{md}"]),
    ("inspect", ["inspect", "{md}", "ctp.rb", "--limit", "4"]),
    ("check", ["check", "{md}", "ctp.rb"]),
    (
        "export",
        ["export", "{md}", "ctp.rb", "--msg-type", "101", "-o", "{md}/../rb.parquet"],
    ),
    ("replay", ["replay", "{md}", "ctp.rb", "--to", "{md}/../replayed", "--speed", "max"]),
    ("status", ["status"]),
    ("cursors", ["cursors"]),
    ("prune", ["prune", "{md}", "ctp.rb", "--before", "2000-01-01 00:00:00", "--dry-run"]),
    ("service", ["service", "--help"]),
    ("bridge", ["bridge", "out", "--help"]),
    ("torture", ["torture", "--seconds", "10", "--seed", "1"]),
    ("bench", ["bench", "--quick", "--size", "408", "--peers", "mmipc,naive-mmap,os.pipe,mp.Queue"]),
]


NOTES = {
    "bridge": "\n`mmipc bridge in --nats URL --stream S --to DIR` mirrors the stream into journals of DIR "
    "(same names, original timestamps), with `--page-size` for the mirror's new pages (a frame must "
    "fit one) and `--skip-foreign` to log, count and skip messages that are no mmipc frame instead of "
    "stopping. Both directions take `--name` (default `bridge-out.S` or "
    "`bridge-in.S`), `--subject-prefix` (default `mmipc.S`), `--ack-timeout` and `--home`, and show "
    "their state and lag in `mmipc status`. docs/bridge.md has the guarantees and the failures.\n",
    "read": '\nThese frames were written before the reader started, so their "latency" is their age; '
    "run `read` before `write` (as `mmipc demo` does) to see the live figure. Without `--since`, "
    "`read` shows only frames written from now on; `--name risk --durable` keeps its position "
    "(`mmipc cursors` below) and, run again, resumes after it.\n",
    "torture": "\nThe writers, readers and service of a torture run are its own (a temporary home and "
    "directory), whatever service is running. docs/reliability.md has the figures of a long run.\n",
    "demo": "\nThe demo's reader busy-polls (`--wait spin`, the default) for the lowest latency: it keeps "
    "one core at 100% while it runs; `--wait backoff` spares the core at some latency. "
    "Here a service was running already; with none, the demo starts one in a temporary home and "
    "says so (`demo: started service pid ...`). `--fast` sends 100,000 frames flat out and ends with a "
    "latency histogram.\n",
}


def run(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, env=env, timeout=120
    )
    lines = (out.stdout + out.stderr).rstrip().splitlines()
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 3] + ["..."] + lines[-2:]
    return "\n".join(lines)


HEAVY = {"demo", "bench", "torture", "export", "replay"}


def kept_sections() -> dict[str, str]:
    """The sections of the current docs/cli.md, by command."""
    parts = OUT.read_text().split("\n## mmipc ")[1:] if OUT.exists() else []
    return {part.split("\n", 1)[0]: "## mmipc " + part for part in parts}


def main(only: set[str] | None = None) -> None:
    kept = kept_sections() if only else {}
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    parsers: dict[str, Any] = dict(sub.choices or {})
    with tempfile.TemporaryDirectory() as tmp:
        md, home = os.path.join(tmp, "md"), os.path.join(tmp, "home")
        env = {**os.environ, "MMIPC_HOME": home, "COLUMNS": "100"}
        service = subprocess.Popen(
            [sys.executable, "-m", "mmipc", "service", "--quiet"], env=env, stdout=subprocess.PIPE
        )
        assert service.stdout is not None
        service.stdout.readline()
        sections = []
        try:
            keeper = subprocess.Popen(
                [sys.executable, "-c", _KEEP_READER.format(md=md)],
                env=env,
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE,
            )
            for command, example in EXAMPLES:
                if command == "status":
                    assert keeper.stdout is not None
                    keeper.stdout.readline()
                if only and command not in only and command in kept:
                    if command not in HEAVY:
                        run([a.format(md=md) for a in example], env)  # later examples need its effects
                    sections.append(kept[command].rstrip("\n") + "\n")
                    continue
                args = [a.format(md=md) for a in example]
                shown = run(args, env).replace(md, "/data/md").replace(home, "/run/mmipc")
                sections.append(_section(command, parsers[command], example, shown) + NOTES.get(command, ""))
            keeper.terminate()
        finally:
            service.terminate()
            service.wait()
    OUT.write_text(_HEADER + "\n".join(sections))


# A reader that stays registered while `mmipc status` runs, so the status has something to show.
_KEEP_READER = (
    "import sys; from mmipc import Reader, Writer; "
    "w = Writer.create({md!r}, 'ctp.orders'); w.write(b'order'); "
    "r = Reader.create('strategy-1'); r.add_journal({md!r}, 'ctp.rb'); r.add_journal({md!r}, 'ctp.orders'); "
    "print('ready', flush=True); sys.stdin.read()"
)

_HEADER = """# The `mmipc` command

Generated by `python docs/make_cli_md.py` from the parsers and from real runs, so it cannot drift
from the code. Every command also has `--help`. Long outputs are cut (`...`); paths are shown as
`/data/md` (journals) and `/run/mmipc` (the service home).

The same rules hold for every command:

- **Journals** are named `DIR NAME [NAME ...]`. A NAME with a slash is a path to a journal in
  another directory (`mmipc read /data/md ctp.rb /data/td/orders`). The old `--journal DIR NAME`
  still works, with a deprecation warning on stderr.
- **Service home**: `--home DIR` on every command that talks to the service, else `$MMIPC_HOME`,
  else a per-user directory. `--standalone` runs a writer or reader without a service.
- **CPU pinning**: `--cpu N` (`--cpu N,M` for the two processes of `demo` and `bench`).
- **`--json`**: machine-readable output on stdout and nothing else there (`ls`, `inspect`, `check`,
  `status`, `tail`, `torture`, `bench`); progress and messages go to stderr.
- **Exit codes**: 0 done, 1 a runtime error (missing directory or journal, no service, corrupt page),
  2 bad usage, 130 Ctrl-C (after printing the summary so far), 141 stdout closed early. Errors are one
  line on stderr that says what was wrong and what to do; never a traceback.
- **Numbers** are checked when parsed: a negative count, rate or page is refused before anything runs.

"""


def _section(command: str, parser: object, example: list[str], shown: str) -> str:
    description = getattr(parser, "description", "") or ""
    usage = parser.format_usage().strip()  # type: ignore[attr-defined]
    example_line = "mmipc " + " ".join(a.replace("{md}", "/data/md") for a in example)
    return (
        f"## mmipc {command}\n\n{description}\n\n```\n{usage}\n```\n\n```\n$ {example_line}\n{shown}\n```\n"
    )


if __name__ == "__main__":
    main(set(sys.argv[1:]) or None)
