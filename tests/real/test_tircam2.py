"""TIRCAM2 (DOT 3.6 m): no IMAGETYP at all. Typed by ``--imagetyp`` per folder or ``--type-from-name``
rules, the J lights are reduced with the bias and the J flat."""

from __future__ import annotations

import shutil
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.cli import app
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from tests.conftest import fitsverify_counts, real_set
from tests.real.conftest import every_result_reproduced

RULES = ["bias_*=bias", "flats*=flat", "IC310_*=light"]


def check_reduced(catalog: Catalog) -> None:
    """Five J lights calibrated with the bias and the J flat, no dark; numbers as ccdproc's; each made
    again bit for bit."""
    with catalog.session() as session:
        frames = {f.id: f for f in session.scalars(select(Frame))}
        masters = {m.kind: m for m in session.scalars(select(Master))}
        calibrations = list(session.scalars(select(Calibration).where(Calibration.status == "current")))
        links = list(session.scalars(select(CalibrationMaster)))
    assert {f.imagetyp_source for f in frames.values()} == {"forced"}
    assert sorted((k, m.n_inputs, m.filter) for k, m in masters.items()) == [
        ("bias", 3, None),
        ("flat", 5, "J"),
    ]
    assert sorted(Path(frames[c.frame_id].path).name for c in calibrations) == [
        f"IC310_{i}.fits" for i in range(1, 6)
    ]
    assert {(link.role, link.master_id) for link in links} == {
        ("bias", masters["bias"].id),
        ("flat", masters["flat"].id),
    }
    first = calibrations[0]
    assert first.steps["dark"]["status"] == "not_available"
    assert "overscan" not in first.steps  # nothing to trim: the fast path
    raw = frames[first.frame_id]
    bias = CCDData(fits.getdata(masters["bias"].path), unit="adu")
    flat = CCDData(fits.getdata(masters["flat"].path), unit="")
    light = CCDData(fits.getdata(raw.path).astype(np.float64), unit="adu")
    reference = ccdproc.flat_correct(ccdproc.subtract_bias(light, bias), flat, min_value=0.01, norm_value=1)
    ours = fits.getdata(first.path or "")
    np.testing.assert_allclose(ours, reference.data, rtol=1e-5, atol=1e-3)
    assert fitsverify_counts(Path(first.path or ""))[1] == 0
    assert every_result_reproduced(catalog) == 7  # the five lights, the bias and the flat


def test_imagetyp_per_folder(catalog: Catalog, tmp_path: Path) -> None:
    folder = real_set("ndoubledot-tircam2")
    night = tmp_path / "night"
    for sub, pattern, kind in (("a", "bias_*", "bias"), ("b", "flats*", "flat"), ("c", "IC310_*", "light")):
        (night / sub).mkdir(parents=True)
        for path in folder.glob(pattern):
            shutil.copy(path, night / sub)
        ingest(catalog, [night / sub], imagetyp=kind)
    summary = process(
        catalog, ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "out", jobs=1)
    )
    assert summary.exit_code == 0
    check_reduced(catalog)


def test_type_from_name_rules_on_the_command_line(tmp_path: Path) -> None:
    folder = real_set("ndoubledot-tircam2")
    db = tmp_path / "c.db"
    runner = CliRunner()
    bad = runner.invoke(app, ["--db", str(db), "ingest", str(folder), "--type-from-name", "bias_*"])
    assert bad.exit_code == 2
    assert bad.stderr == (
        "Error: --type-from-name 'bias_*': give PATTERN=KIND, with KIND one of bias, dark, flat, light "
        "(e.g. 'flats*=flat')\n"
    )
    untyped = runner.invoke(app, ["--db", str(db), "ingest", str(folder)])
    assert "Unclassified (13;" in untyped.stdout
    arguments = ["--db", str(db), "ingest", str(folder)]
    for rule in RULES:
        arguments += ["--type-from-name", rule]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "Frames under these paths: bias 3, flat 5, light 5\n" in result.stdout
    assert "Type forced by --type-from-name on 13 frames\n" in result.stdout
    done = runner.invoke(
        app,
        [
            "--db",
            str(db),
            "process",
            "--masters-dir",
            str(tmp_path / "m"),
            "--output-dir",
            str(tmp_path / "o"),
            "-j",
            "1",
        ],
    )
    assert done.exit_code == 0, done.output
    with Catalog(db) as catalog:
        check_reduced(catalog)


def test_type_rules() -> None:
    from ccdcal.ingestion.normalise import parse_type_rule, type_from_name

    rules = [parse_type_rule(text) for text in ("IC310_*=Light", "*.fits=flat", "bias_?.fits=bias")]
    assert rules == [("IC310_*", "light"), ("*.fits", "flat"), ("bias_?.fits", "bias")]
    assert type_from_name("ic310_1.FITS", rules) == "light"  # any case
    assert type_from_name("bias_1.fits", rules) == "flat"  # the first rule that matches wins
    assert type_from_name("bias_1.fit", rules) is None
    assert parse_type_rule("a=b=dark") == ("a=b", "dark")
    for bad in ("flat", "=flat", "x=object"):
        with pytest.raises(ValueError, match=r"^--type-from-name ") as raised:
            parse_type_rule(bad)
        assert str(raised.value).startswith(f"--type-from-name {bad!r}: give PATTERN=KIND")
