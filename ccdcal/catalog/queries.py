"""The catalog's grouping and summary selects. Grouping keys are data: one tuple of columns per kind."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame

#: Keys every master group shares (DESIGN.md "Grouping and matching").
CAMERA_KEYS = (
    "instrument",
    "xbinning",
    "ybinning",
    "gain",
    "offset",
    "readout_mode",
    "naxis1",
    "naxis2",
    "temp_key",
)

#: The grouping keys of each frame kind: masters are built per group; lights are listed the same way.
GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "bias": CAMERA_KEYS,
    "dark": (*CAMERA_KEYS, "exptime"),
    "flat": (*CAMERA_KEYS, "filter"),
    "light": (*CAMERA_KEYS, "exptime", "filter"),
}


def frame_groups(session: Session, kind: str) -> list[dict[str, Any]]:
    """Usable frames of one kind counted per group of :data:`GROUP_KEYS` (status ``ok``, not bad)."""
    keys = [getattr(Frame, name) for name in GROUP_KEYS[kind]]
    query = (
        select(*keys, func.count().label("n"))
        .where(Frame.imagetyp == kind, Frame.status == "ok", Frame.is_bad.is_(False))
        .group_by(*keys)
        .order_by(*keys)
    )
    return [dict(row._mapping) for row in session.execute(query)]


def usable(kind: str) -> Any:
    """SQL condition: catalogued frames of a kind that may enter a master (status ok, not marked bad)."""
    return (Frame.imagetyp == kind) & (Frame.status == "ok") & Frame.is_bad.is_(False)


def grouped_frames(session: Session, kind: str) -> list[dict[str, Any]]:
    """Every usable frame of one kind with its group number, in one select grouped by the kind's keys.

    The group (``dense_rank`` over :data:`GROUP_KEYS`) and its size (``count`` over the same partition)
    come from window functions, so the grouping is SQL's, on SQLite and PostgreSQL alike. Rows are
    ordered by group, then by DATE-OBS and path.
    """
    keys = [getattr(Frame, name) for name in GROUP_KEYS[kind]]
    query = (
        select(
            Frame.id,
            Frame.path,
            Frame.hdu,
            Frame.sha256,
            Frame.exptime,
            Frame.ccd_temp,
            Frame.date_obs,
            *keys,
            func.dense_rank().over(order_by=keys).label("group_number"),
            func.count().over(partition_by=keys).label("group_size"),
        )
        .where(usable(kind))
        .order_by(*keys, Frame.date_obs, Frame.path)
    )
    return [dict(row._mapping) for row in session.execute(query)]
