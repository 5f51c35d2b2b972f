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
    Situation(
        "two-catalogs-one-folder",
        "`--db test.db` beside `./ccdcal.db`: both would write into the default `masters/` and `calibrated/`",
        "the second catalog is refused the first one's folders before writing anything: one line naming the "
        "folder, the owner's id and the fix, exit 2",
        "tests/masters/test_folders.py::test_a_second_catalog_in_the_same_project_is_refused_its_folders",
    ),
    Situation(
        "folder-before-markers",
        "a masters folder of ccdcal files and no `.ccdcal-catalog` (made before the markers)",
        "adopted by the catalog whose rows name its files; refused to any other, exit 2",
        "tests/masters/test_folders.py::test_folders_made_before_the_markers_are_adopted_by_their_catalog_only",
    ),
    Situation(
        "two-claims-at-once",
        "two catalogs claiming one new folder at the same moment",
        "one marker wins; the other catalog is refused, exit 2",
        "tests/files/test_ownership.py::test_two_catalogs_claiming_at_once_one_wins",
    ),
    Situation(
        "killed-after-publishing",
        "a run killed between giving a master or output its final name and recording it",
        "the next run removes the file (its journal proves it that run's) and writes it again under the "
        "same name",
        "tests/lights/test_claims.py::test_a_run_killed_after_publishing_a_file_leaves_the_proof_the_next_run_undoes",
    ),
    Situation(
        "killed-after-replacing",
        "a run killed after renaming a new output over a recorded one, before recording it",
        "the next run puts the recorded file back, then calibrates the light again",
        "tests/lights/test_claims.py::test_a_run_killed_after_replacing_an_output_gets_the_replaced_file_back",
    ),
    Situation(
        "foreign-files-after-a-dead-run",
        "another catalog's or a person's files in the folders of a run that died: under a name it had "
        "claimed, a master no row names, another catalog's journal",
        "left alone: recovery removes only what a journal of its own catalog and dead run proves",
        "tests/lights/test_claims.py::test_recovery_removes_no_file_that_no_journal_of_its_own_proves",
    ),
    Situation(
        "catalog-deleted-or-replaced",
        "the catalog's folder deleted, or a backup restored over the catalog, during `process`",
        "found at the next commit: the lights not recorded are failed with the reason, exit 1",
        "tests/robustness/test_catalog_gone.py::test_a_catalog_gone_while_lights_are_calibrated",
    ),
    Situation(
        "read-only-catalog",
        "a catalog on read-only media (file and folder not writable)",
        "status, process --dry-run (the same plan), provenance, impact, report, masters --list and db "
        "current work; process, ingest, audit, masters and mark-bad answer one line, exit 2; nothing written",
        "tests/catalog/test_read_only.py::test_an_archive_on_read_only_media_through_the_command_line",
    ),
    Situation(
        "read-only-user",
        "a PostgreSQL user who may only read the catalog",
        "status and the dry run work (provisional masters in temporary tables); process refused, exit 2",
        "tests/catalog/test_read_only.py::test_a_user_who_may_only_read_a_postgresql_catalog",
    ),
    Situation(
        "long-host-name",
        "a host name of 250 characters, a final name of 250 bytes",
        "temporary names stay 49 characters: the file is written",
        "tests/files/test_fitsio.py::test_temporary_names_are_short_whatever_the_final_name_and_the_host",
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
