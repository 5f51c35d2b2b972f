"""``ingest``: real dialects, every card, incremental re-ingest, rejected files, forced types."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select
from typer.testing import CliRunner

from ccdcal._version import __version__
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, HeaderCard, Run
from ccdcal.cli import app
from ccdcal.errors import UsageError
from ccdcal.files.fitsio import sha256_file
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import simulate_night
from tests.conftest import unreadable
from tests.processed_night import BIAS, DARK, FLAT, processed_night


def frames_by_name(catalog: Catalog) -> dict[str, Frame]:
    with catalog.session() as session:
        return {Path(f.path).name: f for f in session.scalars(select(Frame))}


def count(catalog: Catalog, model) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def astropy_header(path: Path, hdu: int = 0) -> fits.Header:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            return hdul[hdu].header.copy()


# -- real data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, dict[str, Frame]]:
    from tests.conftest import SHARED_REAL

    if not SHARED_REAL.is_dir():
        pytest.skip(f"{SHARED_REAL} is absent")
    catalog = Catalog(tmp_path_factory.mktemp("real") / "real.db")
    summary = ingest(catalog, [SHARED_REAL], jobs=2)
    assert summary.rejected == []
    yield catalog, frames_by_name(catalog)
    catalog.close()


def test_every_real_file_is_catalogued(real_catalog) -> None:
    _, frames = real_catalog
    assert len(frames) == 77  # the multi-amplifier sets are one frame per file, as every frame
    assert {f.status for f in frames.values()} == {"ok"}
    for frame in frames.values():
        assert Path(frame.path).is_absolute()
        assert len(frame.sha256) == 64


def test_lowell_flats_bias_and_lights(real_catalog) -> None:
    _, frames = real_catalog
    flat = frames["20190326.0110.fits"]
    assert (flat.imagetyp, flat.filter, flat.xbinning, flat.ybinning) == ("flat", "VR", 3, 3)
    assert frames["20190326.0100.fits"].filter == "V"
    assert frames["20190326.0100.fits"].imagetyp == "flat"
    bias = frames["20190326.0001.fits"]
    assert (bias.imagetyp, bias.exptime, bias.ccd_temp, bias.set_temp, bias.temp_key) == (
        "bias",
        0.0,
        -102.125,
        -100.0,
        -100.0,
    )
    assert bias.date_obs == dt.datetime(2019, 3, 26, 1, 4, 25)
    assert (bias.naxis1, bias.naxis2, bias.bitpix) == (1432, 1370, 16)
    light = frames["20190326.0126.fits"]
    assert (light.imagetyp, light.filter, light.exptime) == ("light", "VR", 300.0)
    assert light.imagetyp_header == "OBJECT"


def test_tircam2_string_exptime_filter1_and_no_imagetyp(real_catalog) -> None:
    _, frames = real_catalog
    light = frames["IC310_1.fits"]
    assert light.exptime == 40.0
    assert light.filter == "J"
    assert light.imagetyp is None  # no IMAGETYP and no type in the folder name: unclassified
    assert light.instrument == "TIRCAM2"
    assert frames["bias_1.fits"].filter == "BLOCK"
    assert frames["flats01.fits"].exptime == 6.0


def test_saao_kelvin_temperature_lower_case_object_date_only(real_catalog) -> None:
    _, frames = real_catalog
    frame = frames["a8280271.fits"]
    assert frame.ccd_temp == pytest.approx(-92.95)
    assert frame.temp_key == -93.0
    assert (frame.imagetyp, frame.imagetyp_header) == ("light", "object")
    assert frame.exptime == 150.04
    assert frame.gain == 1.9
    assert frame.filter is None  # FILTERS=48 is a wheel code, not a filter name
    assert frame.date_obs == dt.datetime(2013, 7, 13, 0, 57, 33)


def test_ylo0803_types_temperatures_and_the_flat_saved_as_light(real_catalog) -> None:
    _, frames = real_catalog
    bias = frames["bias_series_0c.00000001.BIAS.FIT"]
    assert (bias.imagetyp, bias.set_temp, bias.temp_key, bias.filter) == ("bias", 0.0, 0.0, "Red")
    assert bias.instrument == "SBIG STL-1001 3 CCD Camera"
    assert bias.gain is None  # only EGAIN, which is not GAIN
    dark = frames["dark_1series_10c_5m.00000001.DARK.FIT"]
    assert (dark.imagetyp, dark.exptime) == ("dark", 300.0)
    assert dark.ccd_temp == pytest.approx(9.8, abs=0.2)
    assert frames["flat_spec_1series_10s.00000001.FLAT.FIT"].imagetyp == "flat"
    assert frames["spec_flat_field.FIT"].imagetyp == "light"  # as labelled: --imagetyp fixes it
    darks = [f for f in frames.values() if f.imagetyp == "dark"]
    assert len(darks) == 16


def test_msumastro_dialects(real_catalog) -> None:
    _, frames = real_catalog
    bias = frames["biastest1.fit"]
    assert (bias.imagetyp, bias.bitpix) == ("bias", -32)
    assert bias.ccd_temp == pytest.approx(-35.03, abs=0.01)
    assert frames["aspen_trimmed.fit"].imagetyp == "flat"
    assert frames["maximdl_6_18_header.fit"].filter == "r"
    assert frames["neon-on-dome-10-sec-high-res-though-scope.fit"].imagetyp is None


def test_every_card_of_every_real_file_is_stored(real_catalog) -> None:
    catalog, frames = real_catalog
    with catalog.session() as session:
        counts = dict(
            session.execute(select(HeaderCard.frame_id, func.count()).group_by(HeaderCard.frame_id)).all()
        )
    for frame in frames.values():
        assert counts[frame.id] == len(astropy_header(Path(frame.path), frame.hdu)), frame.path
    known = {
        "20190326.0001.fits": 164,
        "bias_1.fits": 32,
        "a8280271.fits": 31,
        "bias_series_0c.00000001.BIAS.FIT": 45,
    }
    for name, n in known.items():
        assert counts[frames[name].id] == n, name


def test_stored_cards_equal_astropy(real_catalog) -> None:
    catalog, frames = real_catalog
    frame = frames["a8280271.fits"]
    header = astropy_header(Path(frame.path))
    with catalog.session() as session:
        cards = session.scalars(
            select(HeaderCard).where(HeaderCard.frame_id == frame.id).order_by(HeaderCard.position)
        ).all()
    assert [c.keyword for c in cards] == [card.keyword for card in header.cards]
    by_key = {c.keyword: c for c in cards}
    assert by_key["EXPTIME"].value_num == 150.04
    assert by_key["IMAGETYP"].value == "object"
    assert by_key["CCD-TEMP"].value_num == 180.2


# -- incremental ------------------------------------------------------------------------------------


@pytest.fixture
def night(tmp_path: Path, make_fits) -> Path:
    root = tmp_path / "raw"
    for i in range(3):
        make_fits(root / "BIAS" / f"b{i}.fits", {"IMAGETYP": "BIAS", "EXPTIME": 0.0}, seed=i)
        make_fits(root / "DARK" / f"d{i}.fits", {"EXPTIME": 60.0}, seed=10 + i)
        make_fits(root / "LIGHT" / f"l{i}.fits", {"IMAGETYP": "LIGHT", "FILTER": "R"}, seed=20 + i)
    return root


def test_reingest_of_an_unchanged_tree_adds_nothing(catalog: Catalog, night: Path) -> None:
    first = ingest(catalog, [night])
    assert (first.new, first.unchanged, first.exit_code) == (9, 0, 0)
    assert first.by_type == {"bias": 3, "dark": 3, "light": 3}
    frames, cards = count(catalog, Frame), count(catalog, HeaderCard)
    again = ingest(catalog, [night])
    assert (again.new, again.changed, again.unchanged, again.missing) == (0, 0, 9, 0)
    assert (count(catalog, Frame), count(catalog, HeaderCard)) == (frames, cards)
    assert count(catalog, Run) == 2


def test_dark_type_comes_from_the_folder(catalog: Catalog, night: Path) -> None:
    ingest(catalog, [night])
    dark = frames_by_name(catalog)["d0.fits"]
    assert (dark.imagetyp, dark.imagetyp_source) == ("dark", "folder")


def test_a_modified_file_is_detected_and_a_touched_one_is_not(catalog: Catalog, night: Path) -> None:
    ingest(catalog, [night])
    before = frames_by_name(catalog)
    touched = night / "LIGHT" / "l1.fits"
    os.utime(touched, (1_700_000_000, 1_700_000_000))
    modified = night / "LIGHT" / "l0.fits"
    with fits.open(modified, mode="update") as hdul:
        hdul[0].header["FILTER"] = "Ha"
    summary = ingest(catalog, [night])
    assert (summary.changed, summary.unchanged, summary.new) == (1, 8, 0)
    after = frames_by_name(catalog)
    assert after["l0.fits"].changed_at is not None
    assert after["l0.fits"].sha256 != before["l0.fits"].sha256
    assert after["l0.fits"].filter == "Ha"
    assert after["l0.fits"].id == before["l0.fits"].id
    assert after["l1.fits"].changed_at is None
    assert after["l1.fits"].mtime == 1_700_000_000
    with catalog.session() as session:
        values = session.scalars(
            select(HeaderCard.value).where(
                HeaderCard.frame_id == after["l0.fits"].id, HeaderCard.keyword == "FILTER"
            )
        ).all()
    assert values == ["Ha"]


def test_a_deleted_file_is_marked_missing_and_comes_back(catalog: Catalog, night: Path) -> None:
    ingest(catalog, [night])
    keep = night.parent / "kept.fits"
    shutil.move(night / "BIAS" / "b2.fits", keep)
    summary = ingest(catalog, [night])
    assert summary.missing == 1
    assert frames_by_name(catalog)["b2.fits"].status == "missing"
    assert count(catalog, Frame) == 9  # nothing is deleted
    shutil.move(keep, night / "BIAS" / "b2.fits")
    back = ingest(catalog, [night])
    assert (back.reappeared, back.missing, back.new) == (1, 0, 0)
    assert frames_by_name(catalog)["b2.fits"].status == "ok"


def test_ingesting_a_subfolder_does_not_mark_the_rest_missing(catalog: Catalog, night: Path) -> None:
    ingest(catalog, [night])
    summary = ingest(catalog, [night / "BIAS"])
    assert (summary.unchanged, summary.missing) == (3, 0)
    assert {f.status for f in frames_by_name(catalog).values()} == {"ok"}


def rows(catalog: Catalog) -> dict[str, tuple[object, ...]]:
    """What the catalog says of each frame: status, content, type, error."""
    return {
        name: (f.status, f.sha256, f.size, f.mtime, f.imagetyp, f.error)
        for name, f in frames_by_name(catalog).items()
    }


def test_a_folder_that_cannot_be_read_is_listed_not_read_and_its_frames_kept(
    catalog: Catalog, night: Path
) -> None:
    """docs/design.md, Ingest: a folder without permission is listed with the reason (exit status 1, the run
    partial); its catalogued frames are neither marked missing nor changed; once readable, it is read."""
    ingest(catalog, [night])
    before = rows(catalog)
    new = night / "LIGHT" / "l9.fits"
    shutil.copy(night / "LIGHT" / "l0.fits", new)
    with unreadable(night / "LIGHT"):
        summary = ingest(catalog, [night])
    reason = (
        "cannot read the folder: Permission denied; the FITS files in it were not looked at (check its "
        "permissions, then ingest again)"
    )
    assert summary.unreadable == [(str(night / "LIGHT"), reason)]
    assert (summary.new, summary.missing, summary.unchanged, summary.exit_code) == (0, 0, 6, 1)
    assert summary.as_dict()["not_read"] == [{"path": str(night / "LIGHT"), "reason": reason}]
    assert rows(catalog) == before
    with catalog.session() as session:
        assert session.scalars(select(Run.status).order_by(Run.id.desc())).first() == "partial"
    again = ingest(catalog, [night])
    assert (again.new, again.unchanged, again.unreadable, again.exit_code) == (1, 9, [], 0)


def test_files_of_a_folder_that_cannot_be_searched_are_listed_not_read(catalog: Catalog, night: Path) -> None:
    """A folder that can be listed but not searched (mode r--): its FITS files are each listed not read,
    their rows left as they are."""
    ingest(catalog, [night])
    before = rows(catalog)
    with unreadable(night / "DARK", listable=True):
        summary = ingest(catalog, [night])
    reason = "cannot be looked at: Permission denied (check the permissions of its folder)"
    assert summary.unreadable == [(str(night / "DARK" / f"d{i}.fits"), reason) for i in range(3)]
    assert (summary.missing, summary.changed, summary.rejected, summary.exit_code) == (0, 0, [], 1)
    assert rows(catalog) == before


def test_ingest_lists_what_it_could_not_read_and_exits_1(tmp_path: Path, night: Path) -> None:
    db = ["--db", str(tmp_path / "c.db")]
    with unreadable(night / "BIAS"):
        result = CliRunner().invoke(app, [*db, "ingest", str(night)])
        as_json = CliRunner().invoke(app, [*db, "ingest", "--json", str(night)])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].endswith("0 missing, 0 rejected, 1 not read")
    assert result.stderr == (
        f"Not read (1):\n  {night / 'BIAS'}: cannot read the folder: Permission denied; the FITS files in it "
        "were not looked at (check its permissions, then ingest again)\n"
    )
    assert as_json.exit_code == 1
    assert [item["path"] for item in json.loads(as_json.stdout)["not_read"]] == [str(night / "BIAS")]


def test_bad_files_are_rejected_with_reasons_while_the_rest_ingest(
    catalog: Catalog, night: Path, make_fits
) -> None:
    bad = night / "LIGHT"
    (bad / "empty.fits").write_bytes(b"")
    (bad / "notes.fits").write_text("This is not FITS.\n" * 200)
    good = make_fits(night / "tmp" / "t.fits", {"IMAGETYP": "LIGHT"}, shape=(100, 100))
    raw = good.read_bytes()
    (bad / "truncated_data.fits").write_bytes(raw[: 2880 + 5000])
    (bad / "truncated_header.fits").write_bytes(raw[:300])
    corrupt = bytearray(raw)
    corrupt[:80] = b"NOTFITS = 'garbage'".ljust(80)
    (bad / "corrupt.fits").write_bytes(bytes(corrupt))
    shutil.rmtree(night / "tmp")
    summary = ingest(catalog, [night])
    reasons = {Path(p).name: r for p, r in summary.rejected}
    assert reasons == {
        "corrupt.fits": "not a FITS file (does not start with SIMPLE =)",
        "empty.fits": "empty file (0 bytes)",
        "notes.fits": "not a FITS file (does not start with SIMPLE =)",
        "truncated_data.fits": "truncated data: the header promises 20000 bytes of pixels, "
        "15000 are missing (an interrupted copy or download?)",
        "truncated_header.fits": "truncated header (no END card)",
    }
    assert summary.new == 14
    assert summary.by_type == {"bias": 3, "dark": 3, "light": 3}
    assert summary.exit_code == 1
    frames = frames_by_name(catalog)
    assert frames["empty.fits"].status == "rejected"
    assert frames["empty.fits"].error == "empty file (0 bytes)"
    again = ingest(catalog, [night])  # still rejected, still reported, nothing re-read
    assert (again.unchanged, len(again.rejected), again.exit_code) == (14, 5, 1)


def test_names_that_are_not_utf8_are_rejected_alone(catalog: Catalog, night: Path, make_fits) -> None:
    """docs/design.md, Ingest: a file or folder name that is not valid UTF-8 (the catalog stores paths as
    text) is rejected alone, named with its bytes escaped and the fix; the rest is catalogued."""
    light = {"IMAGETYP": "LIGHT", "FILTER": "R"}
    make_fits(Path(os.fsdecode(bytes(night / "LIGHT") + b"/Caf\xe9.fits")), light)  # latin-1
    make_fits(Path(os.fsdecode(bytes(night / "LIGHT") + b"/\xff\xfe.fits")), light)  # never UTF-8
    make_fits(Path(os.fsdecode(bytes(night / "LIGHT") + b"/\xc3\x28.fits")), light)  # a bad sequence
    make_fits(Path(os.fsdecode(bytes(night) + b"/caf\xe9/l.fits")), light)  # a folder
    make_fits(night / "LIGHT" / "Café.fits", light)  # valid UTF-8: catalogued
    summary = ingest(catalog, [night])
    assert (summary.new, summary.by_type["light"], summary.exit_code) == (10, 4, 1)
    rejected = dict(summary.rejected)
    assert rejected == {
        f"{night}/LIGHT/Caf\\xe9.fits": "the file name Caf\\xe9.fits is not valid UTF-8 (byte \\xe9, perhaps "
        "latin-1): the catalog stores paths as text; rename the file (for example with convmv -f latin1 "
        "-t utf8 --notest)",
        f"{night}/LIGHT/\\xff\\xfe.fits": "the file name \\xff\\xfe.fits is not valid UTF-8 (byte \\xff, "
        "perhaps latin-1): the catalog stores paths as text; rename the file (for example with convmv -f "
        "latin1 -t utf8 --notest)",
        f"{night}/LIGHT/\\xc3(.fits": "the file name \\xc3(.fits is not valid UTF-8 (byte \\xc3, perhaps "
        "latin-1): the catalog stores paths as text; rename the file (for example with convmv -f latin1 "
        "-t utf8 --notest)",
        f"{night}/caf\\xe9/l.fits": "the folder name caf\\xe9 is not valid UTF-8 (byte \\xe9, perhaps "
        "latin-1): the catalog stores paths as text; rename the folder (for example with convmv -f latin1 "
        "-t utf8 --notest)",
    }
    assert "Café.fits" in frames_by_name(catalog)
    again = ingest(catalog, [night])  # never catalogued, so reported again until renamed
    assert (again.new, again.unchanged, len(again.rejected)) == (0, 10, 4)
    alone = ingest(catalog, [Path(os.fsdecode(bytes(night) + b"/caf\xe9"))])  # a root that is not text
    assert (alone.new, [p for p, _ in alone.rejected]) == (0, [f"{night}/caf\\xe9/l.fits"])
    with catalog.session() as session:
        run = session.get(Run, alone.run_id)
        assert run is not None
        assert run.arguments["paths"] == [f"{night}/caf\\xe9"]
    os.rename(os.fsencode(night / "LIGHT") + b"/Caf\xe9.fits", night / "LIGHT" / "Cafe.fits")
    renamed = ingest(catalog, [night])
    assert (renamed.new, len(renamed.rejected)) == (1, 3)


def test_odd_but_valid_names_are_catalogued(catalog: Catalog, night: Path, make_fits) -> None:
    """Neighbours of the names above that are text: a newline, a leading dash, a backslash."""
    for name in ("new\nline.fits", "-dash.fits", "--help.fits", "back\\slash.fits", " lead.fits"):
        make_fits(night / "LIGHT" / name, {"IMAGETYP": "LIGHT"})
    summary = ingest(catalog, [night])
    assert (summary.new, summary.rejected, summary.exit_code) == (14, [], 0)
    frames = frames_by_name(catalog)
    assert {"new\nline.fits", "-dash.fits", "--help.fits", "back\\slash.fits", " lead.fits"} <= set(frames)


# -- files ccdcal wrote --------------------------------------------------------------------------------


def test_files_ccdcal_wrote_are_skipped_with_a_note(tmp_path: Path, db_url: str) -> None:
    """docs/design.md, Ingest: `ingest .` in the project folder catalogues no master and no calibrated
    light as a raw frame (their CCDCALV card), so nothing is calibrated twice; exit 0."""
    night = processed_night(tmp_path, db=db_url)
    packed = night.calibrated / "Light_001_cal.fits.gz"  # gzipped: found by the full header parse
    packed.write_bytes(gzip.compress((night.calibrated / "Light_001_cal.fits").read_bytes()))
    result = CliRunner().invoke(app, ["--db", db_url, "ingest", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["new"], summary["rejected"]) == (0, [])
    notes = {Path(s["path"]).name: s["note"] for s in summary["skipped"]}
    outputs = {"Light_001_cal.fits", "Light_002_cal.fits", packed.name}
    assert set(notes) == {BIAS, *DARK.values(), *FLAT.values(), *outputs}
    version = f"written by ccdcal {__version__} (its CCDCALV card), not a raw frame: not catalogued"
    assert notes[BIAS] == f"a master bias {version}"
    assert notes["Light_002_cal.fits"] == f"a calibrated frame {version}"
    assert notes[packed.name] == f"a calibrated frame {version}"
    shown = CliRunner().invoke(app, ["--db", db_url, "ingest", str(tmp_path)])
    assert shown.exit_code == 0
    assert ", 0 rejected, 10 skipped (written by ccdcal)\n" in shown.stdout
    assert "\nSkipped (10; files ccdcal wrote, not raw frames):\n" in shown.stdout
    assert f"\n  {packed}: a calibrated frame {version}\n" in shown.stdout
    again = night.process()
    assert again.nothing_done, again.headline()
    assert sorted(p.name for p in night.calibrated.iterdir()) == [
        ".ccdcal-catalog",  # the folder's owner (docs/design.md, Files)
        "Light_001_cal.fits",
        "Light_001_cal.fits.gz",
        "Light_002_cal.fits",
    ]


def test_outputs_written_inside_the_raw_tree_are_not_calibrated_again(tmp_path: Path, db_url: str) -> None:
    """`process --output-dir` (and `--masters-dir`) inside the raw tree, then `ingest` of the tree."""
    night = simulate_night(tmp_path / "raw", seed=3, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    options = ProcessOptions(
        masters_dir=night.root / "LIGHT" / "masters", output_dir=night.root / "LIGHT" / "cal", jobs=1
    )
    with Catalog(db_url) as catalog:
        ingest(catalog, [night.root])
        assert process(catalog, options).exit_code == 0
        summary = ingest(catalog, [night.root])
        assert (summary.new, len(summary.skipped), summary.exit_code) == (0, 9, 0)
        again = process(catalog, options)
    assert again.nothing_done, again.headline()
    assert not list(night.root.rglob("*_cal_cal*"))


def test_a_file_with_the_bytes_of_a_recorded_output_is_skipped(tmp_path: Path, db_url: str) -> None:
    """A recorded output's sha256 marks a file ccdcal wrote, CCDCALV card or not."""
    night = processed_night(tmp_path, db=db_url)
    copy = tmp_path / "elsewhere" / "copy.fits"
    copy.parent.mkdir()
    shutil.copy(night.raw("Light_001.fits"), copy)
    with Catalog(db_url) as catalog:
        with catalog.session() as session:  # as if ccdcal had written those bytes as its output
            (calibration,) = session.scalars(select(Calibration).limit(1))
            calibration.sha256 = sha256_file(copy)
            calibration_id, name = calibration.id, Path(calibration.path or "").name
        summary = ingest(catalog, [copy.parent])
    assert (summary.new, summary.exit_code) == (0, 0)
    assert summary.skipped == [
        (
            str(copy),
            f"the same bytes as calibration:{calibration_id} ({name}), a file ccdcal wrote, not a raw frame: "
            "not catalogued",
        )
    ]


