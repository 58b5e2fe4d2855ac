"""Red team 6: reader thread ownership and adopt(), the native merge, blocking waits and signals,
retention with live readers, the service and CLI under bad input, attacked as a careless or hostile
user would."""

from __future__ import annotations

from conftest import race_two_threads
from mmipc import Reader


def test_threads_closing_and_adding_journals_on_one_service_link_never_raise(jdir: str) -> None:
    """Every reader and writer of a process shares one link to the service. Its `forget` (a
    reader's remove_journal or close, a writer's close) iterated the registrations while another
    thread's `remember` (add_journal, a writer's page switch) added one: RuntimeError
    "dictionary changed size during iteration" out of remove_journal, seen within 100 rounds."""
    errors: list[str] = []

    def hammer(tag: str) -> None:
        with Reader.create(f"linked-{tag}") as reader:
            names = [f"{tag}{i}" for i in range(400)]
            for name in names:
                reader.add_journal(jdir, name)
            try:
                for round_ in range(1500):
                    if errors:
                        return
                    reader.remove_journal(jdir, names[round_ % len(names)])
                    reader.add_journal(jdir, names[round_ % len(names)])
            except RuntimeError as exc:
                errors.append(f"{tag}: {exc!r}")

    race_two_threads(hammer)
    assert errors == []
