"""Journals of publication (ccdcal.files.journal): what a dead writer published and never registered is
undone, and only that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccdcal.files.fitsio import (
    JOURNAL_SUFFIX,
    TEMP_PREFIX,
    remove_own_temporaries,
    sha256_file,
    temporary_path,
)
from ccdcal.files.journal import Entry, Journal, left_journals, repair

CATALOG = "6f1c0de0-0000-4000-8000-000000000001"


def file_with(path: Path, text: str) -> str:
    path.write_text(text)
    return sha256_file(path)


def test_a_journal_is_written_whole_and_discarded(tmp_path: Path) -> None:
    journal = Journal(tmp_path, CATALOG, 7)
    journal.record([Entry("a_cal.fits", "1" * 64, f"{TEMP_PREFIX}kept")])
    assert journal.path is not None
    assert journal.path.name.startswith(TEMP_PREFIX)
    assert journal.path.name.endswith(JOURNAL_SUFFIX)
    assert json.loads(journal.path.read_text()) == {
        "catalog_id": CATALOG,
        "run_id": 7,
        "files": [{"name": "a_cal.fits", "sha256": "1" * 64, "replaces": f"{TEMP_PREFIX}kept"}],
    }
    first = journal.path
    journal.record_file(tmp_path / "master_bias.fits", "2" * 64)  # replaces what it held, same file
    assert journal.path == first
    (left,) = left_journals(tmp_path)
    assert (left.catalog_id, left.run_id, left.entries) == (
        CATALOG,
        7,
        (Entry("master_bias.fits", "2" * 64),),
    )
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging file left
    assert remove_own_temporaries(tmp_path) == 0  # left to recovery, even by its own process
    journal.discard()
    assert list(tmp_path.iterdir()) == []
    journal.discard()


def test_repair_undoes_only_what_was_published_and_not_registered(tmp_path: Path) -> None:
    """Published, not registered: removed. Replaced, not registered: the replaced file put back.
    Registered: kept. Never published (another's content under the name): left alone."""
    published = file_with(tmp_path / "new_cal.fits", "published by the dead run")
    replacing = file_with(tmp_path / "old_cal.fits", "the dead run's replacement")
    kept = temporary_path(tmp_path)
    kept.write_text("the registered output it replaced")
    registered = file_with(tmp_path / "done_cal.fits", "registered before the run died")
    theirs = file_with(tmp_path / "theirs_cal.fits", "another writer's file")
    master = file_with(tmp_path / "master_bias.fits", "a master published, never registered")
    journal = Journal(tmp_path, CATALOG, 3)
    journal.record(
        [
            Entry("new_cal.fits", published),
            Entry("old_cal.fits", replacing, kept.name),
            Entry("done_cal.fits", registered),
            Entry("theirs_cal.fits", "9" * 64),  # the run died before renaming its own file there
            Entry("never_cal.fits", "8" * 64),
            Entry("master_bias.fits", master),
        ]
    )
    (left,) = left_journals(tmp_path)
    undone = repair(left, lambda path, sha: (path.name, sha) == ("done_cal.fits", registered))
    assert [p.name for p in undone] == ["new_cal.fits", "old_cal.fits", "master_bias.fits"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done_cal.fits", "old_cal.fits", "theirs_cal.fits"]
    assert (tmp_path / "old_cal.fits").read_text() == "the registered output it replaced"
    assert sha256_file(tmp_path / "theirs_cal.fits") == theirs


def test_a_journal_that_cannot_be_read_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / f"{TEMP_PREFIX}{'0' * 20}-{'1' * 16}{JOURNAL_SUFFIX}"
    bad.write_text("{not json")
    assert left_journals(tmp_path) == []
    assert "cannot read the journal" in caplog.text
    assert bad.exists()
    assert left_journals(tmp_path / "absent") == []


def test_a_journal_names_only_temporaries_of_its_folder(tmp_path: Path) -> None:
    outside = tmp_path / "precious.fits"
    outside.write_text("not a temporary")
    folder = tmp_path / "calibrated"
    folder.mkdir()
    published = file_with(folder / "a_cal.fits", "published")
    Journal(folder, CATALOG, 1).record([Entry("a_cal.fits", published, "../precious.fits")])
    (left,) = left_journals(folder)
    assert [p.name for p in repair(left, lambda _path, _sha: False)] == ["a_cal.fits"]
    assert outside.read_text() == "not a temporary"
    assert list(folder.iterdir()) == []