def test_a_ccdcal_output_catalogued_before_is_no_longer_planned(tmp_path: Path, db_url: str) -> None:
    """A frame catalogued as raw before ingest skipped ccdcal's files (its header cards hold CCDCALV) is
    planned neither as a light nor as an input of a master."""
    night = simulate_night(tmp_path / "raw", seed=3, shape=(48, 64), n_bias=4, n_dark=3, n_flat=3, n_light=2)
    options = ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "cal", jobs=1)
    with Catalog(db_url) as catalog:
        ingest(catalog, [night.root])
        with catalog.session() as session:
            light, bias = (
                session.scalars(select(Frame).where(Frame.path == str(p))).one()
                for p in (sorted(night.files["light"])[0], sorted(night.files["bias"])[0])
            )
            for frame in (light, bias):
                session.add(
                    HeaderCard(frame_id=frame.id, hdu=0, position=9999, keyword="CCDCALV", value="0.1.0")
                )
            light_path = light.path
        summary = process(catalog, options)
    assert light_path not in [x.path for x in summary.lights]
    assert len(summary.lights) == 1
    (bias_master,) = [m for m in summary.masters if "bias" in (m.path or "")]
    assert bias_master.n_inputs == 3


def test_forced_imagetyp_applies_to_unchanged_files_too(catalog: Catalog, night: Path) -> None:
    ingest(catalog, [night])
    summary = ingest(catalog, [night / "LIGHT"], imagetyp="flat")
    assert summary.forced == 3
    frames = frames_by_name(catalog)
    assert {(frames[f"l{i}.fits"].imagetyp, frames[f"l{i}.fits"].imagetyp_source) for i in range(3)} == {
        ("flat", "forced")
    }
    assert frames["b0.fits"].imagetyp == "bias"
    with pytest.raises(UsageError, match="--imagetyp 'sky': use one of bias, dark, flat, light"):
        ingest(catalog, [night], imagetyp="sky")


