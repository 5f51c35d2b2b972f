"""``ccdcal run``'s library side: the seed's config.ini read, checked and run on the seed's raw/ layout."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.engine import describe, resolve_url
from ccdcal.catalog.models import (
    Calibration,
    CalibrationMaster,
    Frame,
    Master,
    MasterCalibrator,
    MasterInput,
    Run,
)
from ccdcal.config.inifile import DEFAULT_CONFIG, OPTIONS, parse_size
from ccdcal.config.run import RunResult, SeedConfig, load_config, run_config, write_default_config
from ccdcal.errors import ConfigError, FolderOwnerError
from ccdcal.files.naming import calibrated_name, master_name
from ccdcal.files.ownership import MARKER
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import pending_work
from ccdcal.masters.frameqa import QaOptions
from ccdcal.simulate import simulate_night
from tests.conftest import ROOT, fitsverify_counts

#: The example of the seed's README ("Configuration (config.ini)"), verbatim.
SEED_CONFIG = """\
[GENERAL]
debug = yes

[MASTERS]
raw_root = ../raw
master_output = masters
build_bias = yes
build_dark = yes
build_flat = yes
dark_scale = no

[CALIBRATION]
input_root = ../raw
output_dir = calibrated
master_files = masters
file_type = LIGHT
no_bias = no
dark_scale = no
"""

#: The masters of the simulated night (set point -10 °C, gain 120, 2x2; darks at 2, 5, 60 and 300 s).
NIGHT_MASTERS = [
    "master_bias_b2x2_g120_sNA_C-10.fits",
    "master_dark_b2x2_g120_2s_C-10.fits",
    "master_dark_b2x2_g120_300s_C-10.fits",
    "master_dark_b2x2_g120_5s_C-10.fits",
    "master_dark_b2x2_g120_60s_C-10.fits",
    "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
    "master_flat_b2x2_g120_sNA_C-10_R.fits",
]


def seed_project(tmp_path: Path, config: str = SEED_CONFIG, **changes: str) -> Path:
    """The seed's layout: project/raw/{BIAS,DARK,FLAT,LIGHT} (a simulated night: Light_001 in R at 60 s,
    Light_002 in Ha at 300 s) and project/calib_dir/config.ini (``config`` with ``changes``, see
    :func:`edit`); returns the config's path."""
    project = tmp_path / "project"
    simulate_night(project / "raw", seed=4, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    (project / "calib_dir").mkdir()
    path = project / "calib_dir" / "config.ini"
    path.write_text(edit(config, **changes))
    return path


def edit(config: str, **changes: str) -> str:
    """``config`` with the line of each option replaced (``calibration_dark_scale`` names the second
    ``dark_scale``); ``jobs`` is added under [GENERAL]."""
    lines = config.splitlines()
    for key, value in changes.items():
        if key == "jobs":
            lines.insert(lines.index("[GENERAL]") + 1, f"jobs = {value}")
            continue
        name = key.removeprefix("calibration_")
        found = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        lines[found[-1] if key.startswith("calibration_") else found[0]] = f"{name} = {value}"
    return "\n".join(lines) + "\n"


def rows(db: Path | str, model: Any, **where: Any) -> list[Any]:
    with Catalog(db) as catalog, catalog.session() as session:
        return list(session.scalars(select(model).filter_by(**where)))


def used(db: Path | str) -> dict[str, dict[str, str]]:
    """For each current calibration (by output name): role -> master file name."""
    with Catalog(db) as catalog, catalog.session() as session:
        query = (
            select(Calibration.path, CalibrationMaster.role, Master.path)
            .join(CalibrationMaster, CalibrationMaster.calibration_id == Calibration.id)
            .join(Master, Master.id == CalibrationMaster.master_id)
            .where(Calibration.status == "current")
        )
        found: dict[str, dict[str, str]] = {}
        for output, role, master in session.execute(query):
            found.setdefault(Path(output).name, {})[role] = Path(master).name
        return found


def test_naming_gives_the_seeds_output_names() -> None:
    common: dict[str, Any] = {"xbinning": 2, "ybinning": 2, "gain": 120.0, "temp_key": -20.0}
    assert master_name("bias", exptime=0.0, **common) == "master_bias_b2x2_g120_sNA_C-20.fits"
    assert master_name("dark", exptime=10.0, **common) == "master_dark_b2x2_g120_10s_C-20.fits"
    assert master_name("flat", exptime=1.5, **common) == "master_flat_b2x2_g120_sNA_C-20.fits"
    assert calibrated_name("/data/raw/LIGHT/Light_001.fits") == "Light_001_cal.fits"


def test_seed_config_verbatim_runs_the_night(tmp_path: Path) -> None:
    config = seed_project(tmp_path)
    calib = config.parent
    result = run_config(config)
    assert isinstance(result, RunResult)
    assert (result.exit_code, result.catalog) == (0, str(calib / "ccdcal.db"))
    assert sorted(p.name for p in (calib / "masters").iterdir()) == [MARKER, *NIGHT_MASTERS]
    assert sorted(p.name for p in (calib / "calibrated").iterdir()) == [
        MARKER,
        "Light_001_cal.fits",
        "Light_002_cal.fits",
    ]
    assert sorted(p.name for p in calib.iterdir()) == ["calibrated", "ccdcal.db", "config.ini", "masters"]

    db = calib / "ccdcal.db"
    assert used(db) == {
        "Light_001_cal.fits": {
            "bias": "master_bias_b2x2_g120_sNA_C-10.fits",
            "dark": "master_dark_b2x2_g120_60s_C-10.fits",
            "flat": "master_flat_b2x2_g120_sNA_C-10_R.fits",
        },
        "Light_002_cal.fits": {
            "bias": "master_bias_b2x2_g120_sNA_C-10.fits",
            "dark": "master_dark_b2x2_g120_300s_C-10.fits",
            "flat": "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
        },
    }
    # Every raw bias, dark and flat went into exactly one master; the raw files are under ../raw.
    inputs = rows(db, MasterInput)
    frames = {f.id: f for f in rows(db, Frame)}
    assert len(inputs) == 3 + 4 * 3 + 2 * 3 == len({i.frame_id for i in inputs})
    assert {Path(frames[i.frame_id].path).parent.parent for i in inputs} == {calib.parent / "raw"}
    assert all(i.sha256 == frames[i.frame_id].sha256 for i in inputs)
    assert [r.command for r in sorted(rows(db, Run), key=lambda r: r.id)] == ["ingest", "run"]
    run = rows(db, Run, command="run")[0]
    assert run.status == "ok"
    assert run.arguments["config"]["path"] == str(config)
    assert run.arguments["output_dir"] == str(calib / "calibrated")
    for path in [*(calib / "masters").glob("*.fits"), *(calib / "calibrated").glob("*.fits")]:
        assert fitsverify_counts(path) == (0, 0)
        assert CCDData.read(path, unit="adu").data.dtype.name == "float32"

    again = run_config(config)
    assert again.summary.counts()["current"] == 2
    assert [m.outcome for m in again.summary.masters] == ["current"] * 7
    assert len(rows(db, Calibration)) == 2


def seed_night(raw: Path) -> None:
    """A night with the seed README's camera: 2x2, gain 120, -20 °C, darks and lights of 10 s, flats of
    1 s without a filter (the seed's names carry no filter)."""
    rng = np.random.default_rng(11)
    frames = [("BIAS", "Bias", 0.0, 500.0)] * 3 + [("DARK", "Dark_10s", 10.0, 505.0)] * 3
    frames += [("FLAT", "Flat", 1.0, 20000.0)] * 3 + [("LIGHT", "Light", 10.0, 1600.0)] * 2
    counters: dict[str, int] = {}
    for folder, stem, exptime, level in frames:
        counters[stem] = number = counters.get(stem, 0) + 1
        header = fits.Header()
        header["IMAGETYP"] = f"{folder.capitalize()} Frame"
        header["EXPTIME"] = exptime
        header["CCD-TEMP"] = -20.0 + float(rng.uniform(-0.3, 0.3))
        header["SET-TEMP"] = -20.0
        header["XBINNING"], header["YBINNING"], header["GAIN"] = 2, 2, 120
        header["DATE-OBS"] = f"2026-03-14T20:{len(counters):02d}:{number:02d}"
        data = (level + rng.normal(0.0, 3.0, (32, 40))).astype(np.float32)
        (raw / folder).mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU(data, header).writeto(raw / folder / f"{stem}_{number:03d}.fits")


def test_the_seed_readmes_output_table_end_to_end(tmp_path: Path) -> None:
    seed_night(tmp_path / "project" / "raw")
    config = tmp_path / "project" / "calib_dir" / "config.ini"
    config.parent.mkdir()
    config.write_text(edit(SEED_CONFIG, jobs="1"))
    assert run_config(config).exit_code == 0
    assert sorted(p.name for p in (config.parent / "masters").iterdir()) == [
        MARKER,
        "master_bias_b2x2_g120_sNA_C-20.fits",
        "master_dark_b2x2_g120_10s_C-20.fits",
        "master_flat_b2x2_g120_sNA_C-20.fits",
    ]
    assert sorted(p.name for p in (config.parent / "calibrated").iterdir()) == [
        MARKER,
        "Light_001_cal.fits",
        "Light_002_cal.fits",
    ]


def test_build_dark_no_builds_no_dark(tmp_path: Path) -> None:
    config = seed_project(tmp_path, build_dark="no", jobs="1")
    result = run_config(config)
    db = config.parent / "ccdcal.db"
    assert result.exit_code == 0
    assert sorted(p.name for p in (config.parent / "masters").iterdir()) == [
        MARKER,
        "master_bias_b2x2_g120_sNA_C-10.fits",
        "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
        "master_flat_b2x2_g120_sNA_C-10_R.fits",
    ]
    assert rows(db, Master, kind="dark") == []
    assert {c.role for c in rows(db, MasterCalibrator)} == {"bias"}  # flats: bias only
    assert {name: set(roles) for name, roles in used(db).items()} == {
        "Light_001_cal.fits": {"bias", "flat"},
        "Light_002_cal.fits": {"bias", "flat"},
    }
    for calibration in rows(db, Calibration):
        assert calibration.steps["dark"]["status"] == "allowed_missing"
    assert rows(db, Run, command="run")[0].arguments["allow_missing"] == ["dark"]


def test_dark_scale_yes_scales_the_dark_of_another_exposure(tmp_path: Path) -> None:
    config = seed_project(tmp_path, jobs="1")
    for dark in (config.parent.parent / "raw" / "DARK").glob("Dark_60s_*.fits"):
        dark.unlink()
    db = config.parent / "ccdcal.db"

    unscaled = run_config(config)  # dark_scale = no: no dark at 60 s, so Light_001 is not calibrated
    assert unscaled.exit_code == 1
    assert [Path(x.path).name for x in unscaled.summary.of("cannot")] == ["Light_001.fits"]
    assert "no dark" in (unscaled.summary.of("cannot")[0].reason or "")

    config.write_text(edit(config.read_text(), calibration_dark_scale="yes"))
    scaled = run_config(config)
    assert scaled.exit_code == 0
    factors = {Path(c.path or "").name: c.dark_scale_factor for c in rows(db, Calibration, status="current")}
    assert factors == {"Light_001_cal.fits": pytest.approx(60 / 300), "Light_002_cal.fits": 1.0}
    assert used(db)["Light_001_cal.fits"]["dark"] == "master_dark_b2x2_g120_300s_C-10.fits"
    link = next(c for c in rows(db, CalibrationMaster, role="dark") if c.scale != 1.0)
    assert link.scale == pytest.approx(0.2)


def flat_calibrators(db: Path | str) -> dict[str, dict[str, tuple[str, float | None]]]:
    """For each master flat (by file name): role -> (calibrator file name, scale)."""
    with Catalog(db) as catalog, catalog.session() as session:
        query = (
            select(Master.path, MasterCalibrator.role, MasterCalibrator.scale, MasterCalibrator.calibrator_id)
            .join(MasterCalibrator, MasterCalibrator.master_id == Master.id)
            .where(Master.kind == "flat")
        )
        names = {m.id: Path(m.path).name for m in session.scalars(select(Master))}
        found: dict[str, dict[str, tuple[str, float | None]]] = {}
        for path, role, scale, calibrator in session.execute(query):
            found.setdefault(Path(path).name, {})[role] = (names[calibrator], scale)
        return found


@pytest.mark.parametrize("masters_dark_scale", ["no", "yes"])
def test_masters_dark_scale_decides_the_dark_of_the_flats(tmp_path: Path, masters_dark_scale: str) -> None:
    # Flats: R at 2 s, Ha at 5 s. Without the 2 s darks only a scaled dark can calibrate the R flats.
    config = seed_project(tmp_path, dark_scale=masters_dark_scale, jobs="1")
    for dark in (config.parent.parent / "raw" / "DARK").glob("Dark_2s_*.fits"):
        dark.unlink()
    run_config(config)
    flats = flat_calibrators(config.parent / "ccdcal.db")
    assert flats["master_flat_b2x2_g120_sNA_C-10_Ha.fits"] == {
        "bias": ("master_bias_b2x2_g120_sNA_C-10.fits", None),
        "dark": ("master_dark_b2x2_g120_5s_C-10.fits", 1.0),
    }
    if masters_dark_scale == "no":  # no dark at 2 s: the R flats are only bias-subtracted
        assert flats["master_flat_b2x2_g120_sNA_C-10_R.fits"] == {
            "bias": ("master_bias_b2x2_g120_sNA_C-10.fits", None)
        }
    else:  # the nearest longer dark (5 s) scaled by 2/5
        assert flats["master_flat_b2x2_g120_sNA_C-10_R.fits"] == {
            "bias": ("master_bias_b2x2_g120_sNA_C-10.fits", None),
            "dark": ("master_dark_b2x2_g120_5s_C-10.fits", pytest.approx(0.4)),
        }
    # recorded with the run, so that `ccdcal status` plans the masters as the run built them: nothing to do
    with Catalog(config.parent / "ccdcal.db") as catalog:
        (run,) = [r for r in catalog.runs() if r.command == "run"]
        assert run.arguments["flat_dark_scale"] is (masters_dark_scale == "yes")
        assert pending_work(catalog)["masters_to_build"] == []


def test_no_bias_skips_the_bias_and_uses_bias_including_darks(tmp_path: Path) -> None:
    config = seed_project(tmp_path, no_bias="yes", jobs="1")
    assert run_config(config).exit_code == 0
    db = config.parent / "ccdcal.db"
    darks = sorted(Path(m.path).name for m in rows(db, Master, kind="dark"))
    assert darks == [
        "master_dark_b2x2_g120_2s_C-10_withbias.fits",
        "master_dark_b2x2_g120_300s_C-10_withbias.fits",
        "master_dark_b2x2_g120_5s_C-10_withbias.fits",
        "master_dark_b2x2_g120_60s_C-10_withbias.fits",
    ]
    assert used(db) == {
        "Light_001_cal.fits": {
            "dark": "master_dark_b2x2_g120_60s_C-10_withbias.fits",
            "flat": "master_flat_b2x2_g120_sNA_C-10_R.fits",
        },
        "Light_002_cal.fits": {
            "dark": "master_dark_b2x2_g120_300s_C-10_withbias.fits",
            "flat": "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
        },
    }
    for calibration in rows(db, Calibration):
        assert calibration.steps["bias"]["status"] == "skipped"
        assert calibration.dark_scale_factor == 1.0


@pytest.mark.parametrize(
    ("written", "kind"),
    [("LIGHT", "light"), ("Light Frame", "light"), ("object", "light"), ("science", "light")],
)
def test_file_type_is_normalised(tmp_path: Path, written: str, kind: str) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "c" / "config.ini").parent.mkdir()
    (tmp_path / "c" / "config.ini").write_text(edit(SEED_CONFIG, file_type=written))
    assert load_config(tmp_path / "c" / "config.ini").file_type == kind


