"""Claims and recovery (ccdcal.lights.claims): busy lights, dead runs taken over, half-done files repaired."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Claim, Frame, Run, utcnow
from ccdcal.files.fitsio import sha256_file
from ccdcal.lights.claims import busy, recover, run_alive
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import dry_run, process
from ccdcal.runtime.owners import HOST, process_alive
from tests.robustness.cli_runs import content, copy_catalog, ingested_night, state


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A night of 4 lights ingested into template.db, and a processed copy in ``done/``."""
    base = ingested_night(tmp_path_factory.mktemp("claims"), seed=23, lights=4, shape=(40, 48))
    done = base / "done"
    done.mkdir()
    copy_catalog(base / "template.db", done / "c.db")
    with Catalog(done / "c.db") as catalog:
        assert process(catalog, options(done)).exit_code == 0
    return base


def options(folder: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {
        "masters_dir": folder / "masters",
        "output_dir": folder / "calibrated",
        "jobs": 1,
    }
    return ProcessOptions(**(values | changes))


def fresh(night: Path, tmp_path: Path) -> Catalog:
    copy_catalog(night / "template.db", tmp_path / "c.db")
    return Catalog(tmp_path / "c.db")


def add_run(catalog: Catalog, *, pid: int, host: str = socket.gethostname(), ago: float = 60.0) -> int:
    with catalog.session() as session:
        row = Run(
            command="process",
            arguments={},
            started_at=utcnow() - dt.timedelta(seconds=ago),
            status="running",
            ccdcal_version="test",
            host=host,
            pid=pid,
        )
        session.add(row)
        session.flush()
        return row.id


def light_ids(catalog: Catalog) -> dict[str, int]:
    with catalog.session() as session:
        rows = session.execute(select(Frame.path, Frame.id).where(Frame.imagetyp == "light"))
        return {Path(path).name: frame_id for path, frame_id in rows}


def add_claim(catalog: Catalog, run_id: int, frame_id: int, output: Path, expires: float = 600.0) -> None:
    now = utcnow()
    with catalog.session() as session:
        session.add(
            Claim(
                frame_id=frame_id,
                run_id=run_id,
                output=str(output),
                claimed_at=now,
                expires_at=now + dt.timedelta(seconds=expires),
            )
        )


def test_liveness_of_processes_and_runs() -> None:
    assert process_alive(os.getpid(), HOST) is True
    assert process_alive(dead_pid(), HOST) is False
    assert process_alive(1, "another-machine") is None
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_alive(child.pid, HOST, since=time.time()) is True
        assert process_alive(child.pid, HOST, since=time.time() - 3600) is False  # started later: reused
    finally:
        child.kill()
        child.wait()
    run = Run(status="running", pid=os.getpid(), host=socket.gethostname(), started_at=utcnow())
    assert run_alive(run) is True
    run.status = "ok"
    assert run_alive(run) is False


def test_lights_claimed_by_a_live_run_are_busy(night: Path, tmp_path: Path) -> None:
    with fresh(night, tmp_path) as catalog:
        other = add_run(catalog, pid=os.getpid())  # alive: this very process
        ids = light_ids(catalog)
        add_claim(catalog, other, ids["Light_001.fits"], tmp_path / "calibrated" / "Light_001_cal.fits")
        planned = dry_run(catalog, options(tmp_path))
        assert [x.outcome for x in planned.lights] == ["busy", "calibrate", "calibrate", "calibrate"]
        summary = process(catalog, options(tmp_path))
        (light,) = summary.of("busy")
        assert light.reason is not None
        assert light.reason.startswith(f"being calibrated by run {other} (pid {os.getpid()} on ")
        assert summary.exit_code == 0
        assert summary.headline().endswith(", 1 being calibrated by another run")
        assert len(summary.of("calibrated")) == 3
        with catalog.session() as session:
            assert session.scalar(select(func.count()).select_from(Claim)) == 1  # the other run's
            session.get(Run, other).status = "ok"  # it ended without releasing its claim
        assert [x.outcome for x in process(catalog, options(tmp_path)).lights].count("calibrated") == 1
        with catalog.session() as session:
            assert session.scalar(select(func.count()).select_from(Claim)) == 0


def test_a_run_on_another_machine_holds_its_claims_until_they_expire(night: Path, tmp_path: Path) -> None:
    with fresh(night, tmp_path) as catalog:
        remote = add_run(catalog, pid=1, host="another-machine")
        ids = light_ids(catalog)
        add_claim(catalog, remote, ids["Light_001.fits"], tmp_path / "a.fits")
        add_claim(catalog, remote, ids["Light_002.fits"], tmp_path / "b.fits", expires=-1.0)
        with catalog.session() as session:
            assert set(busy(session, None).frames) == {ids["Light_001.fits"]}
        summary = process(catalog, options(tmp_path))
        assert [x.outcome for x in summary.lights] == ["busy", "calibrated", "calibrated", "calibrated"]
        with catalog.session() as session:
            assert [c.frame_id for c in session.scalars(select(Claim))] == [ids["Light_001.fits"]]
            assert session.get(Run, remote).status == "running"  # its liveness cannot be told from here


def test_a_dead_runs_half_done_files_are_repaired(night: Path, tmp_path: Path) -> None:
    """Published but never registered (an output, a master), or replaced but never registered: removed,
    and written again under the same names; foreign and older files are left alone."""
    done = night / "done"
    reference = state(done / "c.db", done)
    (tmp_path / "calibrated").mkdir()
    (tmp_path / "masters").mkdir()
    with fresh(night, tmp_path) as catalog:
        dead = add_run(catalog, pid=dead_pid())
        ids = light_ids(catalog)
        output = tmp_path / "calibrated" / "Light_001_cal.fits"
        shutil.copyfile(done / "calibrated" / "Light_001_cal.fits", output)  # published, not registered
        add_claim(catalog, dead, ids["Light_001.fits"], output)
        bias = "master_bias_b2x2_g120_sNA_C-10.fits"
        shutil.copyfile(done / "masters" / bias, tmp_path / "masters" / bias)  # orphan master
        foreign = tmp_path / "masters" / "master_notes.fits"
        foreign.write_bytes(b"SIMPLE  =                    T" + b" " * 2850)  # not written by ccdcal
        older = tmp_path / "masters" / "master_bias_old.fits"
        shutil.copyfile(done / "masters" / bias, older)
        hours_ago = time.time() - 7200
        os.utime(older, (hours_ago, hours_ago))  # written before the dead run began: not its own

        recovery = recover(catalog, 0, tmp_path / "masters", tmp_path / "calibrated")
        assert recovery.runs == [dead]
        assert recovery.claims == 1
        assert sorted(Path(p).name for p in recovery.removed) == ["Light_001_cal.fits", bias]
        assert foreign.exists()
        assert older.exists()
        foreign.unlink()
        older.unlink()
        with catalog.session() as session:
            assert session.get(Run, dead).status == "died"
        assert process(catalog, options(tmp_path)).exit_code == 0
        assert state(tmp_path / "c.db", tmp_path) == reference

        # Killed after replacing an output, before registering it: the file differs from its row.
        second = add_run(catalog, pid=dead_pid(), ago=1.0)
        target = tmp_path / "calibrated" / "Light_002_cal.fits"
        shutil.copyfile(tmp_path / "calibrated" / "Light_003_cal.fits", target)
        add_claim(catalog, second, ids["Light_002.fits"], target)
        summary = process(catalog, options(tmp_path))
        assert [x.outcome for x in summary.lights] == ["current", "calibrated", "current", "current"]
        assert summary.of("calibrated")[0].reason == "output file missing"
        with catalog.session() as session:
            (row,) = session.scalars(
                select(Calibration).where(Calibration.path == str(target), Calibration.status == "current")
            )
            assert sha256_file(target) == row.sha256
        assert content(target) == content(done / "calibrated" / "Light_002_cal.fits")


def test_claims_are_renewed_while_the_run_works_and_released_after(
    night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ccdcal.lights import claims

    monkeypatch.setattr(claims, "RENEW_EVERY", 0.05)
    with fresh(night, tmp_path) as catalog:
        run = add_run(catalog, pid=os.getpid())
        ids = light_ids(catalog)
        add_claim(catalog, run, ids["Light_001.fits"], tmp_path / "a.fits", expires=1.0)
        with catalog.session() as session:
            before = session.scalars(select(Claim.expires_at)).one()
        with claims.holding(catalog, run):
            time.sleep(0.3)
            with catalog.session() as session:
                assert session.scalars(select(Claim.expires_at)).one() > before + dt.timedelta(minutes=5)
        with catalog.session() as session:
            assert session.scalar(select(func.count()).select_from(Claim)) == 0