def test_gzip_and_tile_compressed_files(catalog: Catalog, tmp_path: Path, make_fits) -> None:
    plain = make_fits(tmp_path / "src" / "a.fits", {"IMAGETYP": "FLAT", "FILTER": "R"}, shape=(64, 64))
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.FITS.GZ").write_bytes(gzip.compress(plain.read_bytes()))
    data = fits.getdata(plain)
    header = fits.getheader(plain)
    fits.CompImageHDU(data.astype(np.int32), header).writeto(folder / "b.fits.fz")
    summary = ingest(catalog, [folder])
    assert (summary.new, summary.rejected) == (2, [])
    frames = frames_by_name(catalog)
    assert frames["a.FITS.GZ"].hdu == 0
    assert (frames["b.fits.fz"].hdu, frames["b.fits.fz"].naxis1) == (1, 64)
    assert frames["b.fits.fz"].imagetyp == "flat"
    assert frames["b.fits.fz"].bitpix == 32


def test_parallel_and_serial_ingest_store_the_same_rows(tmp_path: Path, make_fits) -> None:
    root = tmp_path / "many"
    for i in range(60):
        make_fits(root / f"f{i:03d}.fits", {"IMAGETYP": "DARK", "EXPTIME": float(i)}, seed=i)

    def snapshot(jobs: int) -> list[tuple]:
        with Catalog(tmp_path / f"j{jobs}.db") as catalog:
            ingest(catalog, [root], jobs=jobs)
            with catalog.session() as session:
                frames = session.execute(
                    select(Frame.path, Frame.sha256, Frame.exptime).order_by(Frame.path)
                ).all()
                cards = session.execute(
                    select(Frame.path, HeaderCard.position, HeaderCard.keyword, HeaderCard.value)
                    .join(Frame, Frame.id == HeaderCard.frame_id)
                    .order_by(Frame.path, HeaderCard.position)
                ).all()
        return [tuple(r) for r in frames + cards]

    assert snapshot(1) == snapshot(2)


