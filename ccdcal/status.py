"""``ccdcal status``: what the catalog holds, grouped, and what needs attention."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import FRAME_KINDS, Frame
from ccdcal.catalog.queries import GROUP_KEYS, frame_groups


def catalog_status(catalog: Catalog) -> dict[str, Any]:
    """A JSON-ready description of the catalog.

    Returns
    -------
    dict
        ``catalog`` (its name), ``frames`` (counts by status and kind), ``groups`` (per kind, the group
        keys and frame count of each group), ``unclassified``, ``rejected`` (path and reason), ``missing``
        and ``bad`` (path and reason).
    """
    with catalog.session() as session:
        counts: dict[str, dict[str, int]] = {}
        for status, kind, n in session.execute(
            select(Frame.status, Frame.imagetyp, func.count()).group_by(Frame.status, Frame.imagetyp)
        ):
            counts.setdefault(status, {})[kind or "unclassified"] = n
        groups = {kind: frame_groups(session, kind) for kind in FRAME_KINDS}
        unclassified = list(
            session.scalars(
                select(Frame.path).where(Frame.status == "ok", Frame.imagetyp.is_(None)).order_by(Frame.path)
            )
        )
        rejected = [
            {"path": path, "reason": error}
            for path, error in session.execute(
                select(Frame.path, Frame.error).where(Frame.status == "rejected").order_by(Frame.path)
            )
        ]
        missing = list(
            session.scalars(select(Frame.path).where(Frame.status == "missing").order_by(Frame.path))
        )
        bad = [
            {"path": path, "reason": reason}
            for path, reason in session.execute(
                select(Frame.path, Frame.bad_reason).where(Frame.is_bad.is_(True)).order_by(Frame.path)
            )
        ]
    return {
        "catalog": catalog.name,
        "frames": counts,
        "group_keys": {kind: list(keys) for kind, keys in GROUP_KEYS.items()},
        "groups": groups,
        "unclassified": unclassified,
        "rejected": rejected,
        "missing": missing,
        "bad": bad,
    }
