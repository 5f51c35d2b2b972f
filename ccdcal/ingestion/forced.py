"""Types forced on catalogued frames: ``ingest --imagetyp`` and ``--type-from-name``, applied to every frame
under the given paths that is not missing (files unchanged included: no file is read again for it)."""

from __future__ import annotations

import os

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame
from ccdcal.catalog.queries import in_chunks
from ccdcal.ingestion.normalise import TypeRule, type_from_name


def force_type(session: Session, under: ColumnElement[bool], kind: str) -> int:
    """Give every frame of the condition ``under`` that is not missing the type ``kind``; return how many."""
    result = session.execute(
        update(Frame)
        .where(under, Frame.status != "missing")
        .values(imagetyp=kind, imagetyp_source="forced")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def force_by_name(session: Session, under: ColumnElement[bool], rules: list[TypeRule]) -> int:
    """Apply ``--type-from-name`` rules to the frames of the condition ``under``; return how many matched."""
    query = select(Frame.id, Frame.path).where(under, Frame.status != "missing")
    by_kind: dict[str, list[int]] = {}
    for frame_id, path in session.execute(query):
        kind = type_from_name(os.path.basename(path), rules)
        if kind is not None:
            by_kind.setdefault(kind, []).append(frame_id)
    for kind, ids in by_kind.items():
        for chunk in in_chunks(ids):
            session.execute(
                update(Frame)
                .where(Frame.id.in_(chunk))
                .values(imagetyp=kind, imagetyp_source="forced")
                .execution_options(synchronize_session=False)
            )
    return sum(len(ids) for ids in by_kind.values())
