"""What a user names on the command line: a catalogued file, or an id such as ``master:3``.

``ccdcal provenance``, ``impact``, ``mark-bad`` and ``mark-good`` take ``FILE|ID``:

- ``calibration:N``, ``master:N``, ``frame:N``: the catalog row with that id;
- any other text is a path (made absolute, symbolic links resolved, as the catalog stores paths) and is
  looked up among calibrated outputs (the current calibration of that path, else the newest), masters
  and raw frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Calibration, Frame, Master
from ccdcal.errors import NotFoundError, UsageError
from ccdcal.runtime.pathtext import is_text, not_text_reason, shown

#: The kinds of catalog rows a target can name, as written in ids (``master:3``).
KINDS = ("calibration", "master", "frame")

#: The largest id a catalog row can have (a 64-bit signed integer, on SQLite and PostgreSQL alike).
MAX_ID = 2**63 - 1

_ID = re.compile(r"^(?P<kind>[a-z]+):(?P<id>\d+)$")
_MODELS: dict[str, type[Calibration] | type[Master] | type[Frame]] = {
    "calibration": Calibration,
    "master": Master,
    "frame": Frame,
}


@dataclass(frozen=True)
class Target:
    """One catalog row named by the user: its kind (``calibration``, ``master``, ``frame``), id and path."""

    kind: str
    id: int
    path: str | None

    @property
    def ref(self) -> str:
        """The row as an id (``master:3``)."""
        return f"{self.kind}:{self.id}"


def is_row_id(number: int) -> bool:
    """Whether ``number`` can be the id of a catalog row (1 to :data:`MAX_ID`)."""
    return 1 <= number <= MAX_ID


def find_target(session: Session, text: str) -> Target:
    """The catalog row ``text`` names (see the module description).

    Raises
    ------
    UsageError
        ``text`` looks like an id of an unknown kind (``flat:3``).
    NotFoundError
        No row has that id, or no calibrated file, master or raw frame has that path.
    """
    found = _ID.match(text.strip())
    if found is not None:
        kind, number = found["kind"], int(found["id"])
        if kind not in _MODELS:
            raise UsageError(f"{text}: not an id ccdcal knows; use calibration:N, master:N or frame:N")
        model = _MODELS[kind]
        row = None
        if is_row_id(number):  # a larger number is no id (and not a value the database takes)
            row = session.execute(select(model.id, model.path).where(model.id == number)).first()
        if row is None:
            raise NotFoundError(f"{text}: no {kind} with id {number} in the catalog")
        return Target(kind, number, row.path)
    path = str(Path(text).expanduser().resolve())
    if not is_text(path):
        raise NotFoundError(
            f"{shown(path)}: not in the catalog, which never holds such a path: {not_text_reason(path)}"
        )
    newest_current_first = (case((Calibration.status == "current", 0), else_=1), Calibration.id.desc())
    calibration = session.scalars(
        select(Calibration.id).where(Calibration.path == path).order_by(*newest_current_first).limit(1)
    ).first()
    if calibration is not None:
        return Target("calibration", calibration, path)
    master = session.scalars(select(Master.id).where(Master.path == path)).first()
    if master is not None:
        return Target("master", master, path)
    frame = session.scalars(select(Frame.id).where(Frame.path == path)).first()
    if frame is not None:
        return Target("frame", frame, path)
    raise NotFoundError(
        f"{path}: not in the catalog (no calibrated file, master or raw frame has this path); "
        "check the path, or give an id such as master:3 (`ccdcal masters --list --all` shows them)"
    )
