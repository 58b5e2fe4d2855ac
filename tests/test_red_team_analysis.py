"""Breaks of the self-describing journals and `mmipc.analysis` found by a hostile tester (red team),
each kept as a test that failed before its fix.

Real processes, real files: journals are written by real writers, schema files are written (or
damaged) on disk as a careless or hostile user would, and the commands run as `python -m mmipc`
child processes.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmipc import CorruptJournalError, StorageError, UsageError, Writer

# .ci/run: native pass only (analysis and export read the pages with numpy and check schemas in
# Python, whatever the backend)
pytestmark = pytest.mark.once

pa = pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow) is not installed")
analysis = pytest.importorskip("mmipc.analysis")

BASE = 1_700_000_000_000_000_000
FORMATS = ("parquet", "arrow", "csv", "npy")


def mmipc(*args: str, fsize: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run one command; `fsize` caps the size of the files it may grow (RLIMIT_FSIZE)."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "mmipc", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        preexec_fn=limit,
    )


def declared(jdir: str, schema: Any, payloads: list[bytes], msg_type: int = 5) -> None:
    """A journal `md` whose writer declares `schema` for `msg_type` and writes `payloads`."""
    with Writer.create(jdir, "md", service=None, schemas={msg_type: schema}) as writer:
        for i, payload in enumerate(payloads):
            writer.write_at(payload, BASE + i, msg_type=msg_type)


def planted(jdir: str, layout: dict[str, Any], payloads: list[bytes], msg_type: int = 5) -> None:
    """A journal `md` of `payloads` whose schema file, written by hand, declares `layout`."""
    with Writer.create(jdir, "md", service=None) as writer:
        for i, payload in enumerate(payloads):
            writer.write_at(payload, BASE + i, msg_type=msg_type)
    document = {"version": 1, "types": {str(msg_type): layout}}
    Path(jdir, "md.schema.json").write_text(json.dumps(document))


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert "internal error" not in line and "Traceback" not in line, line
    return line


# -- export ------------------------------------------------------------------------------------------


def test_npy_export_of_a_layout_with_non_latin1_field_names(jdir: str, tmp_path: Path) -> None:
    """A numpy dtype with Chinese field names (a CTP user's own struct) exported to Parquet, Arrow and
    CSV, but `--format npy` stopped with "internal error: UnicodeEncodeError": the .npy header was
    encoded as Latin-1, which .npy format 2.0 requires; format 3.0 is UTF-8."""
    layout = np.dtype([("价格", "<f8"), ("数量", "<i4")])
    declared(jdir, layout, [np.array([(3700.5, 7)], layout).tobytes()])
    out = str(tmp_path / "md.npy")
    done = mmipc("export", jdir, "md", "-o", out)
    assert done.returncode == 0, done.stderr
    rows = np.load(out)
    assert rows["价格"].tolist() == [3700.5] and rows["数量"].tolist() == [7]


def test_npy_export_of_overlapping_fields_is_refused_before_writing(jdir: str, tmp_path: Path) -> None:
    """A layout whose fields overlap (a C union, declared as a numpy dtype) exports to Parquet, Arrow
    and CSV, but `--format npy` stopped with "internal error: ValueError: dtype.descr is not defined":
    .npy cannot describe such a dtype. It is a usage error, said before any file is made."""
    layout = np.dtype(
        {"names": ["price", "raw"], "formats": ["<f8", "<u8"], "offsets": [0, 0], "itemsize": 8}
    )
    declared(jdir, layout, [np.array([(1.5, 0)], layout).tobytes()])
    out = tmp_path / "md.npy"
    line = one_line_error(mmipc("export", jdir, "md", "-o", str(out)))
    assert "overlap" in line and "parquet" in line, line
    assert sorted(os.listdir(tmp_path)) == [Path(jdir).name]
    for fmt in ("parquet", "arrow", "csv"):
        assert mmipc("export", jdir, "md", "-o", str(tmp_path / f"md.{fmt}")).returncode == 0


# -- hostile schema files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["bid\udcff", "bid\nask=0.0 2023-01-01 forged line"], ids=["non-utf8", "newline"]
)
def test_a_field_name_that_is_not_printable_text_is_a_bad_schema_file(
    jdir: str, tmp_path: Path, name: str
) -> None:
    """A schema file naming a field with bytes that are not UTF-8 (JSON "\\udcff") loaded, then
    `to_arrow` and every export but .npy stopped with "internal error: UnicodeEncodeError"; a name
    holding a newline let a schema file forge lines of `tail`'s output. Both are bad schema files,
    and a writer cannot declare them."""
    layout = {"name": "x", "size": 8, "fields": [{"name": name, "offset": 0, "type": "f8"}]}
    planted(jdir, layout, [bytes(8)])
    with pytest.raises(CorruptJournalError, match="bad schema file"):
        analysis.to_arrow(jdir, "md")
    line = one_line_error(mmipc("export", jdir, "md", "-o", str(tmp_path / "md.parquet")))
    assert "bad schema file" in line and "printable" in line, line
    assert "bad schema file" in one_line_error(mmipc("tail", jdir, "md", "--no-follow"))

    dtype = np.dtype([(name, "<f8")])
    with pytest.raises(UsageError, match="printable"):
        Writer.create(str(tmp_path / "other"), "md", service=None, schemas={5: dtype})


def nested(levels: int) -> dict[str, Any]:
    """A layout of 8 bytes: a double inside `levels` structs, each inside the next."""
    layout: dict[str, Any] = {"name": "x", "size": 8, "fields": [{"name": "a", "offset": 0, "type": "f8"}]}
    for _ in range(levels):
        layout = {
            "name": "x",
            "size": 8,
            "fields": [{"name": "a", "offset": 0, "type": "struct", "struct": layout}],
        }
    return layout


def test_a_schema_nested_too_deep_is_a_bad_schema_file(jdir: str, tmp_path: Path) -> None:
    """A schema file of structs nested 300 deep (well under the JSON parser's limit) loaded, then
    to_numpy, to_arrow and every export stopped with "internal error: RecursionError" while
    building the numpy dtype. Nesting is bounded: deeper is a bad schema file, for every tool."""
    planted(jdir, nested(300), [bytes(8)])
    with pytest.raises(CorruptJournalError, match="bad schema file.*nested"):
        analysis.to_numpy(jdir, "md")
    for fmt in FORMATS:
        line = one_line_error(mmipc("export", jdir, "md", "-o", str(tmp_path / f"md.{fmt}")))
        assert "bad schema file" in line and "nested" in line, line
    shallow = str(tmp_path / "shallow")
    planted(shallow, nested(16), [bytes(8)])
    assert len(analysis.to_numpy(shallow, "md")) == 1


def test_a_nested_struct_without_fields_is_refused(jdir: str, tmp_path: Path) -> None:
    """A nested struct with no field (8 bytes of reserved space, declared as an empty numpy dtype)
    was declared and loaded, then to_arrow and the Parquet, Arrow and CSV exports stopped with
    "internal error: ValueError: Arrays were not all the same length" (and Parquet cannot store an
    empty struct at all). A writer refuses it; a schema file holding it is a bad schema file."""
    empty = {"name": "reserved", "size": 8, "fields": []}
    reserved = {"name": "reserved", "offset": 8, "type": "struct", "struct": empty}
    layout = {"name": "x", "size": 16, "fields": [{"name": "a", "offset": 0, "type": "f8"}, reserved]}
    planted(jdir, layout, [bytes(16)])
    with pytest.raises(CorruptJournalError, match="bad schema file.*no field"):
        analysis.to_arrow(jdir, "md")
    for fmt in FORMATS:
        line = one_line_error(mmipc("export", jdir, "md", "-o", str(tmp_path / f"md.{fmt}")))
        assert "bad schema file" in line and "no field" in line, line
    dtype = np.dtype([("a", "<f8"), ("reserved", np.dtype({"names": [], "formats": [], "itemsize": 8}))])
    with pytest.raises(UsageError, match="no field"):
        Writer.create(str(tmp_path / "other"), "md", service=None, schemas={5: dtype})


# -- write --schema -------------------------------------------------------------------------------------


def test_write_schema_from_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """`mmipc write --schema 5=layout.json` where layout.json is a FIFO (or a device) blocked forever
    in open(), before any frame: the command hung. A layout file must be a regular file."""
    fifo = tmp_path / "layout.json"
    os.mkfifo(fifo)
    jdir = str(tmp_path / "day")
    done = mmipc(
        "write",
        jdir,
        "md",
        "--count",
        "1",
        "--rate",
        "0",
        "--standalone",
        "--schema",
        f"5={fifo}",
        timeout=120,
    )
    line = one_line_error(done, code=2)
    assert "not a regular file" in line and str(fifo) in line, line
    assert not os.path.exists(jdir)


# -- export to a full disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_an_export_whose_sidecar_does_not_fit_leaves_no_file_behind(
    jdir: str, tmp_path: Path, fmt: str
) -> None:
    """The export itself fit on the disk but its sidecar PATH.meta.json did not: the command said
    so, and left `PATH.meta.json.PID.tmp`, a half-written file, on the full disk. (The file-size
    limit stands in for a full disk: the same ENOSPC-like failure, on this machine's own disk.)"""
    declared(jdir, "ctp", [bytes(analysis._scan.numpy_dtype(analysis._scan.to_struct("ctp")).itemsize)])
    out = tmp_path / "out"
    out.mkdir()
    line = one_line_error(mmipc("export", jdir, "md", "-o", str(out / f"md.{fmt}"), fsize=2048))
    assert "cannot write" in line and "too large" in line, line
    assert os.listdir(out) == []


# -- frames that do not follow their layout -----------------------------------------------------------


def test_a_frame_that_does_not_fit_its_layout_is_not_called_a_damaged_page(jdir: str, tmp_path: Path) -> None:
    """A careless writer declared msg_type 101 as a CTP tick and then wrote one tick 8 bytes short.
    The export stopped with "corrupt journal page ...; move the damaged page aside to read past it",
    while `mmipc check` said the page is intact: following that advice loses every good frame of the
    page. The page is fine; the frame does not fit the layout, and the error says that, and how to
    read around it. (The same for a wrong layout given with --struct.)"""
    size = analysis._scan.numpy_dtype(analysis._scan.to_struct("ctp")).itemsize
    with Writer.create(jdir, "md", service=None, schemas={101: "ctp"}) as writer:
        for i in range(3):
            writer.write_at(bytes(size), BASE + i, msg_type=101)
        writer.write_at(bytes(size - 8), BASE + 10, msg_type=101)
    assert mmipc("check", jdir, "md").returncode == 0
    for extra in ([], ["--struct", "ctp-v6.6.1"]):
        line = one_line_error(mmipc("export", jdir, "md", "-o", str(tmp_path / "md.csv"), *extra))
        assert "does not fit" in line and "at offset" in line, line
        assert "move the damaged page aside" not in line and "corrupt" not in line, line
    with pytest.raises(UsageError, match="does not fit"):
        analysis.to_numpy(jdir, "md")
    done = mmipc("export", jdir, "md", "-o", str(tmp_path / "md.csv"), "--until", str(BASE + 9))
    assert done.returncode == 0 and "exported 3 frame(s)" in done.stdout, done.stderr


# -- hostile selections ---------------------------------------------------------------------------------


def test_selections_of_the_wrong_kind_are_usage_errors(jdir: str, tmp_path: Path) -> None:
    """`msg_type=np.int64(101)` (a value taken from a dataframe) was refused while since and until
    take numpy ints; `msg_type=2**70` and `--msg-type 1180591620717411303424` were accepted and
    "exported 0 frame(s) of msg_type 1180591620717411303424"; names=None and a bytes directory
    raised a bare TypeError."""
    size = analysis._scan.numpy_dtype(analysis._scan.to_struct("ctp")).itemsize
    declared(jdir, "ctp", [bytes(size)] * 3, msg_type=101)
    assert len(analysis.to_numpy(jdir, "md", msg_type=np.int64(101))) == 3
    for bad in (2**70, 1 << 32, -1, 1.0, True, "101"):
        with pytest.raises(UsageError, match="msg_type must be"):
            analysis.to_numpy(jdir, "md", msg_type=bad, schema="ctp")
    with pytest.raises(UsageError, match="journal names"):
        analysis.to_numpy(jdir, None)
    with pytest.raises(UsageError, match="directory"):
        analysis.to_numpy(jdir.encode(), "md")
    line = one_line_error(
        mmipc("export", jdir, "md", "-o", str(tmp_path / "x.csv"), "--msg-type", str(2**70)), 2
    )
    assert "msg-type" in line, line


# -- --json output -------------------------------------------------------------------------------------


def strict_json(text: str) -> Any:
    """JSON as the standard defines it: NaN and Infinity are not part of it (jq, Go, browsers)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_of_non_finite_floats_is_still_json(jdir: str) -> None:
    """A declared double holding NaN (a price not set yet) made `tail --json` and `inspect --json`
    print `NaN` and `Infinity`, which no strict JSON parser accepts (jq, Go, JavaScript): one such
    tick broke the whole pipe. They are written as the strings "NaN", "Infinity", "-Infinity"."""
    layout = np.dtype([("bid", "<f8"), ("ask", "<f8"), ("low", "<f4"), ("qty", "<i4")])
    ticks = np.array([(float("nan"), float("inf"), float("-inf"), 3)], layout)
    declared(jdir, layout, [ticks.tobytes()])
    tailed = mmipc("tail", jdir, "md", "--no-follow", "--json")
    assert tailed.returncode == 0, tailed.stderr
    [line] = tailed.stdout.splitlines()
    want = {"bid": "NaN", "ask": "Infinity", "low": "-Infinity", "qty": 3}
    assert strict_json(line)["payload"] == want
    inspected = mmipc("inspect", jdir, "md", "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert strict_json(inspected.stdout)["frames"][0]["payload"] == want


# -- exports that fail half way: the file asked for is never half-written ---------------------------------


def ticks(jdir: str, count: int) -> None:
    from mmipc.ctp import LAYOUTS

    tick, rng = LAYOUTS["ctp"](), random.Random(1)  # random prices: no format compresses them away
    with Writer.create(jdir, "md", service=None, schemas={101: "ctp"}) as writer:
        for i in range(count):
            tick.InstrumentID, tick.LastPrice, tick.Volume = b"rb%04d" % (i % 7), rng.random(), i
            writer.write_at(tick, BASE + i, msg_type=101)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 64 KiB tmpfs: a real full disk (needs root to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_to_a_full_disk_fails_cleanly_and_keeps_the_old_file(
    jdir: str, small_disk: Path, fmt: str
) -> None:
    """On a full disk every format fails with one line naming the disk's error; the export it was
    to replace (--force) is intact, and no temporary is left on the disk."""
    ticks(jdir, 20_000)  # about 8 MB of ticks: no format fits in 64 KiB
    out = small_disk / f"md.{fmt}"
    out.write_bytes(b"the old export")
    line = one_line_error(mmipc("export", jdir, "md", "-o", str(out), "--force"))
    assert "cannot write" in line and "No space left on device" in line, line
    assert out.read_bytes() == b"the old export"
    assert os.listdir(small_disk) == [out.name]


def test_a_killed_export_leaves_the_old_file_under_its_name(jdir: str, tmp_path: Path) -> None:
    """kill -9 in the middle of an export: the file asked for still holds the old export (the new
    one is written beside it, under a temporary name, and renamed only when complete)."""
    from conftest import wait_for

    ticks(jdir, 100_000)
    out = tmp_path / "md.csv"
    for _ in range(5):  # a machine fast enough to finish before the kill gets another try
        out.write_bytes(b"the old export")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mmipc", "export", jdir, "md", "-o", str(out), "--force"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        tmp = tmp_path / f".md.csv.{proc.pid}.tmp"
        wait_for(
            lambda tmp=tmp, proc=proc: tmp.exists() or proc.poll() is not None,  # type: ignore[misc]
            timeout=120,
            what="the export's temporary",
        )
        proc.kill()
        proc.wait(timeout=60)
        if proc.returncode == -9:
            break
    assert proc.returncode == -9, "every export finished before it could be killed"
    assert out.read_bytes() == b"the old export"


# -- a schema file planted by another user -------------------------------------------------------------


def test_a_writer_refuses_a_schema_file_another_user_planted(tmp_path: Path) -> None:
    """In a directory others can write, another user planted md.schema.json declaring msg_type 7
    before the writer started. The writer merged the stranger's layout into its own file, and every
    tool then decoded msg_type 7 as the stranger chose (a writer refuses a lock or page file of
    another user for the same reason). It now refuses the file, naming its owner."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    jdir = tmp_path / "day"
    jdir.mkdir()
    stranger = {"name": "Forged", "size": 8, "fields": [{"name": "price", "offset": 0, "type": "f8"}]}
    path = jdir / "md.schema.json"
    path.write_text(json.dumps({"version": 1, "types": {"7": stranger}}))
    os.chown(path, 65534, 65534)
    with pytest.raises(StorageError, match="owned by uid 65534"):
        Writer.create(str(jdir), "md", service=None, schemas={101: "ctp"})
    assert os.stat(path).st_uid == 65534 and "Forged" in path.read_text()


def test_a_time_range_that_ends_before_it_starts_is_a_usage_error(jdir: str, tmp_path: Path) -> None:
    """`export --since 10:00 --until 09:00` (the two swapped) "exported 0 frame(s)" with exit 0 and
    wrote an empty file, and to_numpy returned an empty array: a typo passed for an empty day."""
    size = analysis._scan.numpy_dtype(analysis._scan.to_struct("ctp")).itemsize
    declared(jdir, "ctp", [bytes(size)] * 3, msg_type=101)
    with pytest.raises(UsageError, match="since .* is after until"):
        analysis.to_numpy(jdir, "md", since=BASE + 2, until=BASE + 1)
    out = tmp_path / "md.csv"
    line = one_line_error(
        mmipc("export", jdir, "md", "-o", str(out), "--since", str(BASE + 2), "--until", str(BASE + 1))
    )
    assert "is after until" in line, line
    assert not out.exists()
    assert len(analysis.to_numpy(jdir, "md", since=BASE + 1, until=BASE + 1)) == 1


@pytest.mark.parametrize("command", ["replay", "tail"])
def test_replay_and_tail_refuse_a_time_range_that_ends_before_it_starts(
    jdir: str, tmp_path: Path, command: str
) -> None:
    """`replay --since B --until A` with A < B "replayed 0 frame(s)" and exit 0, having created the
    target journal; `tail --no-follow` printed nothing and exited 0. Swapped flags are bad usage."""
    declared(jdir, "ctp", [bytes(analysis._scan.numpy_dtype(analysis._scan.to_struct("ctp")).itemsize)])
    to = str(tmp_path / "copy")
    extra = ["--to", to, "--speed", "max", "--standalone"] if command == "replay" else ["--no-follow"]
    done = mmipc(command, jdir, "md", "--since", str(BASE + 2), "--until", str(BASE + 1), *extra)
    line = one_line_error(done, code=2)
    assert "--since" in line and "after --until" in line, line
    assert not os.path.exists(to)


# -- one layout declared in two ways -----------------------------------------------------------------------


def test_one_layout_declared_as_a_ctp_name_and_as_its_numpy_dtype_is_the_same_layout(jdir: str) -> None:
    """The SHFE feed declared msg_type 101 as "ctp", the DCE feed as `mmipc.ctp.numpy_dtype()`, the
    same bytes: merging them failed with "the journals declare different layouts", and a writer
    restarted with the dtype was refused ("already declares msg_type 101 as DepthMarketDataV636, not
    record"), because the structs' names differ. A struct's name is for people: the bytes decide."""
    from mmipc import ctp

    size = ctp.numpy_dtype().itemsize
    with Writer.create(jdir, "shfe", service=None, schemas={101: "ctp"}) as writer:
        writer.write_at(bytes(size), BASE, msg_type=101)
    with Writer.create(jdir, "dce", service=None, schemas={101: ctp.numpy_dtype()}) as writer:
        writer.write_at(bytes(size), BASE + 1, msg_type=101)
    assert len(analysis.to_numpy(jdir, ["shfe", "dce"])) == 2
    with Writer.create(jdir, "shfe", service=None, schemas={101: ctp.numpy_dtype()}) as writer:
        writer.write_at(bytes(size), BASE + 2, msg_type=101)
    assert len(analysis.to_numpy(jdir, "shfe")) == 2
    other = np.dtype([("price", "<f8")] + [(f"pad{i}", "<u1") for i in range(size - 8)])
    with pytest.raises(UsageError, match="already declares msg_type 101"):
        Writer.create(jdir, "shfe", service=None, schemas={101: other})


def test_a_schema_given_to_the_analysis_functions_is_checked_like_a_declared_one(jdir: str) -> None:
    """`schema=` bypassed the checks a declared layout goes through: a dtype with a nested struct of
    no field, or a field name that is not UTF-8, stopped `to_arrow` with a bare ValueError or
    UnicodeEncodeError after the journal was read."""
    declared(jdir, np.dtype([("a", "<f8"), ("b", "<f8")]), [bytes(16)])
    empty = np.dtype({"names": [], "formats": [], "itemsize": 8})
    for bad in (np.dtype([("a", "<f8"), ("reserved", empty)]), np.dtype([("a\udcff", "<f8"), ("b", "<f8")])):
        with pytest.raises(UsageError, match="no field|printable"):
            analysis.to_arrow(jdir, "md", schema=bad)
