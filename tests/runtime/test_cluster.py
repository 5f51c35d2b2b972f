"""``--scheduler``: calibration and master combines on Dask workers equal the local path; a dying worker is
survived."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master, MasterCalibrator, MasterInput, Run
from ccdcal.cli import app
from ccdcal.errors import UsageError
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.runtime.cluster import Cluster, ClusterOnDemand, check_address, dask_cluster
from ccdcal.simulate import simulate_night

distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed (ccdcal[dask])")

SHAPE = (64, 80)


def outputs(catalog: Catalog) -> dict[str, tuple[str | None, np.ndarray]]:
    """Per light name: the current calibration's sha256 and pixels."""
    with catalog.session() as session:
        query = select(Frame.path, Calibration.path, Calibration.sha256).join(
            Calibration, Calibration.frame_id == Frame.id
        )
        rows = session.execute(query.where(Calibration.status == "current")).all()
    return {Path(raw).name: (sha, fits.getdata(path)) for raw, path, sha in rows}


def calibrated(tmp_path: Path, name: str, n_light: int, **changes: Any) -> dict[str, Any]:
    night = simulate_night(tmp_path / name / "raw", seed=3, shape=SHAPE, n_light=n_light)
    with Catalog(tmp_path / name / "ccdcal.db") as catalog:
        ingest(catalog, [night.root])
        options = ProcessOptions(
            masters_dir=tmp_path / name / "masters", output_dir=tmp_path / name / "calibrated", **changes
        )
        summary = process(catalog, options)
        assert summary.exit_code == 0
        assert len(summary.of("calibrated")) == n_light
        return outputs(catalog)


def same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours.keys() == theirs.keys()
    for name, (_sha, data) in ours.items():
        np.testing.assert_array_equal(data, theirs[name][1])


def test_a_local_cluster_gives_the_local_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ccdcal.runtime.cluster

    started: list[str] = []
    start = ccdcal.runtime.cluster._started

    def counted(address: str, timeout: float = 10.0) -> Any:
        started.append(address)
        return start(address, timeout)

    monkeypatch.setattr(ccdcal.runtime.cluster, "_started", counted)
    local = calibrated(tmp_path, "jobs", 4, jobs=1)
    dask = calibrated(tmp_path, "dask", 4, scheduler="local:2")
    same(dask, local)
    same_masters(tmp_path / "dask" / "masters", tmp_path / "jobs" / "masters")
    assert started == ["local:2"]  # one cluster for the masters and the lights


def test_a_worker_killed_mid_run_is_survived(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    local = calibrated(tmp_path, "jobs", 24, jobs=1)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
            folder = tmp_path / "dask" / "calibrated"
            killed: list[float] = []

            def kill_one_when_work_starts() -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if folder.is_dir() and any(folder.iterdir()):
                        os.kill(pids[0], signal.SIGKILL)
                        killed.append(time.monotonic())
                        return
                    time.sleep(0.005)

            killer = threading.Thread(target=kill_one_when_work_starts)
            killer.start()
            dask = calibrated(tmp_path, "dask", 24, scheduler=cluster.scheduler_address)
            finished = time.monotonic()
            killer.join()
            assert killed
            assert killed[0] < finished  # killed while the run went on
            assert pids[0] not in client.run(os.getpid).values()
    finally:
        cluster.close()
    same(dask, local)


@pytest.mark.parametrize("address", ["localhost:8786", "local:x", "http://host:8786", ""])
def test_a_malformed_address_is_refused(address: str) -> None:
    with pytest.raises(UsageError, match="not a Dask scheduler address"):
        check_address(address)


def test_no_scheduler_at_the_address(tmp_path: Path) -> None:
    with (
        pytest.raises(UsageError, match=r"--scheduler tcp://127.0.0.1:9: no Dask scheduler answers"),
        dask_cluster("tcp://127.0.0.1:9", timeout=1),
    ):
        pass


def test_ingest_on_a_local_cluster_reads_every_card(tmp_path: Path) -> None:
    from ccdcal.catalog.models import HeaderCard

    night = simulate_night(tmp_path / "raw", seed=3, shape=(32, 32), n_light=2)
    counts = []
    for name, changes in (("here", {"jobs": 1}), ("dask", {"scheduler": "local:2"})):
        with Catalog(tmp_path / f"{name}.db") as catalog:
            summary = ingest(catalog, [night.root], **changes)
            assert summary.exit_code == 0
            with catalog.session() as session:
                frames = session.execute(
                    select(Frame.path, Frame.sha256, Frame.imagetyp).order_by(Frame.path)
                )
                cards = session.scalar(select(func.count()).select_from(HeaderCard))
                counts.append((frames.all(), cards))
    assert counts[0] == counts[1]
    assert len(counts[0][0]) == sum(len(files) for files in night.files.values())


# -- masters: the combine in bands of rows on the workers ------------------------------------------------


def master_rows(catalog: Catalog) -> list[tuple[Any, ...]]:
    """Every master row, its inputs and calibrators: all but the path (its name instead), the time and
    run, and the hashes of the file (its CHECKSUM card holds the time it was written) and identity (the
    bias's hash)."""
    skip = {"path", "created_at", "run_id", "sha256", "identity"}
    columns = [c for c in Master.__table__.columns if c.name not in skip]
    with catalog.session() as session:
        masters = [
            (Path(path).name, *rest)
            for path, *rest in session.execute(select(Master.path, *columns).order_by(Master.id))
        ]
        inputs = session.execute(select(MasterInput.__table__).order_by(*MasterInput.__table__.c)).all()
        calibrators = session.execute(
            select(MasterCalibrator.__table__).order_by(*MasterCalibrator.__table__.c)
        ).all()
    return [*masters, *map(tuple, inputs), *map(tuple, calibrators)]


def master_files(folder: Path) -> dict[str, tuple[np.ndarray, list[tuple[str, Any]]]]:
    """Each master's pixels and header cards, the write time and the masters' sha256 left out."""
    files = {}
    for path in sorted(folder.glob("master_*.fits")):
        with fits.open(path) as hdul:
            cards = [
                (card.keyword, re.sub("[0-9a-f]{64}", "SHA256", str(card.value)))
                for card in hdul[0].header.cards
                if card.keyword != "CHECKSUM"
            ]
            files[path.name] = (hdul[0].data, cards)
    return files


def same_masters(ours: Path, theirs: Path) -> None:
    """The two folders hold the same masters, pixel for pixel and card for card."""
    mine, other = master_files(ours), master_files(theirs)
    assert mine.keys() == other.keys()
    assert any(name.startswith("master_flat") for name in mine)
    for name, (data, cards) in mine.items():
        np.testing.assert_array_equal(data, other[name][0], err_msg=name)
        assert cards == other[name][1]


@pytest.fixture(scope="module")
def night_masters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[tuple[Any, ...]]]:
    """A simulated night and its masters built here: the raw folder, the masters folder, the rows."""
    root = tmp_path_factory.mktemp("night")
    night = simulate_night(root / "raw", seed=3, shape=SHAPE, n_light=1)
    with Catalog(root / "here.db") as catalog:
        ingest(catalog, [night.root], jobs=1)
        summary = build_masters(catalog, MasterOptions(masters_dir=root / "here"))
        assert summary.exit_code == 0
        return night.root, root / "here", master_rows(catalog)


def test_masters_on_a_local_cluster_equal_the_local_ones(
    tmp_path: Path, night_masters: tuple[Path, Path, list[tuple[Any, ...]]]
) -> None:
    raw, here, rows = night_masters
    db = tmp_path / "dask.db"
    with Catalog(db) as catalog:
        ingest(catalog, [raw], jobs=1)
    command = ["--db", str(db), "masters", "--masters-dir", str(tmp_path / "dask"), "--json"]
    result = CliRunner().invoke(app, [*command, "--scheduler", "local:2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["built"] == 7  # bias; darks 2, 5, 60, 300 s; flats R, Ha
    same_masters(tmp_path / "dask", here)
    with Catalog(db) as catalog:
        assert master_rows(catalog) == rows
        with catalog.session() as session:
            calibrated = select(Master.kind, MasterCalibrator.role)
            roles = session.execute(calibrated.join(Master, Master.id == MasterCalibrator.master_id)).all()
            arguments = session.scalars(select(Run.arguments).where(Run.command == "masters")).one()
    assert {("dark", "bias"), ("flat", "bias"), ("flat", "dark")} <= set(roles)
    assert arguments["scheduler"] == "local:2"


def test_masters_refuse_a_malformed_scheduler(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "c.db"), "masters", "--scheduler", "host:1"])
    assert result.exit_code == 2
    assert "--scheduler host:1: not a Dask scheduler address" in result.output


def kill_at_second_band(marker: Path) -> Any:
    """A worker plugin: the first worker to start its second band of a combine kills itself (SIGKILL)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillAtSecondBand(WorkerPlugin):
        def __init__(self) -> None:
            self.started = 0

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish != "executing" or not str(key).startswith("combine_band-"):
                return
            self.started += 1
            if self.started != 2:
                return
            try:  # once in the cluster: the worker that takes its place carries on
                descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(descriptor, str(os.getpid()).encode())
            os.close(descriptor)
            os.kill(os.getpid(), signal.SIGKILL)

    return KillAtSecondBand()


def test_a_worker_killed_mid_combine_is_survived(
    tmp_path: Path, night_masters: tuple[Path, Path, list[tuple[Any, ...]]]
) -> None:
    from distributed import Client, LocalCluster

    raw, here, rows = night_masters
    marker = tmp_path / "killed.pid"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster) as client:
            pids = set(client.run(os.getpid).values())
            client.register_plugin(kill_at_second_band(marker))
            with Catalog(tmp_path / "dask.db") as catalog:
                ingest(catalog, [raw], jobs=1)
                options = MasterOptions(masters_dir=tmp_path / "dask", scheduler=cluster.scheduler_address)
                summary = build_masters(catalog, options)
                assert summary.exit_code == 0
                assert master_rows(catalog) == rows
            killed = int(marker.read_text())
            assert killed in pids
            assert killed not in client.run(os.getpid).values()
    finally:
        cluster.close()
    same_masters(tmp_path / "dask", here)


def test_one_cluster_on_demand_is_shared_and_started_when_needed(
    monkeypatch: pytest.MonkeyPatch, night_masters: tuple[Path, Path, list[tuple[Any, ...]]]
) -> None:
    import ccdcal.runtime.cluster

    events: list[str] = []

    @contextmanager
    def started(address: str, timeout: float = 10.0) -> Iterator[Cluster]:
        events.append(f"start {address}")
        yield Cluster(ThreadPoolExecutor(1), 3, address)
        events.append(f"stop {address}")

    monkeypatch.setattr(ccdcal.runtime.cluster, "_started", started)
    assert ClusterOnDemand(None).get() is None
    _raw, here, _rows = night_masters
    with Catalog(here.parent / "here.db") as catalog:  # every master current: nothing to combine
        options = MasterOptions(masters_dir=here, scheduler="tcp://h:1")
        assert {r.outcome for r in build_masters(catalog, options).reports} == {"current"}
    assert events == []
    with ClusterOnDemand("tcp://h:1") as outer:
        with ClusterOnDemand("tcp://h:1") as inner, dask_cluster("tcp://h:1") as direct:
            assert inner.get() is direct is outer.get()
        assert events == ["start tcp://h:1"]
        with ClusterOnDemand("local:2") as other:
            assert other.get() is not outer.get()
        assert events == ["start tcp://h:1", "start local:2", "stop local:2"]
    assert events[-1] == "stop tcp://h:1"
    with pytest.raises(UsageError, match="not a Dask scheduler address"):
        ClusterOnDemand("h:1")
