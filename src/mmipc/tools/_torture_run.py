"""The torture harness's conductor: starts the processes, injects faults, collects the verdict.

See `mmipc.tools.torture` for what is run and checked; this module only orchestrates real processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .. import MmipcError, Reader
from ..journal._files import list_pages, page_path
from ..service._orphans import preexec_die_with_me
from ..service._retention import Policy, holds, prune
from ..service._service import spawn_service
from . import check_journal
from .torture import DATA, END, check_payload

FAULTS = (
    "kill_writer",
    "kill_reader",
    "kill_durable_reader",
    "kill_service",
    "stop_cont",
    "unwritable_page",
    "fsize_limit",
    "prune",
    "stall_reader",
)
RETAIN_INTERVAL = "0.1"  # seconds between the service's retention passes in a torture run


class HarnessError(Exception):
    """The harness itself failed (not mmipc): the run proves nothing either way."""


@dataclass
class Report:
    seed: int
    seconds: float
    faults: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # drawn before their target existed
    frames_written: int = 0
    frames_verified: int = 0
    page_switches: int = 0
    write_failures: int = 0
    live_inversions: int = 0
    durable_verified: int = 0
    durable_repeats: int = 0
    durable_restarts: int = 0
    retain_pages: int = 0
    pages_removed: int = 0
    pruned_by_hand: int = 0
    frames_removed_while_away: int = 0
    violations: list[str] = field(default_factory=list)

    def text(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return "\n".join(
            [
                f"torture: seed {self.seed}, {self.seconds:.0f} s",
                f"  frames written {self.frames_written:,}, verified {self.frames_verified:,} "
                "(summed over the readers: each read every frame exactly once, but those retention "
                "removed before it got there)",
                f"  durable reader: verified {self.durable_verified:,} over {self.durable_restarts} "
                f"restarts, seen again after a restart {self.durable_repeats:,} (frames after its last "
                "commit: allowed; any before it is a violation)",
                f"  retention: at most {self.retain_pages or 'unlimited'} pages per journal; pages removed "
                f"{self.pages_removed:,} ({self.pruned_by_hand:,} by the prune fault); frames removed "
                f"before a reader (re)started {self.frames_removed_while_away:,} (allowed)",
                f"  page switches {self.page_switches:,}; "
                f"page creations refused and retried {self.write_failures:,}",
                f"  faults survived: {faults}",
                f"  faults skipped (no target yet): {skipped}",
                f"  live cross-journal timestamp inversions seen by readers: {self.live_inversions:,} "
                "(not a violation)",
                f"  violations: {len(self.violations)}",
                *(f"    - {v}" for v in self.violations[:20]),
            ]
        )


class Torture:
    def __init__(
        self, seconds: float, seed: int, writers: int, readers: int, page_size: int, retain_pages: int = 0
    ) -> None:
        self.seconds, self.rng = seconds, random.Random(seed)
        self.writers, self.readers, self.page_size = writers, readers, page_size
        self.retain_pages = retain_pages
        self.root = tempfile.mkdtemp(prefix="mmipc-torture-")
        self.journals = os.path.join(self.root, "journals")
        self.env = {**os.environ, "MMIPC_HOME": os.path.join(self.root, "home")}
        self.report = Report(seed, seconds, retain_pages=retain_pages)
        self.service: subprocess.Popen[str] | None = None
        self.wprocs: list[subprocess.Popen[str]] = []
        self.rprocs: list[subprocess.Popen[str]] = []
        self.dproc: subprocess.Popen[str] | None = None
        self.stopped: list[subprocess.Popen[str]] = []
        self.logs: dict[int, str] = {}

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, args: list[str]) -> subprocess.Popen[str]:
        log = os.path.join(self.root, f"{args[0]}{args[2]}-{args[-1]}.log")  # its error, for the verdict
        with open(log, "a") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mmipc.tools.torture", *args],
                env=self.env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=preexec_die_with_me(),
            )
        self.logs[proc.pid] = log
        return proc

    def start_service(self) -> None:
        retention = ("--retain-pages", str(self.retain_pages), "--retain-interval", RETAIN_INTERVAL)
        options = retention if self.retain_pages else ()
        self.service = spawn_service(self.env["MMIPC_HOME"], stderr=subprocess.DEVNULL, options=options)

    def start_writer(self, i: int, fsize: int = 0) -> subprocess.Popen[str]:
        return self._spawn(["writer", self.journals, str(i), str(self.page_size), str(fsize)])

    def start_reader(self, i: int, resume: bool) -> subprocess.Popen[str]:
        state = os.path.join(self.root, f"reader{i}.json")
        return self._spawn(
            ["reader", self.journals, str(i), str(self.writers), state, "saved" if resume else "start"]
        )

    def start_durable_reader(self) -> subprocess.Popen[str]:
        state = os.path.join(self.root, "durable0.json")
        return self._spawn(["reader", self.journals, "0", str(self.writers), state, "durable"])

    def run(self) -> Report:
        try:
            self.start_service()
            self.wprocs = [self.start_writer(i) for i in range(self.writers)]
            self.rprocs = [self.start_reader(i, resume=False) for i in range(self.readers)]
            self.dproc = self.start_durable_reader()
            deadline = time.monotonic() + self.seconds
            deck: list[str] = []
            while time.monotonic() < deadline:
                time.sleep(self.rng.uniform(0.05, 0.4))
                deck = deck or self.rng.sample(FAULTS, len(FAULTS))
                self.inject(deck.pop())
            self.finish()
            if self.service is not None:
                _kill(self.service)  # its retention must not remove pages under the replay below
            self.verify()
        finally:
            others = [p for p in (self.service, self.dproc) if p is not None]
            for proc in [*self.wprocs, *self.rprocs, *others]:
                _kill(proc)
            shutil.rmtree(self.root, ignore_errors=True)
        return self.report

    # -- faults --------------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        """Inject `fault` if its target exists; a failure of the harness itself is a `HarnessError`."""
        try:
            injected = getattr(self, fault)()
        except OSError as exc:
            raise HarnessError(f"the harness could not inject {fault}: {exc}") from exc
        (self.report.skipped if injected is False else self.report.faults)[fault] += 1

    def _pause(self) -> None:
        time.sleep(self.rng.uniform(0.02, 0.3))

    def kill_writer(self, fsize: int = 0, index: int | None = None) -> None:
        i = self.rng.randrange(self.writers) if index is None else index
        _kill(self.wprocs[i])
        self._pause()
        self.wprocs[i] = self.start_writer(i, fsize)

    def fsize_limit(self) -> bool | None:
        """Restart a writer unable to grow any file past half a page: it writes on in its page, and
        every page it then tries to create is refused. Not one without a page yet: it could never
        create its first, and the readers would wait for its end frame until they time out."""
        i = self.rng.randrange(self.writers)
        if not list_pages(self.journals, f"w{i}"):
            return False
        self.kill_writer(fsize=self.page_size // 2, index=i)
        return None

    def kill_reader(self) -> None:
        i = self.rng.randrange(self.readers)
        _kill(self.rprocs[i])
        self._pause()
        self.rprocs[i] = self.start_reader(i, resume=self.rng.random() < 0.5)

    def kill_durable_reader(self) -> None:
        """SIGKILL the durable reader; while it is dead, its cursor file alone holds its pages."""
        assert self.dproc is not None
        _kill(self.dproc)
        self._pause()
        if self.retain_pages:
            self._prune_around("d0")
        self.dproc = self.start_durable_reader()

    def kill_service(self) -> None:
        assert self.service is not None
        _kill(self.service)
        self._pause()
        self.start_service()

    def stop_cont(self) -> None:
        assert self.service is not None
        proc = self.rng.choice([*self.wprocs, *self.rprocs, self.service])
        proc.send_signal(signal.SIGSTOP)
        self._pause()
        proc.send_signal(signal.SIGCONT)

    def stall_reader(self) -> bool:
        """SIGSTOP a live reader until it is well behind, prune every journal meanwhile (the service
        prunes too), and check that every page from its published one on is still there."""
        if not self.retain_pages:
            return False
        i = self.rng.randrange(self.readers)
        self.rprocs[i].send_signal(signal.SIGSTOP)
        try:
            time.sleep(self.rng.uniform(0.2, 0.6))
            self._prune_around(f"r{i}")
        finally:
            self.rprocs[i].send_signal(signal.SIGCONT)
        return True

    def _prune_around(self, reader: str) -> None:
        """With `reader` stopped or dead (its position cannot move), prune every journal and check
        that the pages it holds (its published or committed page and every later one) survived."""
        for w in range(self.writers):
            name = f"w{w}"
            held = [
                h["page_no"]
                for h in holds(self.env["MMIPC_HOME"], self.journals, name)
                if h["reader"] == reader
            ]
            self._prune(name)
            pages = set(list_pages(self.journals, name))
            for page_no in held:
                gone = [p for p in range(page_no, max(pages, default=page_no) + 1) if p not in pages]
                if gone:
                    self.report.violations.append(
                        f"retention removed pages {gone} of {name} that {reader} holds"
                    )

    def unwritable_page(self) -> bool:
        name = f"w{self.rng.randrange(self.writers)}"
        pages = list_pages(self.journals, name)
        if not pages:
            return False  # its writer has not created the journal (or journals/) yet: nothing to block
        blocker = page_path(self.journals, name, pages[-1] + 1)
        try:
            os.mkdir(blocker)  # the next page cannot be created while a directory stands in its place
        except FileExistsError:
            return False
        time.sleep(self.rng.uniform(0.1, 0.5))
        os.rmdir(blocker)
        return True

    def prune(self) -> bool:
        """Retention by hand, as `mmipc prune` does it, racing the service's own passes."""
        return self._prune(f"w{self.rng.randrange(self.writers)}")

    def _prune(self, name: str) -> bool:
        if not self.retain_pages:
            return False
        policy = Policy(max_pages=max(1, self.retain_pages // 2))
        try:
            _, done = prune(self.env["MMIPC_HOME"], self.journals, name, policy, time.time_ns())
        except MmipcError:
            return False  # a page being created, or blocked by unwritable_page: retention skips it too
        self.report.pruned_by_hand += len(done)
        self._check_consecutive(name)
        return True

    def _check_consecutive(self, name: str) -> None:
        pages = [
            p for p in list_pages(self.journals, name) if os.path.isfile(page_path(self.journals, name, p))
        ]
        if pages and pages != list(range(pages[0], pages[0] + len(pages))):
            self.report.violations.append(f"retention left a hole in {name}: pages {pages}")

    # -- the verdict ---------------------------------------------------------------------------

    def finish(self) -> None:
        with open(os.path.join(self.root, "stop"), "w"):
            pass  # every writer appends its end frame and exits
        for i, proc in enumerate(self.wprocs):
            out = self._wait(proc, f"writer w{i}")
            done = [line.split() for line in out.splitlines() if line.startswith("done")]
            if done:
                self.report.frames_written += int(done[-1][1])
        for i, proc in enumerate(self.rprocs):
            out = self._wait(proc, f"reader r{i}")
            reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            if reports:
                self._judge_reader(reports[-1])
            else:
                self.report.violations.append(f"reader r{i} gave no report")
        if self.dproc is not None:
            self._judge_durable(self._wait(self.dproc, "durable reader d0"))

    def _judge_durable(self, out: str) -> None:
        reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if not reports:
            self.report.violations.append("durable reader d0 gave no report")
            return
        verified = self.report.frames_verified
        self._judge_reader(reports[-1])
        self.report.durable_verified = self.report.frames_verified - verified
        self.report.durable_repeats = reports[-1]["skipped"]
        self.report.durable_restarts = reports[-1]["restarts"]

    def _wait(self, proc: subprocess.Popen[str], what: str, timeout: float = 120) -> str:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.report.violations.append(f"{what} hung: no exit {timeout:.0f} s after it was told to finish")
            _kill(proc)
            return ""
        if proc.returncode != 0:
            self.report.violations.append(f"{what} exited {proc.returncode}: {self._last_error(proc)}")
        return out or ""

    def _last_error(self, proc: subprocess.Popen[str]) -> str:
        try:
            with open(self.logs[proc.pid]) as f:
                lines = f.read().strip().splitlines()
        except (KeyError, OSError):
            return "(no log)"
        return lines[-1][:300] if lines else "(nothing on stderr)"

    def _judge_reader(self, report: dict[str, Any]) -> None:
        self.report.live_inversions += report["inversions"]
        self.report.frames_removed_while_away += report["removed"]
        for error in report["errors"]:
            self.report.violations.append(f"reader r{report['reader']}: {error}")
        for w in range(self.writers):
            sent, got = report["ended"].get(str(w)), report["expected"][w]
            if sent != got:
                self.report.violations.append(f"reader r{report['reader']}: w{w} sent {sent}, verified {got}")
            self.report.frames_verified += got
        self.report.frames_verified -= report["removed"]  # counted in `got`, never read

    def verify(self) -> None:
        """Replay every journal from disk: gapless, merged in time order, and intact by `check`.
        An error of mmipc here is a finding (a violation), not a crash of the harness."""
        replay = Reader.create("torture-replay", service=None)
        try:
            for w in range(self.writers):
                self._check(replay, w)
            self._replay(replay)
        except MmipcError as exc:
            self.report.violations.append(f"replay: {type(exc).__name__}: {exc}")
        finally:
            replay.close()

    def _check(self, replay: Reader, w: int) -> None:
        result = check_journal(self.journals, f"w{w}")
        if not result.ok:
            self.report.violations.append(f"check w{w}: {result.problem}")
        pages = list_pages(self.journals, f"w{w}")
        self.report.page_switches += max(0, pages[-1] if pages else 0)
        self.report.pages_removed += pages[0] if pages else 0  # retention removes a prefix only
        self._check_consecutive(f"w{w}")
        replay.add_journal(self.journals, f"w{w}")

    def _replay(self, replay: Reader) -> None:
        expected: list[int | None] = [None] * self.writers  # retention: each starts at its oldest page
        last_nano = 0
        for frame in iter(replay.read, None):
            w = int(frame.journal.name[1:])
            if frame.nano < last_nano:
                self.report.violations.append(f"replay: merged order goes back in time at w{w}")
            last_nano = frame.nano
            if frame.msg_type == DATA:
                expected[w] = self._replayed(w, frame, expected[w])
            elif frame.msg_type == END:
                self.report.write_failures += int.from_bytes(frame.data[8:16], "little")

    def _replayed(self, w: int, frame: Any, expected: int | None) -> int | None:
        try:
            seq = check_payload(frame.data, w)
        except ValueError as exc:
            self.report.violations.append(f"replay: {exc}")
            return expected
        if expected is None:
            expected = seq if self.retain_pages else 0
        if seq != expected:
            self.report.violations.append(f"replay w{w}: seq {seq} where {expected} belongs")
        return seq + 1


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
