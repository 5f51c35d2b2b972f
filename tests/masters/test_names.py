"""Master names stay unique without borrowing the version suffix (docs/design.md, Files): a group whose plain
name another holds gets its instrument's token or a hash of its keys; ``_vN`` follows only a newer version
of the same group, which keeps its token."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from sqlalchemy import select, update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import GROUP_KEYS
from ccdcal.files.naming import group_hash
from ccdcal.ingestion.core import ingest
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.masters.plan import plan_masters
from ccdcal.simulate import SimulatedNight, simulate_night
from tests.conftest import fitsverify_counts

BIAS = "master_bias_b2x2_g120_sNA_C-10"
FLAT = "master_flat_b2x2_g120_sNA_C-10"
CAMERA = "ZWOASI294MMPro"


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    return simulate_night(tmp_path / "raw", seed=5, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=1)


def copies(files: list[Path], folder: Path, **cards: Any) -> None:
    """The frames copied into ``folder`` with header ``cards`` changed."""
    folder.mkdir(parents=True)
    for path in files:
        target = folder / path.name
        shutil.copyfile(path, target)
        with fits.open(target, mode="update") as hdul:
            for keyword, value in cards.items():
                hdul[0].header[keyword] = value


def names(catalog: Catalog, kind: str) -> dict[tuple[Any, ...], list[str]]:
    """File names of the masters of ``kind`` by (instrument, offset, readout mode, filter), oldest first."""
    found: dict[tuple[Any, ...], list[str]] = {}
    with catalog.session() as session:
        for master in session.scalars(select(Master).where(Master.kind == kind).order_by(Master.id)):
            key = (master.instrument, master.offset, master.readout_mode, master.filter)
            found.setdefault(key, []).append(Path(master.path).name)
    return found


def test_groups_whose_names_coincide_are_told_apart_without_vn(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    options = MasterOptions(masters_dir=tmp_path / "masters")
    ingest(catalog, [night.root])
    build_masters(catalog, options)  # the first camera's masters take the plain names
    biases, flats = sorted(night.files["bias"]), sorted(night.files["flat"])
    extra = tmp_path / "raw" / "extra"
    copies(biases, extra / "qhy", INSTRUME="QHY 600M")  # another camera of the same set-up
    copies(biases, extra / "offset", OFFSET=50)  # the same camera at another offset
    copies(biases, extra / "fast", READOUTM="Fast")  # ... in another readout mode
    copies(biases, extra / "alike", INSTRUME="ZWO_ASI294MM_Pro")  # a name that sanitises alike
    ha = [f for f in flats if fits.getheader(f)["FILTER"] == "Ha"]
    copies(ha, extra / "h-a", FILTER="H a")  # a filter that sanitises as Ha
    ingest(catalog, [night.root])
    with catalog.session() as session:
        planned = {
            (r.kind, Path(r.path or "").name) for r in plan_masters(session, options) if r.outcome == "build"
        }
        session.rollback()
    summary = build_masters(catalog, options)
    assert {(r.kind, Path(r.path or "").name) for r in summary.of("built")} == planned  # as the dry run said

    bias = names(catalog, "bias")
    assert bias[("ZWO ASI294MM Pro", 30.0, "Normal", None)] == [f"{BIAS}.fits"]
    assert bias[("QHY 600M", 30.0, "Normal", None)] == [f"{BIAS}_QHY600M.fits"]
    # three newcomers would take the camera's token: the first does, the others a hash of their keys
    contenders = {
        key: name
        for key, (name,) in bias.items()
        if key in {("ZWO ASI294MM Pro", 50.0, "Normal", None), ("ZWO ASI294MM Pro", 30.0, "Fast", None)}
        or key[0] == "ZWO_ASI294MM_Pro"
    }
    assert len(contenders) == 3
    with_token = [key for key, name in contenders.items() if name == f"{BIAS}_{CAMERA}.fits"]
    assert len(with_token) == 1
    for key, name in contenders.items():
        if key not in with_token:
            assert name == f"{BIAS}_h{group_hash('bias', master_keys(catalog, name), False)[:6]}.fits"
    flat = names(catalog, "flat")
    assert flat[("ZWO ASI294MM Pro", 30.0, "Normal", "Ha")] == [f"{FLAT}_Ha.fits"]
    assert flat[("ZWO ASI294MM Pro", 30.0, "Normal", "H a")] == [f"{FLAT}_Ha_{CAMERA}.fits"]
    every = [n for group in (*bias.values(), *flat.values()) for n in group]
    assert len(every) == len(set(every))
    assert not any("_v" in n for n in every)
    for name in every:
        assert fitsverify_counts(tmp_path / "masters" / name)[1] == 0

    # A newer version of one group, and only of that group, gets _v2; it keeps its token.
    with catalog.session() as session:
        session.execute(
            update(Frame).where(Frame.path == str(extra / "qhy" / biases[0].name)).values(is_bad=True)
        )
    rebuilt = build_masters(
        catalog, MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias",), min_frames=2)
    )
    assert sorted(Path(r.path or "").name for r in rebuilt.of("built")) == [f"{BIAS}_QHY600M_v2.fits"]
    assert names(catalog, "bias")[("QHY 600M", 30.0, "Normal", None)] == [
        f"{BIAS}_QHY600M.fits",
        f"{BIAS}_QHY600M_v2.fits",
    ]
    assert names(catalog, "bias")[("ZWO ASI294MM Pro", 30.0, "Normal", None)] == [f"{BIAS}.fits"]


def master_keys(catalog: Catalog, name: str) -> dict[str, Any]:
    """The group keys of the master named ``name``, as its name was made from them."""
    with catalog.session() as session:
        master = session.scalars(select(Master).where(Master.path.like(f"%/{name}"))).one()
        return {key: getattr(master, key) for key in GROUP_KEYS["bias"]}


def test_a_name_held_by_a_file_the_catalog_does_not_know_is_not_borrowed(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    """A master the old script pipeline left under the plain name: ccdcal's takes its instrument's token."""
    folder = tmp_path / "masters"
    folder.mkdir()
    (folder / f"{BIAS}.fits").write_bytes(b"left by the script pipeline")
    ingest(catalog, [night.root])
    summary = build_masters(catalog, MasterOptions(masters_dir=folder, kinds=("bias",)))
    assert [Path(r.path or "").name for r in summary.of("built")] == [f"{BIAS}_{CAMERA}.fits"]
    assert (folder / f"{BIAS}.fits").read_bytes() == b"left by the script pipeline"
