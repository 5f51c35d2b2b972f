"""Hostile situations that are not a file of the corpus: an option's value, the catalog's state, two
runs at once, an interrupt, a folder shared by two catalogs ... Each names the test that holds ccdcal to
what it does; ``docs/hostile-inputs.md`` lists them after the corpus's files (:func:`markdown`), and
``tests/robustness/test_corpus.py`` checks that each named test exists."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Situation:
    """One hostile situation.

    Attributes
    ----------
    name : str
        Short name (the table's first column).
    what : str
        The situation, in words.
    outcome : str
        What ccdcal does (the message, the exit status).
    test : str
        The test that checks it: ``tests/path/test_file.py::test_name``.
    """

    name: str
    what: str
    outcome: str
    test: str


SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "two-process-runs",
        "two `ccdcal process` on one SQLite catalog at once",
        "each light calibrated once; the other run's lights reported busy; both exit 0",
        "tests/robustness/test_concurrency.py::test_two_processes_on_one_sqlite_catalog",
    ),
    Situation(
        "not-a-catalog",
        "`--db` naming a database of another program",
        "one line naming it, exit 2; nothing written",
        "tests/cli/test_base.py::test_not_a_catalog_is_exit_2_without_traceback",
    ),
)


def markdown() -> list[str]:
    """The lines of the situations' table."""
    lines = [
        "",
        "## Situations",
        "",
        f"Hostile situations that are not files: {len(SITUATIONS)} cases, each held by the test named.",
        "",
        "| case | situation | what ccdcal does | test |",
        "|---|---|---|---|",
    ]
    for s in SITUATIONS:
        cells = [f"`{s.name}`", s.what, s.outcome, f"`{s.test}`"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines
