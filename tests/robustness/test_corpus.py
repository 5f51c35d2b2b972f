"""Hostile inputs (tests/robustness/corpus.py) through ``ccdcal ingest`` and ``ccdcal process``: every run
finishes, every bad item is recorded with its reason, every good frame is calibrated, raw files are never
written."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from sqlalchemy import func, inspect, select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master
from ccdcal.cli import app
from ccdcal.files.ownership import read_marker
from tests.conftest import ROOT, fitsverify_counts
from tests.robustness import corpus, situations

DOCS = ROOT / "docs" / "hostile-inputs.md"


def _files(root: Path) -> dict[str, tuple[int, int, str | None]]:
    """Every regular file under ``root`` (links not followed): size, mtime and sha256 (when readable)."""
    found: dict[str, tuple[int, int, str | None]] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                digest: str | None = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:
                digest = None
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, digest)
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = corpus.build(tmp_path_factory.mktemp("corpus"))
    before = _files(root)
    result = corpus.run(root)
    result.files_before = before  # type: ignore[attr-defined]
    return result


def test_the_corpus_has_at_least_30_cases() -> None:
    assert len(corpus.CASES) >= 30
    assert len({case.name for case in corpus.CASES}) == len(corpus.CASES)


def test_both_runs_finish_with_exit_status_1(run: Any) -> None:
    """docs/design.md, Commands and exit codes: 1 when some frames are rejected, unmatched or failed —
    everything else still done."""
    assert run.ingest_exit == 1
    assert run.process_exit == 1
    failing = sum(case.outcome == corpus.FAILED for case in corpus.CASES)  # a raw file rewritten meanwhile
    assert run.process["counts"]["failed"] == failing == 1


@pytest.mark.parametrize("case", corpus.CASES, ids=[case.name for case in corpus.CASES])
def test_each_case_is_recorded_with_its_reason(run: Any, case: corpus.Case) -> None:
    (result,) = [r for r in run.results if r.case is case]
    assert result.outcome == case.outcome, result.message
    assert case.message in result.message
    if case.master_message:
        assert any(case.master_message in reason for reason in corpus.master_reasons(run))
    if case.outcome == corpus.CALIBRATED:
        assert result.output is not None
        assert Path(result.output).is_file()


def test_every_good_frame_is_processed(run: Any) -> None:
    lights = {Path(x["path"]).name: x["outcome"] for x in run.process["lights"] if "/night/" in x["path"]}
    assert lights == {"Light_001.fits": "calibrated", "Light_002.fits": "calibrated"}
    built = sorted(Path(m["path"]).name for m in run.process["masters"] if m["outcome"] == "built")
    assert built == [
        "master_bias_b1x1_g120_sNA_C-10.fits",  # mostly-nan-biases-above: finite on 52.1% of its pixels
        "master_bias_b2x2_g120_sNA_C-10.fits",
        "master_dark_b2x2_g120_2s_C-10.fits",
        "master_dark_b2x2_g120_300s_C-10.fits",
        "master_dark_b2x2_g120_5s_C-10.fits",
        "master_dark_b2x2_g120_60s_C-10.fits",
        "master_flat_b2x2_g120_sNA_C-10_DROPTABLEframes--.fits",
        "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
        "master_flat_b2x2_g120_sNA_C-10_R.fits",
        "master_flat_b2x2_g120_sNA_C-10_R_ZWOASI294MMPro.fits",
        "master_flat_b2x2_g120_sNA_C-10_x.fits",
    ]


def test_every_output_is_valid_fits(run: Any) -> None:
    outputs = sorted((run.root / "calibrated").glob("*.fits")) + sorted((run.root / "masters").glob("*.fits"))
    for folder in ("calibrated", "masters"):  # claimed by the corpus's catalog (docs/design.md, Files)
        assert read_marker(run.root / folder) is not None
    assert len(outputs) == len(run.process["lights"]) - len(
        [x for x in run.process["lights"] if x["outcome"] != "calibrated"]
    ) + len([m for m in run.process["masters"] if m["outcome"] == "built"])
    for path in outputs:
        assert not path.name.startswith(".")
        assert fitsverify_counts(path)[1] == 0, path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            CCDData.read(path, hdu=0, unit="adu")


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("date-impossible", ["DATE-OBS", "DATE-END", "DATEREF", "DATE-AVG"]),
        ("date-forms", ["DATE-OBS", "DATE-END", "DATE ", "DATE-BEG"]),
        ("number-forms", ["FOCUSPOS", "AIRMASS", "SKYTEMP", "MJD-OBS"]),
        ("control-characters", ["COMMENT", "OBSNOTE"]),  # astropy reads the byte as ?
        ("card-layout", ["FOO", "BAR", "DATE-LOC"]),
    ],
)
def test_raw_cards_fitsverify_rejects_are_named_in_the_outputs_history(
    run: Any, case: str, named: list[str]
) -> None:
    """docs/design.md, Files: each card converted or left out is named in a HISTORY line."""
    (result,) = [r for r in run.results if r.case.name == case]
    assert result.output is not None
    history = " ".join(str(line) for line in fits.getheader(result.output)["HISTORY"])
    assert all(keyword in history for keyword in named), history
    assert fitsverify_counts(Path(result.output)) == (0, 0)


def test_every_output_traces_back_to_its_raw_light_from_its_header(run: Any) -> None:
    """docs/design.md, Files: every name ccdcal writes reads back exactly — spaces, quotes, Unicode, a
    newline, a leading dash, `%`, a backslash, a name longer than a card."""
    from ccdcal.trace.headertrace import trace_header

    for result in run.results:
        if result.outcome != corpus.CALIBRATED or result.case.name.endswith("link-loop"):
            continue
        assert result.output is not None
        light = trace_header(result.output, [run.root / corpus.case_folder(result.case)]).tree.children[0]
        raw = run.root / corpus.case_folder(result.case) / result.case.subject
        assert (light.role, light.name, light.path, light.file) == ("light", raw.name, str(raw), "ok")


def test_raw_files_untouched_and_nothing_written_outside_the_output_folders(run: Any) -> None:
    after = _files(run.root)
    changed_on_purpose = {
        "cases/edited/edited.fits",
        "cases/deleted/deleted.fits",
        "cases/rewritten-size-mtime-kept/rewritten.fits",
    }
    for name, before in run.files_before.items():
        if name not in changed_on_purpose:
            assert after[name] == before, name
    new = set(after) - set(run.files_before)
    outside = {n for n in new if not n.startswith(("masters/", "calibrated/", "corpus.db"))}
    assert outside == set()


def test_header_values_reach_no_path_and_no_sql(run: Any) -> None:
    """A FILTER of ``../../x`` or ``'; DROP TABLE frames; --`` is data: kept verbatim, sanitised in names."""
    with Catalog(run.root / "corpus.db") as catalog, catalog.session() as session:
        assert "frames" in inspect(session.connection()).get_table_names()
        filters = set(session.scalars(select(Frame.filter).where(Frame.filter.is_not(None))))
        assert {"../../x", "'; DROP TABLE frames; --"} <= filters
        for master in session.scalars(select(Master)):
            assert Path(master.path).parent == (run.root / "masters").resolve()
        frames = session.scalar(select(func.count()).select_from(Frame))
    assert frames == run.ingest["new"]


