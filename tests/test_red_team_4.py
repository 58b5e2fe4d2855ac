"""Red team 4: attacks on what was merged on 2026-11-27 (the native refill of payload views, the
native merge's own Frames, the sweep of dead readers' bells, the writer's ring of a bell's FIFO),
as a hostile or careless local user would make them: real page files, real bells, real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmipc import Writer
from mmipc.journal import _bell


def _sleeping_bell(directory: Path, base: str, sleeping: int) -> str:
    """A bell file as a reader makes one (8,192 bytes), whose reader says it sleeps: 2 means an
    asyncio reader, woken by a byte into the bell's FIFO, ``BELL.fifo``."""
    path = directory / base
    bell = bytearray(_bell.BELL_SIZE)
    bell[_bell.SLEEPING : _bell.SLEEPING + 4] = sleeping.to_bytes(4, "little")
    path.write_bytes(bell)
    return str(path)


def _list_bell(jdir: str, name: str, bell: str) -> None:
    """Put `bell` in journal `name`'s list, as a live reader (this process) would."""
    assert _bell._edit(jdir, name, lambda mm: _bell._claim(mm, bell, 0)) == 0


@pytest.mark.parametrize("kind", ["regular file", "symlink to a file"])
def test_a_writer_never_writes_into_a_bell_fifo_that_is_not_a_fifo(
    jdir: str, tmp_path: Path, kind: str
) -> None:
    """A slot of NAME.bells (anyone who may write the list may write it) names a bell whose FIFO is
    a regular file, or a link to one (say the user's ~/.bashrc): the writer's ring must not open it
    for writing, let alone overwrite its first byte with ``!``."""
    bells = tmp_path / "bells"
    bells.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"precious data")
    bell = _sleeping_bell(bells, "mmipc-bell.1.0.0.0", sleeping=2)
    if kind == "regular file":
        Path(bell + ".fifo").write_bytes(victim.read_bytes())
        victim = Path(bell + ".fifo")
    else:
        os.symlink(victim, bell + ".fifo")
    _list_bell(jdir, "j", bell)
    with Writer.create(jdir, "j", service=None) as writer:
        for _ in range(3):
            writer.write(b"ring")
            with open(bell, "r+b") as f:  # asleep again: the writer rings once per sleep
                f.seek(_bell.SLEEPING)
                f.write((2).to_bytes(4, "little"))
                f.seek(_bell.FLAGS)
                f.write(bytes(4))
    assert victim.read_bytes() == b"precious data"