def test_paths_are_relative_to_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project" / "raw").mkdir(parents=True)
    (tmp_path / "project" / "calib_dir").mkdir()
    (tmp_path / "project" / "calib_dir" / "config.ini").write_text(SEED_CONFIG)
    monkeypatch.chdir(tmp_path)
    config = load_config("project/calib_dir/config.ini")
    calib = tmp_path / "project" / "calib_dir"
    assert (config.path, config.raw_root, config.input_root) == (
        calib / "config.ini",
        tmp_path / "project" / "raw",
        tmp_path / "project" / "raw",
    )
    assert (config.master_output, config.master_files, config.output_dir) == (
        calib / "masters",
        calib / "masters",
        calib / "calibrated",
    )
    assert config.database == str(calib / "ccdcal.db")
    assert config.database_url() == str(calib / "ccdcal.db")
    assert config.database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert config.build == ("bias", "dark", "flat")
    assert (config.debug, config.no_bias, config.dark_scale, config.masters_dark_scale) == (
        True,
        False,
        False,
        False,
    )
    assert config.ingest_roots() == [tmp_path / "project" / "raw"]


def test_new_options_map_onto_the_library(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "lights").mkdir()
    (tmp_path / "c").mkdir()
    text = SEED_CONFIG.replace("debug = yes", "debug = no\ndatabase = cat/night.db\njobs = 3")
    text = text.replace("input_root = ../raw", "input_root = ../lights")
    text = text.replace(
        "dark_scale = no\n\n[CALIBRATION]",
        "dark_scale = no\nmin_frames = 5\nsigma = 2.5\niterations = 7\ndispersion = std\nmem_limit = 512M\n"
        "temp_tolerance = 1\n\n[CALIBRATION]",
    )
    text += "temp_tolerance = 0.5\nexptime_tolerance = 0.01\nflat_min = 0.05\nflat_low = 0.3\n"
    text = text.replace("jobs = 3", "jobs = 3\nsaturation = 60000")
    (tmp_path / "c" / "cat").mkdir()
    (tmp_path / "c" / "config.ini").write_text(text)
    config = load_config(tmp_path / "c" / "config.ini")
    assert config.database == str(tmp_path / "c" / "cat" / "night.db")
    assert config.ingest_roots() == [tmp_path / "raw", tmp_path / "lights"]
    masters = config.master_options()
    assert (masters.masters_dir, masters.kinds, masters.min_frames, masters.mem_limit) == (
        tmp_path / "c" / "masters",
        ("bias", "dark", "flat"),
        5,
        512 << 20,
    )
    params = masters.params
    assert (params.sigma_lower, params.sigma_upper, params.maxiters, params.stdfunc) == (2.5, 2.5, 7, "std")
    assert (masters.rules.temp_tolerance, masters.no_bias) == (1.0, False)
    process = config.process_options()
    assert (process.masters_dir, process.output_dir) == (
        tmp_path / "c" / "masters",
        tmp_path / "c" / "calibrated",
    )
    assert (process.rules.temp_tolerance, process.rules.exptime_tolerance, process.rules.dark_scale) == (
        0.5,
        0.01,
        False,
    )
    assert (process.flat_min, process.jobs, process.min_frames, process.allow_missing) == (0.05, 3, 5, ())
    assert (process.flat_low, process.optional.saturation, masters.optional.saturation) == (0.3, 60000, 60000)
    assert process.arguments()["saturation"] == 60000.0
    (tmp_path / "c" / "empty.ini").write_text(text.replace("saturation = 60000", "saturation ="))
    assert load_config(tmp_path / "c" / "empty.ini").process_options().optional.saturation is None