def test_duplicate_keyword_first_one_counts_as_in_astropy(run: Any) -> None:
    path = run.root / "cases" / "duplicate-keyword" / "duplicate_exptime.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fits.getheader(path)["EXPTIME"] == 60.0
    with Catalog(run.root / "corpus.db") as catalog, catalog.session() as session:
        assert session.scalar(select(Frame.exptime).where(Frame.path == str(path.resolve()))) == 60.0


def test_a_second_run_changes_nothing(run: Any) -> None:
    with Catalog(run.root / "corpus.db") as catalog, catalog.session() as session:
        before = session.scalar(select(func.count()).select_from(Calibration))
    folders = ["--masters-dir", str(run.root / "masters"), "--output-dir", str(run.root / "calibrated")]
    again = CliRunner().invoke(
        app, ["--db", str(run.root / "corpus.db"), "process", "--json", "--jobs", "1", *folders]
    )
    assert again.exit_code == 1
    with Catalog(run.root / "corpus.db") as catalog, catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Calibration)) == before


def test_a_light_below_its_bias_is_calibrated_with_its_warning_and_the_catalog_reads_back(
    run: Any, tmp_path: Path
) -> None:
    """The level warning is kept with the light's calibration; every command that reads the catalog the
    corpus left — rejections, folders not read, warnings, lights not calibrated — reads it."""
    (result,) = [r for r in run.results if r.case.name == "already-subtracted"]
    assert result.warnings
    assert result.warnings[0].startswith("the light's level ")
    db = ["--db", str(run.root / "corpus.db")]
    for args in (
        ["report", "-o", str(tmp_path / "now.html")],
        ["report", "--run", "1", "-o", str(tmp_path / "ingest.html")],
        ["report", "--run", "2", "-o", str(tmp_path / "process.html")],
        ["status", "--json"],
        ["masters", "--list", "--all"],
    ):
        read = CliRunner().invoke(app, [*db, *args])
        assert read.exception is None or isinstance(read.exception, SystemExit), (args, read.exception)
        assert read.exit_code == 0, (args, read.output)
    assert "warning: the light" in (tmp_path / "now.html").read_text()
    assert "cannot read the folder: Permission denied" in (tmp_path / "ingest.html").read_text()