def test_raw_files_are_not_modified(catalog: Catalog, night: Path) -> None:
    before = {p: (p.read_bytes(), p.stat().st_mtime) for p in night.rglob("*.fits")}
    ingest(catalog, [night])
    ingest(catalog, [night], imagetyp="light")
    assert before == {p: (p.read_bytes(), p.stat().st_mtime) for p in night.rglob("*.fits")}


def test_a_missing_path_is_a_usage_error(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nowhere: no such file or folder; check the path"):
        ingest(catalog, [tmp_path / "nowhere"])


@pytest.mark.postgres
def test_postgresql_catalog_stores_the_same_rows(pg_url: str, tmp_path: Path, night: Path) -> None:
    def snapshot(catalog: Catalog) -> list[tuple]:
        ingest(catalog, [night])
        with catalog.session() as session:
            return [
                tuple(r)
                for r in session.execute(
                    select(
                        Frame.path, Frame.imagetyp, HeaderCard.position, HeaderCard.keyword, HeaderCard.value
                    )
                    .join(Frame, Frame.id == HeaderCard.frame_id)
                    .order_by(Frame.path, HeaderCard.position)
                )
            ]

    with Catalog(pg_url) as pg, Catalog(tmp_path / "lite.db") as lite:
        rows = snapshot(pg)
        assert rows == snapshot(lite)
        assert len(rows) > 9 * 6
        again = ingest(pg, [night])
        assert (again.new, again.unchanged) == (0, 9)


def test_reader_plan_follows_jobs_and_file_sizes(monkeypatch) -> None:
    from ccdcal.ingestion import readers
    from ccdcal.ingestion.readers import ReaderPlan, reader_plan

    monkeypatch.setattr(readers, "usable_cores", lambda: 4)
    assert reader_plan(1, [100] * 5000) == ReaderPlan("threads", 1)
    assert reader_plan(3, [100] * 10) == ReaderPlan("processes", 3)
    assert reader_plan(None, [8 << 20] * 10) == ReaderPlan("threads", 4)
    assert reader_plan(None, [20_000] * 3000) == ReaderPlan("processes", 3)
    assert reader_plan(None, [20_000] * 10) == ReaderPlan("threads", 1)
    monkeypatch.setattr(readers, "usable_cores", lambda: 1)
    assert reader_plan(None, [20_000] * 3000) == ReaderPlan("threads", 1)


def test_reader_plan_counts_the_cores_this_process_may_use(monkeypatch) -> None:
    """Ingest's readers follow the CPU affinity (a container's or batch system's CPU set), not the
    machine's core count."""
    from ccdcal.ingestion.readers import ReaderPlan, reader_plan

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert reader_plan(None, [20_000] * 3000) == ReaderPlan("threads", 1)
    assert reader_plan(None, [8 << 20] * 10) == ReaderPlan("threads", 1)


@pytest.mark.parametrize(
    ("imagetyp", "what"),
    [
        ("MASTER BIAS", "a master bias"),
        ("MASTER BPM", "a bad-pixel mask"),
        ("Light Frame", "a calibrated frame"),
    ],
)
def test_the_note_of_a_file_ccdcal_wrote_names_what_it_is(imagetyp: str, what: str) -> None:
    from ccdcal.ingestion.reader import ccdcal_output_note

    assert ccdcal_output_note("0.1.0", imagetyp) == (
        f"{what} written by ccdcal 0.1.0 (its CCDCALV card), not a raw frame: not catalogued"
    )
