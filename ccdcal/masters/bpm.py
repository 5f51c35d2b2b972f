"""Bad-pixel masks as masters: ``ccdcal masters --bpm`` builds them, ``ccdcal process`` applies them.

For each camera set-up (the match keys: instrument, binning, gain, offset, readout mode, size) with a
current master dark or flat, one ``bpm`` master is built (:func:`build_bpms`):

- hot pixels from the set-up's master dark of longest exposure (a bias-subtracted one first), and
- dead, low and deviant pixels from its master flat with the most inputs (``ccdproc.ccdmask``),

see :mod:`ccdcal.kernels.bpm`. The mask (uint8, 1 = bad) is stored like every master: a file under
``masters/`` (``master_bpm_b{X}x{Y}_g{gain}_sNA_CNA.fits``), a ``masters`` row of kind ``bpm`` and
``master_calibrators`` rows to the dark and flat it came from, so that marking one of those bad makes
the mask unusable and ``ccdcal impact`` follows it. A new dark or flat gives a new version (the
identity is their sha256 and the parameters); a superseded mask of that identity whose file is intact is
made current again instead (:mod:`ccdcal.masters.restore`). ``process`` ORs the set-up's current mask
into each light's MASK (bit 2) and records it as a ``calibration_masters`` row of role ``bpm``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.history import change, created
from ccdcal.catalog.models import Frame, Master, MasterCalibrator
from ccdcal.catalog.queries import MATCH_KEYS, unusable_masters
from ccdcal.errors import FitsFormatError
from ccdcal.files.cardtext import card_name
from ccdcal.files.fitsio import add_history, read_image, set_card, stamp_version, write_free
from ccdcal.files.journal import Journal
from ccdcal.kernels.bpm import BpmParams, flat_defects, hot_pixels, low_pixels
from ccdcal.kernels.overscan import signature_of_header
from ccdcal.masters.files import free_master_path
from ccdcal.masters.groups import MasterReport, describe_keys
from ccdcal.masters.restore import intact_superseded, make_current, restored_reason

if TYPE_CHECKING:
    from astropy.io import fits

_PREPARATION_CARDS = ("OVSCMETH", "OVSCSEC", "TRIMSECT")


def build_bpms(
    catalog: Catalog, folder: Path, run_id: int, params: BpmParams | None = None
) -> list[MasterReport]:
    """Build the missing or stale bad-pixel masks of every camera set-up with a current dark or flat.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    folder : Path
        The masters folder (resolved).
    run_id : int
        The run the masters are recorded under.
    params : BpmParams, optional
        Thresholds (default :class:`~ccdcal.kernels.bpm.BpmParams`).

    Returns
    -------
    list of MasterReport
        One per set-up: ``built``, ``current`` or ``skipped`` (with the reason).
    """
    params = params or BpmParams()
    with catalog.session() as session:
        sources = _sources(session)
    return [_one_setup(catalog, keys, dark, flat, folder, run_id, params) for keys, (dark, flat) in sources]


def _sources(session: Session) -> list[tuple[dict[str, Any], tuple[Master | None, Master | None]]]:
    """Per set-up, the dark and the flat a mask is made from."""
    query = select(Master).where(
        Master.kind.in_(("dark", "flat")),
        Master.status == "current",
        Master.is_bad.is_(False),
        Master.id.not_in(unusable_masters()),
    )
    setups: dict[tuple[Any, ...], dict[str, list[Master]]] = {}
    for master in session.scalars(query.order_by(Master.id)):
        key = tuple(getattr(master, k) for k in MATCH_KEYS)
        setups.setdefault(key, {"dark": [], "flat": []})[master.kind].append(master)
    chosen = []
    for key, found in setups.items():
        dark = max(found["dark"], key=lambda m: (not m.includes_bias, m.exptime or 0.0, m.id), default=None)
        flat = max(found["flat"], key=lambda m: (m.n_inputs, m.id), default=None)
        chosen.append((dict(zip(MATCH_KEYS, key, strict=True)), (dark, flat)))
    return chosen


def bpm_identity(dark: Master | None, flat: Master | None, params: BpmParams) -> str:
    """sha256 of what makes a mask: its dark's and flat's sha256 and the parameters."""
    payload = {
        "kind": "bpm",
        "dark": dark.sha256 if dark else None,
        "flat": flat.sha256 if flat else None,
        "params": params.as_json(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _one_setup(
    catalog: Catalog,
    keys: dict[str, Any],
    dark: Master | None,
    flat: Master | None,
    folder: Path,
    run_id: int,
    params: BpmParams,
) -> MasterReport:
    report = MasterReport("bpm", keys, "skipped", 0)
    identity = bpm_identity(dark, flat, params)
    with catalog.session() as session:
        existing = session.scalars(
            select(Master).where(
                Master.kind == "bpm", Master.identity == identity, Master.status == "current"
            )
        ).first()
        if existing is not None and Path(existing.path).is_file():
            report.outcome, report.path, report.master_id = "current", existing.path, existing.id
            report.version = existing.version
            return report
    restored = _restore(catalog, keys, identity, _names(dark, flat), run_id)
    if restored is not None:
        report.outcome, report.path, report.master_id = "restored", restored.path, restored.id
        report.version, report.reason = restored.version, restored_reason(restored)
        return report
    try:
        mask, header, parameters = make_bpm(dark, flat, keys, params)
    except (FitsFormatError, ValueError) as exc:
        report.reason = f"cannot build the bad-pixel mask of set-up {describe_keys(keys)}: {exc}"
        return report
    master = _register(catalog, keys, dark, flat, identity, mask, header, parameters, folder, run_id)
    report.outcome, report.path, report.master_id = "built", master.path, master.id
    report.version = master.version
    return report


def _restore(
    catalog: Catalog, keys: dict[str, Any], identity: str, sources: str, run_id: int
) -> Master | None:
    """Make the superseded mask of ``identity`` current again when its file is intact, superseding the
    set-up's current one, in one transaction (``None``: there is none; the mask is then built).
    ``sources``: the names of the dark and flat it is made from."""
    with catalog.session() as session:
        lock_writers(session)
        same = _same_setup(keys)
        master = intact_superseded(session, same.where(Master.identity == identity))
        if master is None:
            return None
        current = session.scalars(same.where(Master.status == "current"))
        make_current(
            session, master, current, lambda _old: f"{restored_reason(master)}: made from {sources}", run_id
        )
    return master


def make_bpm(
    dark: Master | None, flat: Master | None, keys: dict[str, Any], params: BpmParams
) -> tuple[np.ndarray, fits.Header, dict[str, Any]]:
    """The mask of a set-up (its camera ``keys``) from its ``dark`` and ``flat``, its header and its
    ``parameters`` record (``ccdcal reproduce`` makes a recorded mask again through it).

    Raises
    ------
    FitsFormatError, ValueError
        A master that cannot be read, or a dark and a flat that do not go together.
    """
    # Imported here for start-up time: the planners select masks (select_bpm) without astropy.
    from astropy.io import fits

    images = {}
    preparations = {}
    for role, master in (("dark", dark), ("flat", flat)):
        if master is not None:
            images[role] = read_image(master.path, 0, np.float64)
            preparations[role] = signature_of_header(fits.getheader(master.path))
    if "dark" in images and "flat" in images:
        if images["dark"].shape != images["flat"].shape:
            raise ValueError(f"the dark and the flat have different shapes: {_names(dark, flat)}")
        if preparations["dark"] != preparations["flat"]:
            raise ValueError(f"the dark and the flat were prepared differently: {_names(dark, flat)}")
    hot = hot_pixels(images["dark"], params.hot_sigma) if "dark" in images else None
    defects = flat_defects(images["flat"], params) if "flat" in images else None
    parts = [p for p in (hot, defects) if p is not None]
    mask = np.logical_or.reduce(parts).astype(np.uint8)
    counts = {
        "hot": int(hot.sum()) if hot is not None else None,
        "flat_defects": int(defects.sum()) if defects is not None else None,
        "flat_low": low_pixels(images["flat"], defects) if defects is not None else None,
        "bad": int(mask.sum()),
    }
    parameters = {
        "method": "hot pixels of the master dark (median + hot_sigma x mad_std); ccdproc.ccdmask of the flat",
        **params.as_json(),
        "dark_id": dark.id if dark else None,
        "flat_id": flat.id if flat else None,
        "counts": counts,
    }
    header = _header(dark, flat, keys, params, counts, next(iter(preparations.values())))
    return mask, header, parameters


def _names(*masters: Master | None) -> str:
    return ", ".join(Path(m.path).name for m in masters if m is not None)


def _header(
    dark: Master | None,
    flat: Master | None,
    keys: dict[str, Any],
    params: BpmParams,
    counts: dict[str, Any],
    preparation: dict[str, Any],
) -> fits.Header:
    # Imported here for start-up time (see _make).
    from astropy.io import fits

    header = fits.Header()
    set_card(header, "IMAGETYP", "MASTER BPM", "ccdcal bad-pixel mask (1 = bad)")
    for key, keyword in (
        ("instrument", "INSTRUME"),
        ("xbinning", "XBINNING"),
        ("ybinning", "YBINNING"),
        ("gain", "GAIN"),
        ("offset", "OFFSET"),
        ("readout_mode", "READOUTM"),
    ):
        if keys.get(key) is not None:
            set_card(header, keyword, keys[key])
    lines = ["ccdcal: bad-pixel mask, 1 = bad"]
    if dark is not None:
        set_card(header, "BPMDARK", card_name(Path(dark.path).name), "master dark the hot pixels come from")
        set_card(header, "BPMDSHA", dark.sha256)
        set_card(header, "NHOT", counts["hot"], f"pixels above median + {params.hot_sigma:g} mad_std")
        lines.append(f"hot pixels: {card_name(Path(dark.path).name)} sha256 {dark.sha256}")
        lines.append(f"hot: dark above its median + {params.hot_sigma:g} x mad_std: {counts['hot']} pixels")
    if flat is not None:
        set_card(header, "BPMFLAT", card_name(Path(flat.path).name), "master flat the defects come from")
        set_card(header, "BPMFSHA", flat.sha256)
        set_card(header, "NFLATBAD", counts["flat_defects"], "pixels flagged by ccdmask on the flat")
        set_card(header, "NFLATLOW", counts["flat_low"], "of them below the flat's median")
        lines.append(f"flat defects: {card_name(Path(flat.path).name)} sha256 {flat.sha256}")
        lines.append(
            f"ccdproc.ccdmask lsigma {params.lsigma:g} hsigma {params.hsigma:g} median {params.nlmed}x"
            f"{params.ncmed} sigma {params.nlsig}x{params.ncsig}{' by blocks' if params.byblocks else ''}:"
            f" {counts['flat_defects']} pixels ({counts['flat_low']} low)"
        )
    set_card(header, "NBADPIX", counts["bad"], "bad pixels in all")
    if preparation["method"] != "none" or preparation["trimsec"]:
        set_card(header, "OVSCMETH", preparation["method"], "overscan of the frames the masters came from")
        if preparation["biassec"]:
            set_card(header, "OVSCSEC", preparation["biassec"], "overscan section of the raw frames")
        if preparation["trimsec"]:
            set_card(header, "TRIMSECT", preparation["trimsec"], "section of the raw frames kept")
    add_history(header, lines)
    stamp_version(header)
    return header


def _register(
    catalog: Catalog,
    keys: dict[str, Any],
    dark: Master | None,
    flat: Master | None,
    identity: str,
    mask: np.ndarray,
    header: fits.Header,
    parameters: dict[str, Any],
    folder: Path,
    run_id: int,
) -> Master:
    """Write the mask under its set-up's name and, in one transaction, its rows; supersede the previous
    one."""
    hdul = mask_hdul(mask, header)
    written: Path | None = None
    master_id: int | None = None
    journal = Journal(folder, catalog.catalog_id, run_id)  # as for a master: ccdcal.masters.files
    try:
        with catalog.session() as session:
            same = _same_setup(keys)
            version = (session.scalar(same.with_only_columns(func.max(Master.version))) or 0) + 1
            written, digest = write_free(
                lambda: free_master_path(session, folder, "bpm", _name_keys(keys), False, version, same),
                hdul,
                journal.record_file,
            )
            fraction = float(mask.mean()) if mask.size else 0.0
            master = Master(
                kind="bpm",
                identity=identity,
                version=version,
                path=str(written),
                sha256=digest,
                **keys,
                temp_key=None,
                exptime=None,
                filter=None,
                includes_bias=False,
                n_inputs=0,
                method="bpm",
                parameters=parameters,
                stat_median=0.0,
                stat_mean=fraction,
                stat_std=float(mask.std()) if mask.size else 0.0,
                rejected_fraction=None,
                status="current",
                run_id=run_id,
            )
            session.add(master)
            session.flush()
            master_id = master.id
            created(session, master, run_id=run_id)
            for old in session.scalars(same.where(Master.status == "current", Master.id != master.id)):
                why = f"new bad-pixel mask {written.name} ({_names(dark, flat)})"
                change(
                    session,
                    old,
                    run_id=run_id,
                    at=master.created_at,
                    status="superseded",
                    superseded_reason=why,
                )
            session.add_all(
                MasterCalibrator(master_id=master.id, role=role, calibrator_id=source.id)
                for role, source in (("dark", dark), ("flat", flat))
                if source is not None
            )
        journal.discard()
        return master
    except BaseException:
        # A Ctrl-C during the commit is raised after it: a committed row keeps its file.
        if written is not None and not catalog.committed(Master, master_id):
            written.unlink(missing_ok=True)
        journal.discard()
        raise


def mask_hdul(mask: np.ndarray, header: fits.Header) -> fits.HDUList:
    """The mask's file as written: one uint8 image."""
    # Imported here for start-up time (see _make).
    from astropy.io import fits

    return fits.HDUList([fits.PrimaryHDU(mask, header)])


def _name_keys(keys: dict[str, Any]) -> dict[str, Any]:
    """A mask's keys as its name uses them: no exposure, temperature or filter (``..._sNA_CNA``)."""
    return {**keys, "exptime": None, "temp_key": None, "filter": None}


def _same_setup(keys: dict[str, Any]) -> Any:
    return select(Master).where(
        Master.kind == "bpm", *(getattr(Master, k).is_not_distinct_from(keys.get(k)) for k in MATCH_KEYS)
    )


def select_bpm(session: Session, light: Frame | Mapping[str, Any]) -> Master | None:
    """The current, usable bad-pixel mask of a light's camera set-up (the newest), else ``None``."""
    value = light.get if isinstance(light, Mapping) else (lambda key: getattr(light, key))
    query = select(Master).where(
        Master.kind == "bpm",
        Master.status == "current",
        Master.is_bad.is_(False),
        Master.id.not_in(unusable_masters()),
        *(getattr(Master, k).is_not_distinct_from(value(k)) for k in MATCH_KEYS),
    )
    return session.scalars(query.order_by(Master.id.desc()).limit(1)).first()