def test_the_docs_table_is_up_to_date(run: Any) -> None:
    """docs/hostile-inputs.md is made from the corpus: `python -m tests.robustness.corpus
    docs/hostile-inputs.md`."""
    assert DOCS.read_text(encoding="utf-8") == corpus.markdown(run)


def test_real_raw_frames_are_never_written(real_data: Path, tmp_path: Path) -> None:
    """Every real raw frame (tests/../shared/data/real, copied) is byte for byte and stat for stat the same
    after ingest, process and audit; nothing is written beside them."""
    raw = tmp_path / "raw"
    shutil.copytree(real_data, raw, ignore=shutil.ignore_patterns("*.md"))
    before = _files(raw)
    assert len(before) >= 70
    db = ["--db", str(tmp_path / "c.db")]
    folders = ["--masters-dir", str(tmp_path / "masters"), "--output-dir", str(tmp_path / "calibrated")]
    runner = CliRunner()
    assert runner.invoke(app, [*db, "ingest", str(raw)]).exit_code == 0
    processed = runner.invoke(app, [*db, "process", "--jobs", "1", *folders])
    assert processed.exit_code == 1  # real sets are incomplete: some lights have no master
    assert "lights 6 calibrated" in processed.stdout
    # one light has no master at all: its overscan alone calibrates it (docs/design.md, Grouping and matching)
    assert "Calibrated: 1 with overscan, without bias (n/a), without dark (n/a), without flat (n/a); 5 " in (
        processed.stdout
    )
    audited = runner.invoke(app, [*db, "audit"])
    assert audited.exit_code == 0, audited.output
    raw_frames = len(before)  # every file of the real sets is a raw frame of the catalog
    assert audited.stdout.startswith(
        f"Audit (run 3): {raw_frames + 11} files checked ({raw_frames} raw frames, 5 masters, 6 calibrated"
    )
    assert _files(raw) == before


@pytest.mark.parametrize("situation", situations.SITUATIONS, ids=[s.name for s in situations.SITUATIONS])
def test_each_situation_names_a_test_that_exists(situation: situations.Situation) -> None:
    path, _, name = situation.test.partition("::")
    source = (ROOT / path).read_text()
    assert f"def {name}(" in source
