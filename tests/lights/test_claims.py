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
from ccdcal.catalog.models import Claim, Frame, Run, utcnow
from ccdcal.files.fitsio import sha256_file
from ccdcal.files.journal import Entry, Journal
from ccdcal.ingestion.core import ingest
from ccdcal.lights.claims import busy
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import dry_run, process
from ccdcal.masters.recovery import recover, run_alive
from ccdcal.runtime.owners import HOST, process_alive
from tests.robustness.cli_runs import copy_catalog, ingested_night, state, temporaries


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


#: ``process`` in a child process that dies (exit status 9, as if killed) just after giving a file its
#: final name: ``rename`` (a calibrated light) or ``publish`` (a master), before the rows are committed.
KILLED_AFTER = r"""
import os, sys
from pathlib import Path

db, folder, point, name, flat_min = sys.argv[1:]
import ccdcal.files.fitsio as fitsio

real_replace, real_publish = os.replace, fitsio._publish


def replace(source, target):
    real_replace(source, target)
    if point == "rename" and os.path.basename(os.fspath(target)) == name:
        os._exit(9)


def publish(temporary, path, overwrite):
    real_publish(temporary, path, overwrite)
    if point == "publish" and path.name == name:
        os._exit(9)


os.replace, fitsio._publish = replace, publish
from ccdcal.catalog.db import Catalog
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process

base = Path(folder)
options = ProcessOptions(
    masters_dir=base / "masters", output_dir=base / "calibrated", jobs=1, flat_min=float(flat_min)
)
with Catalog(db) as catalog:
    process(catalog, options)
sys.exit(3)
"""


def killed_after(folder: Path, point: str, name: str, flat_min: float = 0.01) -> None:
    """Run ``process`` on ``folder/c.db`` in a child process killed just after ``name`` got its final
    name (:data:`KILLED_AFTER`)."""
    import sys

    args = [sys.executable, "-c", KILLED_AFTER, str(folder / "c.db"), str(folder), point, name, str(flat_min)]
    child = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert child.returncode == 9, child.stderr


def journals(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.glob(".ccdcal-tmp-*.journal")]


@pytest.mark.parametrize(
    ("point", "name"),
    [("rename", "Light_002_cal.fits"), ("publish", "master_dark_b2x2_g120_60s_C-10.fits")],
)
def test_a_run_killed_after_publishing_a_file_leaves_the_proof_the_next_run_undoes(
    night: Path, tmp_path: Path, point: str, name: str
) -> None:
    """Killed between a file's publication and its rows: its journal names the file and its sha256; the
    next run removes it (the dead run's own), then writes it again under the same name."""
    done = night / "done"
    copy_catalog(night / "template.db", tmp_path / "c.db")
    killed_after(tmp_path, point, name)
    folder = tmp_path / ("calibrated" if point == "rename" else "masters")
    left = folder / name
    assert left.is_file()
    assert len(journals(folder)) == 1
    with Catalog(tmp_path / "c.db") as catalog:
        with catalog.reading() as session:
            (dead,) = session.scalars(select(Run.id).where(Run.status == "running"))
        recovery = recover(catalog, 0, tmp_path / "masters", tmp_path / "calibrated")
        assert recovery.runs == [dead]
        # The lights of one transaction are renamed together: Light_001 just before Light_002.
        firsts = [folder / "Light_001_cal.fits"] if point == "rename" else []
        assert recovery.removed == [str(path) for path in [*firsts, left]]
        assert not any(path.exists() for path in [*firsts, left])
        assert journals(tmp_path / "masters", tmp_path / "calibrated") == []
        assert process(catalog, options(tmp_path)).exit_code == 0
    assert state(tmp_path / "c.db", tmp_path) == state(done / "c.db", done)


def test_masters_after_a_killed_run_recovers_first_and_keeps_the_names(night: Path, tmp_path: Path) -> None:
    """``ccdcal masters`` after a run killed between a master's publication and its row: the dead run's
    file is removed and the master built again under its own name (not a suffixed one beside the orphan),
    the run marked died."""
    from ccdcal.masters.build import build_masters
    from ccdcal.masters.groups import MasterOptions

    done = night / "done"
    copy_catalog(night / "template.db", tmp_path / "c.db")
    killed_after(tmp_path, "publish", "master_dark_b2x2_g120_60s_C-10.fits")
    with Catalog(tmp_path / "c.db") as catalog:
        summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters"))
        assert summary.exit_code == 0
        with catalog.reading() as session:
            assert [r.status for r in session.scalars(select(Run).order_by(Run.id))] == ["ok", "died", "ok"]
    names = sorted(p.name for p in (tmp_path / "masters").iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in (done / "masters").iterdir() if not p.name.startswith("."))
    assert journals(tmp_path / "masters") == []


