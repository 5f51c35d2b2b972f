"""A master's validity range set by hand: ``ccdcal certify`` and ``ccdcal decertify``.

``masters.valid_from`` and ``masters.valid_to`` (naive UTC, inclusive, NULL open) bound the DATE-OBS of the
lights a master may serve (:func:`ccdcal.catalog.selection.dated_conditions`; a light without a date is
matched as before). ``certify MASTER --from A --to B`` sets the range to [A, B] (an end not given is
open); ``decertify MASTER --from A --to B`` takes [A, B] out of it. A master has one range: a decertified
span must touch one end of it (taking the middle would leave two ranges), and must not take it all (that is
``ccdcal mark-bad``). Each is one run, its changes recorded in ``state_changes``.

Nothing else is written: the next ``ccdcal process`` plans every light again, and the lights the master no
longer serves — those of the decertified span — get another master (or none, with the reason), as after
``mark-bad``; :attr:`ValidityResult.affected` lists their current calibrations beforehand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.history import change
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.catalog.targets import Target, find_target
from ccdcal.errors import UsageError

#: The smallest step of a stored time: a decertified span's end is one step outside the range left.
_STEP = dt.timedelta(microseconds=1)


@dataclass
class ValidityResult:
    """What ``certify`` or ``decertify`` changed.

    Attributes
    ----------
    run_id : int
        The run.
    target : Target
        The master.
    before, after : tuple of (datetime or None, datetime or None)
        Its validity range before and after (``None``: open).
    affected : list of dict
        The current calibrations made with it whose light is now outside its range (``id``,
        ``light_id``, ``light_path``, ``date_obs``): the next ``ccdcal process`` calibrates them again.
    """

    run_id: int
    target: Target
    before: tuple[dt.datetime | None, dt.datetime | None]
    after: tuple[dt.datetime | None, dt.datetime | None]
    affected: list[dict[str, Any]] = field(default_factory=list)

    def headline(self) -> str:
        """One line for the terminal."""
        line = f"{self.target.ref} {self.target.path}: valid {range_text(*self.after)}"
        if self.before != self.after:
            line += f" (was {range_text(*self.before)})"
        else:
            line += " (unchanged)"
        if self.affected:
            line += (
                f"; {len(self.affected)} current calibrated files outside it: `ccdcal process` "
                "calibrates those lights again"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run": self.run_id,
            "target": self.target.ref,
            "path": self.target.path,
            "valid_from": self.after[0],
            "valid_to": self.after[1],
            "was_valid_from": self.before[0],
            "was_valid_to": self.before[1],
            "affected": self.affected,
        }


def range_text(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """``from 2026-03-01 00:00:00 to 2026-03-31 00:00:00 UTC``, ``always``."""
    if start is None and end is None:
        return "always"
    parts = [f"from {start:%Y-%m-%d %H:%M:%S}" if start else "", f"to {end:%Y-%m-%d %H:%M:%S}" if end else ""]
    return " ".join(p for p in parts if p) + " UTC"


def certify(
    catalog: Catalog, text: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> ValidityResult:
    """Set a master's validity range to [``start``, ``end``] (naive UTC, inclusive; ``None``: open).

    Raises
    ------
    UsageError
        The target is not a master, or ``start`` is after ``end``.
    """
    _ordered(start, end)
    return _set(catalog, text, "certify", start, end, lambda _old: (start, end))


def decertify(
    catalog: Catalog, text: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> ValidityResult:
    """Take [``start``, ``end``] (naive UTC, inclusive; ``None``: open) out of a master's validity range.

    Raises
    ------
    UsageError
        The target is not a master; no end given; ``start`` after ``end``; the span lies inside the range
        (two ranges would be left) or covers it all (``mark-bad`` is for that).
    """
    if start is None and end is None:
        raise UsageError(
            "decertify needs --from or --to (or both): a master never valid is marked bad with "
            "`ccdcal mark-bad MASTER --reason TEXT`"
        )
    _ordered(start, end)

    def cut(
        old: tuple[dt.datetime | None, dt.datetime | None],
    ) -> tuple[dt.datetime | None, dt.datetime | None]:
        low, high = old
        before_start = start is None or (
            low is not None and start <= low
        )  # the span reaches the range's start
        after_end = end is None or (high is not None and end >= high)  # ... its end
        if before_start and after_end:
            raise UsageError(
                f"decertifying {range_text(start, end)} leaves the master valid at no time (it is valid "
                f"{range_text(low, high)}): mark it bad instead (`ccdcal mark-bad MASTER --reason TEXT`)"
            )
        if before_start:
            assert end is not None
            return max(end + _STEP, low) if low is not None else end + _STEP, high
        if after_end:
            assert start is not None
            return low, min(start - _STEP, high) if high is not None else start - _STEP
        if (high is not None and start is not None and start > high) or (
            low is not None and end is not None and end < low
        ):
            return old  # outside the range already
        raise UsageError(
            f"decertifying {range_text(start, end)} would split the master's range ({range_text(low, high)}) "
            "in two, and a master has one: decertify from its start (no --from) or to its end (no --to)"
        )

    return _set(catalog, text, "decertify", start, end, cut)


def _ordered(start: dt.datetime | None, end: dt.datetime | None) -> None:
    if start is not None and end is not None and start > end:
        raise UsageError(f"--from {start:%Y-%m-%d %H:%M:%S} is after --to {end:%Y-%m-%d %H:%M:%S}")


def _set(catalog: Catalog, text: str, command: str, start: Any, end: Any, new_range: Any) -> ValidityResult:
    with catalog.session() as session:
        target = find_target(session, text)
    if target.kind != "master":
        raise UsageError(f"{text} is a {target.kind}, not a master: {command} sets a master's validity range")
    arguments = {"target": target.ref, "path": target.path, "from": _iso(start), "to": _iso(end)}
    with catalog.run(command, arguments) as run, catalog.session() as session:
        master = session.get(Master, target.id)
        assert master is not None
        before = (master.valid_from, master.valid_to)
        after = new_range(before)
        change(session, master, run_id=run.id, valid_from=after[0], valid_to=after[1])
        session.flush()
        result = ValidityResult(run.id, target, before, after, _outside(session, master))
        run.summary = {"before": [_iso(v) for v in before], "after": [_iso(v) for v in after]}
        run.summary |= {"calibrations_outside": len(result.affected)}
    return result


def _outside(session: Session, master: Master) -> list[dict[str, Any]]:
    """The current calibrations made with ``master`` whose light's DATE-OBS is outside its range."""
    query = (
        select(Calibration.id, Frame.id, Frame.path, Frame.date_obs)
        .join(CalibrationMaster, CalibrationMaster.calibration_id == Calibration.id)
        .join(Frame, Frame.id == Calibration.frame_id)
        .where(CalibrationMaster.master_id == master.id, Calibration.status == "current")
        .order_by(Frame.path)
    )
    low, high = master.valid_from, master.valid_to
    return [
        {"id": calibration_id, "light_id": light_id, "light_path": path, "date_obs": when}
        for calibration_id, light_id, path, when in session.execute(query)
        if when is not None and ((low is not None and when < low) or (high is not None and when > high))
    ]


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