def test_the_qa_section_maps_onto_the_frame_qa_options(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "c").mkdir()
    text = SEED_CONFIG + (
        "\n[QA]\nframe_qa = no\noutlier_sigma = 6\ntemp_tolerance = 0.5\nflat_min_snr = 12\n"
        "flat_min_fraction = 0.25\nflat_max_saturated = 0.05\nflat_max_level = 0.75\ntail_fraction = 0.01\n"
    )
    (tmp_path / "c" / "config.ini").write_text(text)
    config = load_config(tmp_path / "c" / "config.ini")
    made = QaOptions(
        enabled=False,
        outlier_sigma=6,
        temp_tolerance=0.5,
        flat_min_snr=12,
        flat_min_fraction=0.25,
        flat_max_saturated=0.05,
        flat_max_level=0.75,
        tail_fraction=0.01,
    )
    assert config.qa_options() == made
    assert config.master_options().qa == made  # the masters of the run
    assert config.process_options().qa == config.process_options().master_options().qa == made
    # [QA] temp_tolerance is frame QA's alone: the matching tolerances keep their defaults
    assert (config.masters_temp_tolerance, config.temp_tolerance, config.qa_temp_tolerance) == (2, 2, 0.5)
    recorded = config.arguments()  # the run's: `status` plans the masters as the run did
    assert ProcessOptions.from_arguments(recorded).qa == made
    assert (recorded["no_frame_qa"], recorded["config"]["frame_qa"]) == (True, False)
    assert recorded["config"]["qa_outlier_sigma"] == 6
    # a section left out, or an option: the commands' defaults
    (tmp_path / "c" / "part.ini").write_text(SEED_CONFIG + "\n[QA]\nflat_max_level = 0.8\n")
    assert load_config(tmp_path / "c" / "part.ini").qa_options() == QaOptions(flat_max_level=0.8)
    (tmp_path / "c" / "none.ini").write_text(SEED_CONFIG)
    assert load_config(tmp_path / "c" / "none.ini").master_options().qa == QaOptions()


