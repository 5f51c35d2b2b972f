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
        "folder-not-utf8",
        "`--output-dir` or `--masters-dir` whose path is not valid UTF-8; `provenance` given such a path",
        "one line naming the folder (its bytes escaped) and the fix, exit 2; nothing written",
        "tests/cli/test_calibration.py::test_a_folder_whose_path_is_not_utf8_is_exit_2",
    ),
    Situation(
        "root-not-utf8",
        "`ingest` of a folder whose name is not valid UTF-8, then of its parent; the file renamed",
        "each file under it rejected alone with the reason, the rest catalogued, exit 1; the renamed file "
        "catalogued",
        "tests/ingestion/test_core.py::test_names_that_are_not_utf8_are_rejected_alone",
    ),
    Situation(
        "moved-to-a-name-not-utf8",
        "`audit --fix-missing` finds a moved raw frame under a name that is not valid UTF-8",
        "shown as moved (its bytes escaped), not re-pointed, with the fix; exit 1",
        "tests/trace/test_audit.py::test_a_file_moved_to_a_name_that_is_not_utf8_is_found_but_not_repointed",
    ),
    Situation(
        "ingest-the-project-folder",
        "`ingest .` in the project folder after `process`: masters and calibrated lights (one gzipped) found",
        "each skipped with a note in the summary and `--json`, none catalogued, exit 0; `process` has "
        "nothing to do (no `_cal_cal.fits`)",
        "tests/ingestion/test_core.py::test_files_ccdcal_wrote_are_skipped_with_a_note",
    ),
    Situation(
        "output-inside-the-raw-tree",
        "`process --output-dir` and `--masters-dir` inside the raw tree, then `ingest` of the tree",
        "the outputs skipped, nothing calibrated twice",
        "tests/ingestion/test_core.py::test_outputs_written_inside_the_raw_tree_are_not_calibrated_again",
    ),
    Situation(
        "output-catalogued-before",
        "a ccdcal output catalogued as a raw frame before ingest skipped them (its cards hold CCDCALV)",
        "planned neither as a light nor as the input of a master",
        "tests/ingestion/test_core.py::test_a_ccdcal_output_catalogued_before_is_no_longer_planned",
    ),
    Situation(
        "bytes-of-a-recorded-output",
        "a file whose sha256 is that of a master or calibrated output the catalog records",
        "skipped, naming the row (`the same bytes as calibration:N (...)`), exit 0",
        "tests/ingestion/test_core.py::test_a_file_with_the_bytes_of_a_recorded_output_is_skipped",
    ),
    Situation(
        "master-names-coincide",
        "a second camera of the same set-up, the same camera at another offset or readout mode, an "
        "instrument whose name reduces alike, a filter `H a` beside `Ha`, after the first camera's masters",
        "the first keeps the plain names; each newcomer adds its instrument's token or a hash of its "
        "keys, never `_vN`; a newer version of a group keeps its token and adds `_v2`; the dry run names "
        "them alike",
        "tests/masters/test_names.py::test_groups_whose_names_coincide_are_told_apart_without_vn",
    ),
    Situation(
        "master-name-held-by-a-file",
        "the masters folder holds a file of a master's plain name the catalog does not know (the script's)",
        "the file is left alone; the new master takes its instrument's token",
        "tests/masters/test_names.py::test_a_name_held_by_a_file_the_catalog_does_not_know_is_not_borrowed",
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
