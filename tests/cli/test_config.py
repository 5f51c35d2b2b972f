"""``ccdcal run`` on the command line: the seed's config.ini, exact messages for config errors, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from astropy.io import fits
from typer.testing import CliRunner

from ccdcal.cli import app
from ccdcal.config.inifile import DEFAULT_CONFIG
from ccdcal.config.run import load_config
from ccdcal.files.ownership import MARKER
from ccdcal.simulate import simulate_night
from tests.config.test_run import SEED_CONFIG, edit


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    """project/raw/{BIAS,DARK,FLAT,LIGHT} (empty) and project/calib_dir/ (no config yet)."""
    for folder in ("BIAS", "DARK", "FLAT", "LIGHT"):
        (tmp_path / "project" / "raw" / folder).mkdir(parents=True)
    (tmp_path / "project" / "calib_dir").mkdir()
    return tmp_path / "project" / "calib_dir"


def written_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


#: The last lines of SEED_CONFIG: a [QA] section is added after them (its header on line 20).
QA_AFTER = "no_bias = no\ndark_scale = no\n"

# Each config error: (how the seed's example is changed: old, new text, pairs in turn; the message after
# "Error: {config}").
ERRORS = {
    "unknown section": (
        ("[MASTERS]", "[MASTER]"),
        ", line 4: unknown section [MASTER]; did you mean [MASTERS]? the sections are [GENERAL], [MASTERS], "
        "[CALIBRATION] and [QA]",
    ),
    "DEFAULT is no section of ours": (
        ("[GENERAL]", "[DEFAULT]"),
        ", line 1: unknown section [DEFAULT]; the sections are [GENERAL], [MASTERS], [CALIBRATION] and [QA]",
    ),
    "unknown option": (
        ("build_dark = yes", "buld_dark = yes"),
        ", line 8: unknown option buld_dark in [MASTERS]; did you mean build_dark?",
    ),
    "unknown option, nothing close": (
        ("debug = yes", "colour = red"),
        ", line 2: unknown option colour in [GENERAL]; its options are debug, database, jobs, saturation",
    ),
    "option in the wrong section": (
        ("master_output = masters", "output_dir = masters"),
        ", line 6: output_dir is not an option of [MASTERS]; move it to [CALIBRATION]",
    ),
    "bad boolean": (
        ("build_dark = yes", "build_dark = maybe"),
        ", line 8: build_dark = maybe is not yes or no; write build_dark = yes or build_dark = no",
    ),
    "empty boolean": (
        ("no_bias = no", "no_bias ="),
        ", line 17: no_bias has no value; write no_bias = yes or no_bias = no",
    ),
    "missing raw_root": (
        ("raw_root = ../raw", "raw_root = ../raw_data"),
        ", line 5: raw_root = ../raw_data: folder {project}/raw_data does not exist; create it or correct "
        "the path",
    ),
    "missing input_root": (
        ("input_root = ../raw", "input_root = ../raw/LIGHTS"),
        ", line 13: input_root = ../raw/LIGHTS: folder {project}/raw/LIGHTS does not exist; create it or "
        "correct the path",
    ),
    "folder that is a file": (
        ("input_root = ../raw", "input_root = config.ini"),
        ", line 13: input_root = config.ini: {calib}/config.ini is a file, not a folder; give a folder",
    ),
    "database folder missing": (
        ("debug = yes", "debug = yes\ndatabase = nowhere/c.db"),
        ", line 3: database = nowhere/c.db: folder {calib}/nowhere does not exist; create it or correct the "
        "path",
    ),
    "bad number": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\nsigma = three\n\n[CALIBRATION]"),
        ", line 11: sigma = three is not a number above 0; write e.g. sigma = 3",
    ),
    "negative tolerance": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\ntemp_tolerance = -1\n\n[CALIBRATION]"),
        ", line 11: temp_tolerance = -1 is not a number of 0 or more; write e.g. temp_tolerance = 2",
    ),
    "flat_min out of range": (
        ("file_type = LIGHT", "file_type = LIGHT\nflat_min = 1e30"),
        ", line 17: flat_min = 1e30 is out of range: use 0 < x < 1; write e.g. flat_min = 0.01",
    ),
    "flat_low out of range": (
        ("file_type = LIGHT", "file_type = LIGHT\nflat_low = 1"),
        ", line 17: flat_low = 1 is out of range: use 0 < x < 1; write e.g. flat_low = 0.5",
    ),
    "flat_low not above flat_min": (
        ("file_type = LIGHT", "file_type = LIGHT\nflat_min = 0.4\nflat_low = 0.3"),
        ", line 18: flat_low = 0.3 is not above flat_min = 0.4: pixels below flat_min are clamped, "
        "flat_low flags a low response above them; raise flat_low or lower flat_min",
    ),
    "flat_min above the default flat_low": (
        ("file_type = LIGHT", "file_type = LIGHT\nflat_min = 0.6"),
        ", line 17: flat_low = 0.5 is not above flat_min = 0.6: pixels below flat_min are clamped, "
        "flat_low flags a low response above them; raise flat_low or lower flat_min",
    ),
    "saturation out of range": (
        ("debug = yes", "debug = yes\nsaturation = -3"),
        ", line 3: saturation = -3 is out of range: use 0 < x <= 1e+20 ADU; write e.g. saturation = 65535",
    ),
    "bad saturation": (
        ("debug = yes", "debug = yes\nsaturation = lots"),
        ", line 3: saturation = lots is not a number of ADU; write e.g. saturation = 65535, or leave it "
        "empty (the header's level)",
    ),
    "sigma out of range": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\nsigma = 1000\n\n[CALIBRATION]"),
        ", line 11: sigma = 1000 is out of range: use 0.5 <= x <= 100; write e.g. sigma = 3",
    ),
    "iterations out of range": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\niterations = 1000000\n\n[CALIBRATION]"),
        ", line 11: iterations = 1000000 is out of range: use a whole number 1 <= x <= 100; write e.g. "
        "iterations = 5",
    ),
    "tolerance out of range": (
        ("file_type = LIGHT", "file_type = LIGHT\nexptime_tolerance = 2"),
        ", line 17: exptime_tolerance = 2 is out of range: use 0 <= x <= 0.5; write e.g. "
        "exptime_tolerance = 1e-6",
    ),
    "mem_limit out of range": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\nmem_limit = 1K\n\n[CALIBRATION]"),
        ", line 11: mem_limit = 1K is out of range: use 16M <= x <= 64T; write e.g. mem_limit = 2G",
    ),
    "jobs out of range": (
        ("debug = yes", "debug = yes\njobs = 100000"),
        ", line 3: jobs = 100000 is out of range: use a whole number 1 <= x <= 1024; write e.g. jobs = 4",
    ),
    "bad jobs": (
        ("debug = yes", "debug = yes\njobs = many"),
        ", line 3: jobs = many is not a whole number of at least 1; write jobs = auto or e.g. jobs = 4",
    ),
    "bad size": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\nmem_limit = lots\n\n[CALIBRATION]"),
        ", line 11: mem_limit = lots is not a size such as 512M or 2G; write e.g. mem_limit = 2G",
    ),
    "bad dispersion": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\ndispersion = mad\n\n[CALIBRATION]"),
        ", line 11: dispersion = mad is not mad_std or std; write dispersion = mad_std or dispersion = std",
    ),
    "file_type of another kind": (
        ("file_type = LIGHT", "file_type = FLAT"),
        ", line 16: file_type = FLAT names flat frames: ccdcal calibrates light frames; write "
        "file_type = LIGHT",
    ),
    "file_type unknown": (
        ("file_type = LIGHT", "file_type = banana"),
        ", line 16: file_type = banana is not a frame type; write file_type = LIGHT",
    ),
    "no_bias with dark_scale": (
        ("no_bias = no\ndark_scale = no", "no_bias = yes\ndark_scale = yes"),
        ", line 18: dark_scale = yes cannot be used with no_bias = yes: a dark that still holds the bias "
        "cannot be scaled; set one of them to no",
    ),
    "no_bias with the flats' dark_scale": (
        (
            "dark_scale = no\n\n[CALIBRATION]",
            "dark_scale = yes\n\n[CALIBRATION]",
            "no_bias = no",
            "no_bias = yes",
        ),
        ", line 10: dark_scale = yes cannot be used with [CALIBRATION] no_bias = yes: the flats' dark then "
        "still holds the bias, and such a dark cannot be scaled; set one of them to no",
    ),
    "master_files elsewhere": (
        ("master_files = masters", "master_files = other"),
        ", line 15: master_files = other ({calib}/other) is not the folder of [MASTERS] master_output "
        "({calib}/masters): ccdcal finds masters through its catalog, which records them where "
        "master_output puts them; set master_files = masters",
    ),
    "output inside the raw frames": (
        ("output_dir = calibrated", "output_dir = ../raw/calibrated"),
        ", line 14: output_dir = ../raw/calibrated ({project}/raw/calibrated) is inside raw_root "
        "({project}/raw), which is catalogued as raw frames; choose a folder outside it",
    ),
    "QA temp_tolerance out of range": (
        (QA_AFTER, QA_AFTER + "\n[QA]\nframe_qa = yes\ntemp_tolerance = 0\n"),
        ", line 22: temp_tolerance = 0 is out of range: use 0 < x <= 100 °C; write e.g. temp_tolerance = 2",
    ),
    "QA outlier_sigma out of range": (
        (QA_AFTER, QA_AFTER + "\n[QA]\noutlier_sigma = 0.5\n"),
        ", line 21: outlier_sigma = 0.5 is out of range: use 1 <= x <= 1000000 sigma; write e.g. "
        "outlier_sigma = 10",
    ),
    "QA flat_min_fraction out of range": (
        (QA_AFTER, QA_AFTER + "\n[QA]\nflat_min_fraction = 1\n"),
        ", line 21: flat_min_fraction = 1 is out of range: use 0 <= x < 1; write e.g. "
        "flat_min_fraction = 0.1",
    ),
    "QA flat_max_level not a number": (
        (QA_AFTER, QA_AFTER + "\n[QA]\nflat_max_level = high\n"),
        ", line 21: flat_max_level = high is not a number above 0; write e.g. flat_max_level = 0.9",
    ),
    "QA bad frame_qa": (
        (QA_AFTER, QA_AFTER + "\n[QA]\nframe_qa = sometimes\n"),
        ", line 21: frame_qa = sometimes is not yes or no; write frame_qa = yes or frame_qa = no",
    ),
    "QA option in [MASTERS]": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\ntail_fraction = 0.01\n\n[CALIBRATION]"),
        ", line 11: tail_fraction is not an option of [MASTERS]; move it to [QA]",
    ),
    "QA misspelt option": (
        (QA_AFTER, QA_AFTER + "\n[QA]\nflat_min_sn = 3\n"),
        ", line 21: unknown option flat_min_sn in [QA]; did you mean flat_min_snr?",
    ),
    "duplicate option": (
        ("debug = yes", "debug = yes\ndebug = no"),
        ", line 3: debug appears a second time in [GENERAL]; keep one",
    ),
    "duplicate section": (
        ("dark_scale = no\n\n[CALIBRATION]", "dark_scale = no\n\n[GENERAL]\n[CALIBRATION]"),
        ", line 12: section [GENERAL] appears a second time; merge the two",
    ),
    "line before any section": (
        ("[GENERAL]\n", "debug = yes\n[GENERAL]\n"),
        ", line 1: 'debug = yes' comes before any section; put it under [GENERAL], [MASTERS], "
        "[CALIBRATION] or [QA]",
    ),
    "line that is no option": (
        ("debug = yes", "debug yes"),
        ", line 2: 'debug yes' is not an option; write name = value",
    ),
    "default raw_root missing": (
        ("raw_root = ../raw\n", ""),
        ", line 4: [MASTERS] has no raw_root, and its default raw_root = ../raw names {project}/raw, which "
        "does not exist; add raw_root = FOLDER under [MASTERS]",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_config_errors_name_the_file_the_line_and_the_fix(runner: CliRunner, calib: Path, case: str) -> None:
    changes, message = ERRORS[case]
    text = SEED_CONFIG
    for old, new in zip(changes[::2], changes[1::2], strict=True):  # (old, new) pairs, applied in turn
        assert old in text
        text = text.replace(old, new, 1)
    config = calib / "config.ini"
    config.write_text(text)
    project = calib.parent
    if case == "default raw_root missing":
        (project / "raw").rename(project / "frames")
        config.write_text(config.read_text().replace("../raw", "../frames"))
    before = written_files(project)
    result = runner.invoke(app, ["run", str(config)])
    expected = "Error: " + str(config) + message.format(project=project, calib=calib) + "\n"
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", expected)
    assert written_files(project) == before  # nothing written: no catalog, no folder, no file
    assert sorted(p.name for p in calib.iterdir()) == ["config.ini"]


def test_missing_config_file(runner: CliRunner, calib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(calib)
    result = runner.invoke(app, ["run"])
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: config.ini: no such file; give the path of your config.ini, or write a commented default "
        "with `ccdcal run --write-config config.ini`\n",
    )
    folder = runner.invoke(app, ["run", str(calib)])
    assert (folder.exit_code, folder.stderr) == (
        2,
        f"Error: {calib} is a folder, not a config file; give the path of your config.ini\n",
    )
    assert list(calib.iterdir()) == []


@pytest.fixture
def night(calib: Path) -> Path:
    """A simulated night in project/raw: Light_001 in R at 60 s, Light_002 in Ha at 300 s."""
    raw = calib.parent / "raw"
    for folder in raw.iterdir():
        folder.rmdir()
    raw.rmdir()
    simulate_night(raw, seed=4, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    return raw


def test_run_uses_config_ini_of_the_current_folder(
    runner: CliRunner, calib: Path, night: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (calib / "config.ini").write_text(edit(SEED_CONFIG, jobs="1"))  # debug = yes: the details too
    monkeypatch.chdir(calib)
    result = runner.invoke(app, ["run"])
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    masters, cal = calib / "masters", calib / "calibrated"
    assert lines[:4] == [
        f"Config {calib / 'config.ini'}; catalog {calib / 'ccdcal.db'}",
        "Ingest (run 1): 23 new, 0 changed, 0 unchanged, 0 missing, 0 rejected",
        "Masters (run 2): 7 built, 0 current, 0 skipped; kinds built: bias, dark, flat",
        f"  built {masters / 'master_bias_b2x2_g120_sNA_C-10.fits'} (3 frames)",
    ]
    assert lines[9:12] == [
        f"  built {masters / 'master_flat_b2x2_g120_sNA_C-10_R.fits'} (3 frames)",
        "Lights (run 2): 2 calibrated, 0 already calibrated, 0 not calibrated, 0 failed",
        f"  {night / 'LIGHT' / 'Light_001.fits'} -> {cal / 'Light_001_cal.fits'} (bias "
        "master_bias_b2x2_g120_sNA_C-10.fits, dark master_dark_b2x2_g120_60s_C-10.fits, flat "
        "master_flat_b2x2_g120_sNA_C-10_R.fits; dark scale 1)",
    ]
    assert lines[13].split() == ["outcome", "lights", "filter", "exptime", "bias", "dark", "flat"]
    assert len(lines) == 16

    again = runner.invoke(app, ["-q", "run"])
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")


def test_db_option_and_environment_override_the_config(
    runner: CliRunner, calib: Path, night: Path, tmp_path: Path
) -> None:
    config = calib / "config.ini"
    config.write_text(
        edit(SEED_CONFIG, jobs="1", debug="no").replace("jobs = 1", "jobs = 1\ndatabase = c.db")
    )
    from_env = runner.invoke(app, ["run", "--json", str(config)], env={"CCDCAL_DB": str(tmp_path / "env.db")})
    assert from_env.exit_code == 0, from_env.output
    report = json.loads(from_env.stdout)
    assert (report["catalog"], report["config"], report["exit_code"]) == (
        str(tmp_path / "env.db"),
        str(config),
        0,
    )
    assert report["counts"]["calibrated"] == 2
    assert report["ingest"]["new"] == 23
    assert [m["outcome"] for m in report["masters"]] == ["built"] * 7

    # The folders are env.db's now: another catalog is refused them (docs/design.md, Files).
    refused = runner.invoke(app, ["--db", str(tmp_path / "opt.db"), "run", str(config)])
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        f"Error: the masters folder {calib / 'masters'} belongs to another catalog"
    )
    for folder in ("masters", "calibrated"):
        shutil.rmtree(calib / folder)
    from_option = runner.invoke(app, ["--db", str(tmp_path / "opt.db"), "run", str(config)])
    assert from_option.stdout.splitlines()[0] == f"Config {config}; catalog {tmp_path / 'opt.db'}"
    for folder in ("masters", "calibrated"):
        shutil.rmtree(calib / folder)
    from_file = runner.invoke(app, ["run", str(config)], env={"CCDCAL_DB": ""})
    assert from_file.stdout.splitlines()[0] == f"Config {config}; catalog {calib / 'c.db'}"
    assert sorted(p.name for p in calib.iterdir()) == ["c.db", "calibrated", "config.ini", "masters"]


def test_write_config_parses_back_and_runs(runner: CliRunner, calib: Path, night: Path) -> None:
    config = calib / "config.ini"
    wrote = runner.invoke(app, ["run", "--write-config", str(config)])
    assert (wrote.exit_code, wrote.stdout) == (0, f"Wrote {config}; edit it, then run: ccdcal run {config}\n")
    assert config.read_text() == DEFAULT_CONFIG
    result = runner.invoke(app, ["run", str(config)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert (
        result.stdout.splitlines()[3]
        == "Lights (run 2): 2 calibrated, 0 already calibrated, 0 not calibrated, 0 failed"
    )
    assert sorted(p.name for p in (calib / "calibrated").iterdir()) == [
        MARKER,
        "Light_001_cal.fits",
        "Light_002_cal.fits",
    ]

    again = runner.invoke(app, ["run", "--write-config", str(config)])
    assert (again.exit_code, again.stderr) == (
        2,
        f"Error: {config} exists; choose another file name (an existing file is never replaced)\n",
    )
    both = runner.invoke(app, ["run", str(config), "--write-config", str(calib / "new.ini")])
    assert (both.exit_code, both.stderr) == (
        2,
        "Error: give either CONFIG or --write-config PATH, not both\n",
    )
    nowhere = runner.invoke(app, ["run", "--write-config", str(calib / "no" / "c.ini")])
    assert (nowhere.exit_code, nowhere.stderr) == (
        2,
        f"Error: {calib / 'no' / 'c.ini'}: folder {calib / 'no'} does not exist; create it first\n",
    )


# -- one default per choice: the same master flats by every route ------------------------------------------


@pytest.mark.parametrize(
    ("config_value", "process_options"),
    [(None, []), ("yes", ["--flat-dark-scale"])],
    ids=["defaults", "scaled"],
)
def test_run_and_process_build_byte_identical_masters(
    runner: CliRunner, tmp_path: Path, config_value: str | None, process_options: list[str]
) -> None:
    """``ccdcal run`` with the generated config.ini and ``ccdcal ingest`` + ``ccdcal process``, on two
    copies of one raw night, write the same master files byte for byte: the same names, the same pixels
    and the same header cards (none of them names a folder, a time of writing or a run). The night has no
    dark at the R flats' exposure (2 s), so that the dark of those flats depends on the routes' defaults:
    by default neither subtracts one (bias only); with the option both scale the 5 s dark."""
    night = tmp_path / "night"
    simulate_night(night, seed=6, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    for dark in (night / "DARK").glob("Dark_2s_*.fits"):
        dark.unlink()
    env = {"CCDCAL_DB": ""}

    by_run = tmp_path / "by-run"
    shutil.copytree(night, by_run / "raw")
    (by_run / "calib_dir").mkdir()
    config = by_run / "calib_dir" / "config.ini"
    assert runner.invoke(app, ["run", "--write-config", str(config)], env=env).exit_code == 0
    if config_value is not None:
        config.write_text(
            config.read_text().replace("\ndark_scale = no\n", f"\ndark_scale = {config_value}\n", 1)
        )
        assert load_config(config).masters_dark_scale  # the first dark_scale is [MASTERS]'
    ran = runner.invoke(app, ["run", str(config)], env=env)
    assert (ran.exit_code, ran.stderr) == (0, ""), ran.output

    by_process = tmp_path / "by-process"
    shutil.copytree(night, by_process / "raw")
    db = ["--db", str(by_process / "ccdcal.db")]
    ingested = runner.invoke(app, [*db, "ingest", str(by_process / "raw")], env=env)
    assert ingested.exit_code == 0, ingested.output
    folders = ["--masters-dir", str(by_process / "masters"), "--output-dir", str(by_process / "calibrated")]
    processed = runner.invoke(app, [*db, "process", *folders, *process_options], env=env)
    assert (processed.exit_code, processed.stderr) == (0, ""), processed.output

    run_masters = sorted((by_run / "calib_dir" / "masters").glob("master_*.fits"))
    process_masters = sorted((by_process / "masters").glob("master_*.fits"))
    assert [p.name for p in run_masters] == [p.name for p in process_masters]
    assert "master_flat_b2x2_g120_sNA_C-10_R.fits" in {p.name for p in run_masters}
    for ours, theirs in zip(run_masters, process_masters, strict=True):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name
    r_flat = fits.getheader(by_run / "calib_dir" / "masters" / "master_flat_b2x2_g120_sNA_C-10_R.fits")
    if config_value is None:
        assert "DARKCOR" not in r_flat  # no dark at 2 s: bias only
    else:
        assert (r_flat["DARKCOR"], r_flat["DARKSCAL"]) == ("master_dark_b2x2_g120_5s_C-10.fits", 0.4)