def test_database_option_and_override(tmp_path: Path) -> None:
    config_path = seed_project(tmp_path, jobs="1")
    config_path.write_text(
        config_path.read_text().replace("debug = yes", "debug = no\ndatabase = ../night.db")
    )
    config = load_config(config_path)
    assert run_config(config).catalog == str(tmp_path / "project" / "night.db")
    assert not (config_path.parent / "ccdcal.db").exists()
    other = tmp_path / "other.db"
    # Another catalog never writes beside the first one's files: their folders are the first one's.
    with pytest.raises(FolderOwnerError, match=r"the masters folder .* belongs to another catalog"):
        run_config(config, db=str(other))
    with Catalog(other) as refused:
        assert refused.runs() == []  # refused before its ingest


def test_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    config = seed_project(tmp_path, jobs="1")
    config.write_text(config.read_text().replace("debug = yes", f"debug = yes\ndatabase = {pg_url}"))
    result = run_config(config)
    assert (result.exit_code, result.catalog) == (0, describe(resolve_url(pg_url)))
    with Catalog(pg_url) as catalog, catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(CalibrationMaster)) == 6
    assert not (config.parent / "ccdcal.db").exists()


def test_default_config_declares_every_option_with_its_default(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "c").mkdir()
    written = write_default_config(tmp_path / "c" / "config.ini")
    assert written.read_text() == DEFAULT_CONFIG
    (tmp_path / "c" / "empty.ini").write_text("[GENERAL]\n[MASTERS]\n[CALIBRATION]\n")
    defaults, full = load_config(tmp_path / "c" / "empty.ini"), load_config(written)
    assert {**vars(defaults), "path": None} == {**vars(full), "path": None}
    assert full.database == str(tmp_path / "c" / "ccdcal.db")
    names = [(o.section, o.name) for o in OPTIONS]
    assert len(names) == len(set(names)) == 38
    assert [f.name for f in fields(SeedConfig)] == ["path", *(o.field for o in OPTIONS)]
    assert {o.name for o in OPTIONS if o.seed} == {
        "debug",
        "raw_root",
        "master_output",
        "build_bias",
        "build_dark",
        "build_flat",
        "dark_scale",
        "input_root",
        "output_dir",
        "master_files",
        "file_type",
        "no_bias",
    }
    with pytest.raises(ConfigError, match="exists; choose another file name"):
        write_default_config(written)
    assert written.read_text() == DEFAULT_CONFIG


