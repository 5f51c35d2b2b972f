"""Types forced on catalogued frames: ``ingest --imagetyp`` and ``--type-from-name``, applied to every frame
under the given paths that is not missing (files unchanged included: no file is read again for it); each
change of type is recorded in ``state_changes``."""

from __future__ import annotations

import os

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from ccdcal.catalog.history import record
from ccdcal.catalog.models import Frame
from ccdcal.catalog.queries import in_chunks
from ccdcal.ingestion.normalise import TypeRule, type_from_name


def force_type(session: Session, under: ColumnElement[bool], kind: str, run_id: int | None) -> int:
    """Give every frame of the condition ``under`` that is not missing the type ``kind``; return how many."""
    query = select(Frame.id, Frame.imagetyp, Frame.imagetyp_source).where(under, Frame.status != "missing")
    before = list(session.execute(query))
    result = session.execute(
        update(Frame)
        .where(under, Frame.status != "missing")
        .values(imagetyp=kind, imagetyp_source="forced")
        .execution_options(synchronize_session=False)
    )
    _record(session, [(i, old, source, kind) for i, old, source in before], run_id)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _record(
    session: Session, changes: list[tuple[int, str | None, str | None, str]], run_id: int | None
) -> None:
    """Record each frame's change of type (id, type before, its source before, type now)."""
    record(
        session,
        "frames",
        [
            change
            for frame_id, old, source, kind in changes
            for change in ((frame_id, "imagetyp", old, kind), (frame_id, "imagetyp_source", source, "forced"))
        ],
        run_id=run_id,
    )


def force_by_name(
    session: Session, under: ColumnElement[bool], rules: list[TypeRule], run_id: int | None
) -> int:
    """Apply ``--type-from-name`` rules to the frames of the condition ``under``; return how many matched."""
    query = select(Frame.id, Frame.path, Frame.imagetyp, Frame.imagetyp_source).where(
        under, Frame.status != "missing"
    )
    by_kind: dict[str, list[int]] = {}
    changes = []
    for frame_id, path, old, source in session.execute(query):
        kind = type_from_name(os.path.basename(path), rules)
        if kind is not None:
            by_kind.setdefault(kind, []).append(frame_id)
            changes.append((frame_id, old, source, kind))
    _record(session, changes, run_id)
    for kind, ids in by_kind.items():
        for chunk in in_chunks(ids):
            session.execute(
                update(Frame)
                .where(Frame.id.in_(chunk))
                .values(imagetyp=kind, imagetyp_source="forced")
                .execution_options(synchronize_session=False)
            )
    return sum(len(ids) for ids in by_kind.values())
