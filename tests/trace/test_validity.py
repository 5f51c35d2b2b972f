"""Validity: ``certify`` and ``decertify``, ``--max-age``, the reasons they give; and ``--as-of``: the
reading commands answer as the catalog stood before and after a mark-bad, a new master version and a
decertify."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master, StateChange, utcnow
from ccdcal.catalog.queries import MatchRules, MaxAge
from ccdcal.cli import app
from ccdcal.errors import UsageError
from ccdcal.lights.pipeline import dry_run, process
from ccdcal.trace.validity import certify, decertify
from tests.processed_night import BIAS, FLAT, processed_night


def _ids(db: Any, model: type, **where: Any) -> dict[str, int]:
    with Catalog(db) as catalog, catalog.reading() as session:
        if model is Master:
            return {Path(m.path).name: m.id for m in session.scalars(select(Master))}
        return {
            Path(f.path).name: f.id for f in session.scalars(select(Frame).where(Frame.imagetyp == "light"))
        }


def _current(db: Any) -> dict[int, int]:
    """Light id → id of its current calibration."""
    with Catalog(db) as catalog, catalog.reading() as session:
        rows = session.execute(
            select(Calibration.frame_id, Calibration.id).where(Calibration.status == "current")
        )
        return dict(rows.all())


def _light_dates(db: Any) -> dict[str, dt.datetime]:
    with Catalog(db) as catalog, catalog.reading() as session:
        lights = session.scalars(select(Frame).where(Frame.imagetyp == "light"))
        return {Path(f.path).name: f.date_obs for f in lights}


def test_decertify_and_certify_recalibrate_exactly_the_lights_of_the_span(
    tmp_path: Path, db_url: str
) -> None:
    """On SQLite and PostgreSQL: the master bias decertified from Light_002's date on — the next process
    calibrates Light_002 again (without a bias, allowed missing), Light_001 stays current; certified again
    for every date, Light_002 gets it back; each change recorded in ``state_changes``."""
    night = processed_night(tmp_path, db=db_url)
    dates = _light_dates(db_url)
    first, second = sorted(dates)
    assert dates[first] < dates[second]
    lights = _ids(db_url, Frame)
    bias = _ids(db_url, Master)[BIAS]
    before = _current(db_url)
    options = night.options()
    options = type(options)(**{**vars(options), "allow_missing": ("bias",)})
    with Catalog(db_url) as catalog:
        result = decertify(catalog, f"master:{bias}", dates[second], None)
        assert result.after == (None, dates[second] - dt.timedelta(microseconds=1))
        assert [a["light_id"] for a in result.affected] == [lights[second]]
        summary = process(catalog, options)
    after = _current(db_url)
    assert after[lights[first]] == before[lights[first]]
    assert after[lights[second]] != before[lights[second]]
    outcome = {Path(light.path).name: light for light in summary.lights}
    assert outcome[second].outcome == "calibrated"
    assert outcome[first].outcome == "current"
    with Catalog(db_url) as catalog:
        certify(catalog, f"master:{bias}")
        again = process(catalog, options)
        with catalog.reading() as session:
            changes = session.execute(
                select(StateChange.column_name, StateChange.old, StateChange.new)
                .where(StateChange.table_name == "masters", StateChange.row_id == bias)
                .where(StateChange.column_name.in_(("valid_from", "valid_to")))
                .order_by(StateChange.id)
            ).all()
    assert [light.outcome for light in again.lights if Path(light.path).name == first] == ["current"]
    assert [light.outcome for light in again.lights if Path(light.path).name == second] == ["calibrated"]
    assert [c[0] for c in changes] == ["valid_to", "valid_to"]
    assert changes[1][2] is None


def test_decertify_refuses_what_one_range_cannot_hold(tmp_path: Path) -> None:
    night = processed_night(tmp_path)
    bias = _ids(night.db, Master)[BIAS]
    day = dt.datetime(2026, 3, 14)
    with Catalog(night.db) as catalog:
        with pytest.raises(UsageError, match="split the master's range"):
            decertify(catalog, f"master:{bias}", day, day + dt.timedelta(hours=1))
        assert decertify(catalog, f"master:{bias}", None, day).after == (
            day + dt.timedelta(microseconds=1),
            None,
        )
        with pytest.raises(UsageError, match="mark it bad instead"):
            decertify(catalog, f"master:{bias}", day, None)
        with pytest.raises(UsageError, match="needs --from or --to"):
            decertify(catalog, f"master:{bias}")
        with pytest.raises(UsageError, match="not a master"):
            certify(catalog, "frame:1", day, None)


def test_a_light_beyond_the_flats_max_age_gets_no_flat_with_the_rule_named(tmp_path: Path) -> None:
    night = processed_night(tmp_path)
    with Catalog(night.db) as catalog:
        with catalog.session() as session:
            flat = session.scalars(select(Master).where(Master.path.endswith(FLAT["R"]))).one()
            session.execute(
                update(Frame)
                .where(Frame.path.endswith("Light_001.fits"))
                .values(date_obs=flat.date_obs_mean + dt.timedelta(days=12))
            )
        rules = MatchRules(max_age=MaxAge(flat=dt.timedelta(days=7)))
        options = night.options()
        plan = dry_run(catalog, type(options)(**{**vars(options), "rules": rules}))
    (light,) = [x for x in plan.lights if x.path.endswith("Light_001.fits")]
    assert light.outcome == "cannot"
    assert "newest is 12 days old, max age 7 days" in light.reason
    assert "flat" in light.reason


def test_max_age_is_refused_in_a_bad_form_with_exit_status_2(tmp_path: Path) -> None:
    night = processed_night(tmp_path)
    result = CliRunner().invoke(app, ["--db", str(night.db), "process", "--dry-run", "--max-age", "flat=7x"])
    assert result.exit_code == 2
    assert "--max-age flat=7x is not an age" in result.stderr


def _json(db: Any, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--db", str(db), *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _stable(answer: Any) -> Any:
    """An answer without what depends on the files on disk now (provenance's checks of each file)."""
    if isinstance(answer, dict):
        return {k: _stable(v) for k, v in answer.items() if k not in ("file", "files")}
    if isinstance(answer, list):
        return [_stable(v) for v in answer]
    return answer


def _planned(answer: Any) -> Any:
    """A plan without the version suffixes of the masters it would build: a provisional master takes the
    first free name on disk, which the versions built since have taken."""
    return json.loads(re.sub(r"_v\d+\.fits", ".fits", json.dumps(answer)))


def test_as_of_answers_as_the_catalog_stood(tmp_path: Path, db_url: str) -> None:
    """status, provenance, masters --list and process --dry-run, asked --as-of a time, give the JSON they
    gave then: before and after a mark-bad of a bias frame (a new master version follows), and a decertify."""
    night = processed_night(tmp_path, db=db_url, n_bias=4)
    output = night.calibrated.as_posix() + "/Light_001_cal.fits"

    def ask() -> dict[str, Any]:
        return {
            "status": _json(db_url, "status"),
            "provenance": _stable(_json(db_url, "provenance", output)),
            "masters": _json(db_url, "masters", "--list", "--all"),
            "plan": _json(db_url, "process", "--dry-run", "--masters-dir", str(night.masters), "--output-dir",
                          str(night.calibrated), "--allow-missing", "bias"),
        }  # fmt: skip

    moments: list[tuple[dt.datetime, dict[str, Any]]] = []

    def snapshot() -> None:
        time.sleep(0.01)
        moments.append((utcnow(), ask()))
        time.sleep(0.01)

    snapshot()
    runner = CliRunner()
    marked = runner.invoke(
        app, ["--db", db_url, "mark-bad", str(night.raw("Bias_001.fits")), "--reason", "hot"]
    )
    assert marked.exit_code == 0, marked.output
    snapshot()
    assert night.process().exit_code == 0  # a new bias version, the lights calibrated again
    snapshot()
    bias = max(m for name, m in _ids(db_url, Master).items() if name.startswith("master_bias"))
    dates = _light_dates(db_url)
    cut = runner.invoke(app, ["--db", db_url, "decertify", f"master:{bias}", "--from",
                              dates["Light_002.fits"].isoformat()])  # fmt: skip
    assert cut.exit_code == 0, cut.output
    snapshot()
    for when, then in moments:
        stamp = when.isoformat()
        again = {
            "status": _json(db_url, "status", "--as-of", stamp),
            "provenance": _stable(
                _json(db_url, "provenance", output, "--as-of", stamp)
            ),
            "masters": _json(db_url, "masters", "--list", "--all", "--as-of", stamp),
            "plan": _json(db_url, "process", "--dry-run", "--masters-dir", str(night.masters), "--output-dir",
                          str(night.calibrated), "--allow-missing", "bias", "--as-of", stamp),
        }  # fmt: skip
        for command in then:
            if command in ("status", "plan"):
                again[command], then[command] = _planned(again[command]), _planned(then[command])
            assert again[command] == then[command], (command, stamp)