def test_derived_defaults_follow_the_options_they_copy(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    (tmp_path / "config.ini").write_text("[MASTERS]\nraw_root = frames\nmaster_output = out/m\n")
    config = load_config(tmp_path / "config.ini")
    assert (config.input_root, config.master_files) == (tmp_path / "frames", tmp_path / "out" / "m")


def test_readme_documents_every_option() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Coming from the script pipeline") :]
    for option in OPTIONS:
        assert f"| `{option.name}` |" in section, option.name
    assert "ccdcal run --write-config" in section


@pytest.mark.parametrize(
    ("text", "size"), [("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("1000", 1000), ("0", None)]
)
def test_parse_size(text: str, size: int | None) -> None:
    assert parse_size(text) == size


def test_seedconfig_is_a_frozen_record(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.ini").write_text(SEED_CONFIG)
    config = load_config(tmp_path / "c" / "config.ini")
    assert isinstance(config, SeedConfig)
    with pytest.raises(AttributeError):
        config.debug = False  # type: ignore[misc]


def test_lenient_spellings_inline_comments_and_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "c").mkdir()
    text = edit(
        SEED_CONFIG, build_dark="No  ; not tonight", debug="off", calibration_dark_scale="TRUE # scaled"
    )
    text = text.replace("master_output", "Master_Output")
    (tmp_path / "c" / "config.ini").write_bytes(b"\xef\xbb\xbf" + text.encode())
    config = load_config(tmp_path / "c" / "config.ini")
    assert (config.build, config.debug, config.dark_scale) == (("bias", "flat"), False, True)
    assert config.master_output == tmp_path / "c" / "masters"
    assert config.process_options().allow_missing == ("dark",)
