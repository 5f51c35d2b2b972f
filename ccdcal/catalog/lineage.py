"""Why a master may not be used, and why a new master replaced an old one: sentences read from the lineage
rows (``master_inputs``, ``master_calibrators``, ``is_bad``).

A master may not be used when it is marked bad, when one of its raw inputs is, or when a master it was
pre-calibrated with may not be (recursively); matching says so when it passes such a master over, and a
new version records in ``masters.superseded_reason`` what changed since the one it replaces.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame, Master, MasterCalibrator, MasterInput


def unusable_reason(session: Session, master: Master) -> str | None:
    """Why a master may not be used (``None``: it may): ``master_dark_60s.fits was made with
    master_bias.fits, which has input Bias_002.fits marked bad (hot pixels)``."""
    clause = _unusable_clause(session, master, 0)
    return f"{Path(master.path).name} {clause}" if clause else None


def _unusable_clause(session: Session, master: Master, depth: int) -> str | None:
    if master.is_bad:
        return f"is marked bad ({master.bad_reason})"
    bad = session.execute(
        select(Frame.path, Frame.bad_reason)
        .join(MasterInput, MasterInput.frame_id == Frame.id)
        .where(MasterInput.master_id == master.id, Frame.is_bad.is_(True))
        .order_by(Frame.path)
    ).all()
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return f"has input {Path(bad[0][0]).name} marked bad ({bad[0][1]}){more}"
    if depth > 8:
        return None
    query = (
        select(Master)
        .join(MasterCalibrator, MasterCalibrator.calibrator_id == Master.id)
        .where(MasterCalibrator.master_id == master.id)
        .order_by(MasterCalibrator.role)
    )
    for calibrator in session.scalars(query):
        clause = _unusable_clause(session, calibrator, depth + 1)
        if clause is not None:
            return f"was made with {Path(calibrator.path).name}, which {clause}"
    return None


def rebuild_reason(
    session: Session,
    old: Master,
    inputs: dict[int, str | None],
    calibrators: dict[str, Master | None],
) -> str:
    """Why a new master replaces ``old`` of the same group (``masters.superseded_reason``).

    Parameters
    ----------
    session : Session
        An open catalog session.
    old : Master
        The group's current master, about to be superseded.
    inputs : dict
        The new master's raw frames: frame id → sha256 as used.
    calibrators : dict
        The new master's calibrators by role (``bias``, ``dark``; ``None``: not subtracted).
    """
    before = dict(
        session.execute(
            select(MasterInput.frame_id, MasterInput.sha256).where(MasterInput.master_id == old.id)
        ).all()
    )
    parts: list[str] = []
    removed = sorted(set(before) - set(inputs))
    if removed:
        frames = session.scalars(select(Frame).where(Frame.id.in_(removed)).order_by(Frame.path)).all()
        parts += [_left_out(frame) for frame in frames]
    added = sorted(set(inputs) - set(before))
    if added:
        names = session.scalars(select(Frame.path).where(Frame.id.in_(added)).order_by(Frame.path)).all()
        shown = ", ".join(Path(p).name for p in names[:3]) + (
            f" and {len(names) - 3} more" if len(names) > 3 else ""
        )
        parts.append(f"{len(added)} new input{'s' if len(added) > 1 else ''}: {shown}")
    changed = sorted(i for i in set(before) & set(inputs) if before[i] != inputs[i])
    if changed:
        names = session.scalars(select(Frame.path).where(Frame.id.in_(changed)).order_by(Frame.path)).all()
        parts += [f"input {Path(p).name} changed" for p in names]
    old_calibrators = {
        role: session.get(Master, master_id)
        for role, master_id in session.execute(
            select(MasterCalibrator.role, MasterCalibrator.calibrator_id).where(
                MasterCalibrator.master_id == old.id
            )
        )
    }
    for role in ("bias", "dark"):
        was, now = old_calibrators.get(role), calibrators.get(role)
        if (was.id if was else None) == (now.id if now else None):
            continue
        if now is None:
            parts.append(f"no {role} master subtracted now")
        elif was is None:
            parts.append(f"{role} master {Path(now.path).name} now subtracted")
        else:
            why = unusable_reason(session, was)
            replaced = f"{role} master {Path(now.path).name} replaces {Path(was.path).name}"
            parts.append(f"{replaced}: {why}" if why else replaced)
    if not parts:
        parts.append("its file is missing" if not Path(old.path).is_file() else "combine parameters changed")
    return "; ".join(parts)


def _left_out(frame: Frame) -> str:
    name = Path(frame.path).name
    if frame.is_bad:
        return f"input {name} marked bad ({frame.bad_reason})"
    if frame.status != "ok":
        return f"input {name} {frame.status}"
    return f"input {name} left the group"