def test_a_run_killed_after_replacing_an_output_gets_the_replaced_file_back(
    night: Path, tmp_path: Path
) -> None:
    """Killed after renaming a new output over the registered one (``--flat-min`` changed): the next run
    puts the registered file back (its row describes it again), then calibrates the light anew."""
    copy_catalog(night / "template.db", tmp_path / "c.db")
    with Catalog(tmp_path / "c.db") as catalog:
        assert process(catalog, options(tmp_path)).exit_code == 0
    batch = [tmp_path / "calibrated" / f"Light_00{n}_cal.fits" for n in (1, 2)]  # renamed together
    registered = [sha256_file(path) for path in batch]
    killed_after(tmp_path, "rename", batch[-1].name, flat_min=0.3)
    assert all(sha256_file(path) != sha for path, sha in zip(batch, registered, strict=True))
    with Catalog(tmp_path / "c.db") as catalog:
        recovery = recover(catalog, 0, tmp_path / "masters", tmp_path / "calibrated")
        assert recovery.removed == [str(path) for path in batch]
        assert [sha256_file(path) for path in batch] == registered
        state(tmp_path / "c.db", tmp_path)  # every current row's file as it records
        assert temporaries(tmp_path / "calibrated") == []
        summary = process(catalog, options(tmp_path, flat_min=0.3))
        assert [x.outcome for x in summary.lights] == ["calibrated"] * 4
    state(tmp_path / "c.db", tmp_path)


def test_recovery_removes_no_file_that_no_journal_of_its_own_proves(night: Path, tmp_path: Path) -> None:
    """Files another catalog (or a person) wrote in the folders while a run of this catalog was dead —
    an output under a name the dead run had claimed, a master no row names — are left alone, and so are
    the journals of another catalog and of a live run."""
    done = night / "done"
    (tmp_path / "calibrated").mkdir()
    (tmp_path / "masters").mkdir()
    with fresh(night, tmp_path) as catalog:
        dead = add_run(catalog, pid=dead_pid())
        ids = light_ids(catalog)
        output = tmp_path / "calibrated" / "Light_001_cal.fits"
        shutil.copyfile(done / "calibrated" / "Light_001_cal.fits", output)  # written after the run died
        add_claim(catalog, dead, ids["Light_001.fits"], output)
        bias = tmp_path / "masters" / "master_bias_b2x2_g120_sNA_C-10.fits"
        shutil.copyfile(done / "masters" / bias.name, bias)  # a master no row of this catalog names
        foreign = Journal(tmp_path / "calibrated", "00000000-0000-4000-8000-000000000000", dead)
        foreign.record([Entry(output.name, sha256_file(output))])
        live = Journal(tmp_path / "masters", catalog.catalog_id, add_run(catalog, pid=os.getpid()))
        live.record([Entry(bias.name, sha256_file(bias))])
        before = {p: sha256_file(p) for p in (output, bias)}

        recovery = recover(catalog, 0, tmp_path / "masters", tmp_path / "calibrated")
        assert (recovery.runs, recovery.claims, recovery.removed) == ([dead], 1, [])
        assert {p: sha256_file(p) for p in (output, bias)} == before
        assert foreign.path is not None
        assert foreign.path.exists()
        assert live.path is not None
        assert live.path.exists()
        with catalog.reading() as session:
            assert session.get(Run, dead).status == "died"


def test_two_catalogs_in_one_folder_a_run_of_one_killed(night: Path, tmp_path: Path) -> None:
    """The reported case: A (``./ccdcal.db``) is killed during ``process``; B (``test.db``, beside it)
    would process into the same default folders — it is refused them, writing nothing; A runs again and
    recovers its own files only, ending as an uninterrupted run."""
    from typer.testing import CliRunner

    from ccdcal.cli import app

    done = night / "done"
    copy_catalog(night / "template.db", tmp_path / "c.db")
    killed_after(tmp_path, "publish", "master_dark_b2x2_g120_60s_C-10.fits")
    with Catalog(tmp_path / "c.db") as catalog:
        owner = catalog.catalog_id
    other = tmp_path / "test.db"
    with Catalog(other) as catalog:
        ingest(catalog, [night / "raw"])
    before = {p: sha256_file(p) for p in sorted((tmp_path / "masters").iterdir()) if p.is_file()}
    folders = ["--masters-dir", str(tmp_path / "masters"), "--output-dir", str(tmp_path / "calibrated")]
    refused = CliRunner().invoke(app, ["--db", str(other), "process", "--jobs", "1", *folders])
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        f"Error: the masters folder {tmp_path / 'masters'} belongs to another catalog (id {owner}; it is "
    )
    assert {p: sha256_file(p) for p in sorted((tmp_path / "masters").iterdir()) if p.is_file()} == before
    with Catalog(tmp_path / "c.db") as catalog:
        assert process(catalog, options(tmp_path)).exit_code == 0
    assert state(tmp_path / "c.db", tmp_path) == state(done / "c.db", done)
    assert journals(tmp_path / "masters", tmp_path / "calibrated") == []


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
