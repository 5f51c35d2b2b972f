"""What a report shows, per scope: masters, lights with their masters, runs, problems, drift series."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster
from ccdcal.errors import NotFoundError, UsageError
from ccdcal.report import ReportScope, gather, parse_since
from tests.report.conftest import REJECTED_NAME, Night

MASTERS = [
    ("bias", "master_bias_b2x2_g120_sNA_C-10.fits"),
    ("dark", "master_dark_b2x2_g120_2s_C-10.fits"),
    ("dark", "master_dark_b2x2_g120_5s_C-10.fits"),
    ("dark", "master_dark_b2x2_g120_60s_C-10.fits"),
    ("dark", "master_dark_b2x2_g120_300s_C-10.fits"),
    ("flat", "master_flat_b2x2_g120_sNA_C-10_Ha.fits"),
    ("flat", "master_flat_b2x2_g120_sNA_C-10_R.fits"),
]
NOT_CALIBRATED = "no dark at 120 s, -10.2 °C ±2 (nearest: 60 s at -10.07 °C)"


def problems(data: Any) -> list[tuple[str, str, str, int | None]]:
    return [(p.category, Path(p.subject).name, p.reason, p.run_id) for p in data.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-14", dt.datetime(2026, 3, 14)),
        (" 2026-03-14T18:30 ", dt.datetime(2026, 3, 14, 18, 30)),
        ("2026-03-14T18:30+01:00", dt.datetime(2026, 3, 14, 17, 30)),
        ("2026-03-14T18:30:00Z", dt.datetime(2026, 3, 14, 18, 30)),
    ],
)
def test_parse_since_gives_naive_utc(text: str, expected: dt.datetime) -> None:
    assert parse_since(text) == expected


def test_parse_since_and_scope_errors() -> None:
    with pytest.raises(UsageError) as caught:
        parse_since("yesterday")
    assert str(caught.value) == (
        "--since 'yesterday' is not a date: give an ISO date such as 2026-03-14 or 2026-03-14T18:00 "
        "(UTC unless an offset such as +01:00 is given)"
    )
    with pytest.raises(UsageError, match=r"^--run and --since cannot be used together: choose one$"):
        ReportScope(run_id=1, since=dt.datetime(2026, 1, 1))
    assert ReportScope(since=dt.datetime(2026, 3, 14, 18)).describe() == "since 2026-03-14 18:00:00 UTC"
    assert ReportScope(run_id=4).describe() == "run 4"
    assert ReportScope().describe() == "the catalog now"


def test_the_catalog_now(night: Night) -> None:
    with Catalog(night.db) as catalog:
        data = gather(catalog, ReportScope())
        with catalog.session() as session:
            links = {
                (c.frame_id, link.role): (link.master_id, link.delta_temp, link.delta_time, link.scale)
                for c, link in session.execute(
                    select(Calibration, CalibrationMaster).join(
                        CalibrationMaster, CalibrationMaster.calibration_id == Calibration.id
                    )
                )
            }
    assert [(m.kind, Path(m.path).name) for m in data.masters] == MASTERS
    assert all(m.in_scope and m.status == "current" and m.run_id == night.process_run for m in data.masters)
    bias = data.masters[0]
    assert (bias.n_inputs, len(bias.inputs), bias.calibrators) == (3, 3, [])
    assert [Path(p).name for p, _ in bias.inputs] == ["Bias_001.fits", "Bias_002.fits", "Bias_003.fits"]
    assert not any(changed for _, changed in bias.inputs)
    assert bias.median is not None
    assert 490 < bias.median < 510
    assert bias.rejected_fraction is not None
    assert 0 <= bias.rejected_fraction < 0.2
    flat_r = data.masters[-1]
    assert [(role, Path(path).name) for role, path, _ in flat_r.calibrators] == [
        ("bias", "master_bias_b2x2_g120_sNA_C-10.fits"),
        ("dark", "master_dark_b2x2_g120_2s_C-10.fits"),
    ]
    assert [Path(x.raw_path).name for x in data.lights] == [f"Light_00{i}.fits" for i in (1, 2, 3)]
    for light in data.lights:
        assert [u.role for u in light.masters] == ["bias", "dark", "flat"]
        for u in light.masters:
            assert links[light.frame_id, u.role] == (u.master_id, u.delta_temp, u.delta_time, u.scale)
        assert light.status == "current"
        assert light.output is not None
        assert Path(light.output).parent == night.calibrated
        assert (light.notes, light.replaced_by) == ([], None)
    assert problems(data) == [
        ("rejected", REJECTED_NAME, "not a FITS file (does not start with SIMPLE =)", night.ingest_run),
        ("not calibrated", "Light_120s.fits", NOT_CALIBRATED, night.process_run),
    ]
    assert (data.pending, data.plan_run) == ([], night.process_run)
    assert [(r.id, r.command, r.status, r.in_scope) for r in data.runs] == [
        (night.process_run, "process", "partial", True)
    ]
    assert data.runs[0].versions["ccdcal"] is not None
    assert data.runs[0].arguments["masters_dir"] == str(night.masters)
    assert [(s.kind, s.label, len(s.points)) for s in data.drift] == [  # see test_levels.py
        ("bias", "ZWO ASI294MM Pro b2x2 g120 C-10", 1),
        ("dark", "ZWO ASI294MM Pro b2x2 g120 C-10", 1),
    ]
    assert data.drift[1].points[0].masters == tuple(m.id for m in data.masters[1:5])


def test_one_run(night: Night) -> None:
    with Catalog(night.db) as catalog:
        ingested = gather(catalog, ReportScope(run_id=night.ingest_run))
        processed = gather(catalog, ReportScope(run_id=night.process_run))
        with pytest.raises(NotFoundError) as caught:
            gather(catalog, ReportScope(run_id=99))
    assert (ingested.masters, ingested.lights, [r.id for r in ingested.runs]) == ([], [], [night.ingest_run])
    assert problems(ingested) == [
        ("rejected", REJECTED_NAME, "not a FITS file (does not start with SIMPLE =)", night.ingest_run)
    ]
    assert [Path(m.path).name for m in processed.masters] == [name for _, name in MASTERS]
    assert len(processed.lights) == 3
    assert problems(processed) == [("not calibrated", "Light_120s.fits", NOT_CALIBRATED, night.process_run)]
    assert [r.id for r in processed.runs] == [night.process_run]
    assert str(caught.value) == "--run 99: no such run (runs are 1 to 2); see the runs table"


def test_since(night: Night) -> None:
    with Catalog(night.db) as catalog:
        later = gather(catalog, ReportScope(since=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
        before = gather(catalog, ReportScope(since=dt.datetime(2000, 1, 1)))
    assert (later.masters, later.lights, later.runs, later.problems) == ([], [], [], [])
    assert len(before.masters) == 7
    assert len(before.lights) == 3
    assert [(r.id, r.in_scope) for r in before.runs] == [(night.ingest_run, True), (night.process_run, True)]
    assert problems(before) == [
        ("rejected", REJECTED_NAME, "not a FITS file (does not start with SIMPLE =)", night.ingest_run),
        ("not calibrated", "Light_120s.fits", NOT_CALIBRATED, night.process_run),
    ]


def test_a_lights_notes_say_what_its_mask_flags() -> None:
    """The saturated pixels (bit 8) and the flat's low response (bit 16) are notes of the light; a light
    without a saturation level says so."""
    from ccdcal.catalog.models import Frame
    from ccdcal.report.data import _light

    frame = Frame(id=1, path="/raw/Light_001.fits", hdu=0, filter="R", exptime=60.0)
    steps = {
        "flat": {"status": "applied", "flat_min": 0.01, "masked": 0, "flat_low": 0.5, "low": 120},
        "saturation": {"status": "applied", "level": 65535.0, "source": "data type", "flagged": 42},
    }
    calibration = Calibration(id=1, frame_id=1, path="/c/Light_001_cal.fits", status="current", steps=steps)
    assert _light(calibration, frame).notes == [
        "flat: 120 pixels below flat_low 0.5: low response, vignetted (MASK bit 16)",
        "saturation: 42 raw pixels at or above 65535 ADU (data type) flagged (MASK bit 8)",
    ]
    reason = "no saturation level known (BITPIX -32: no data-type maximum): pass --saturation"
    calibration.steps = {"saturation": {"status": "not_available", "reason": reason, "level": None}}
    assert _light(calibration, frame).notes == [f"saturation: n/a — {reason}"]
