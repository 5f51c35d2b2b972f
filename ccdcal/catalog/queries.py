"""The catalog's grouping and summary selects. Grouping keys are data: one tuple of columns per kind."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    Row,
    Select,
    Text,
    column,
    func,
    select,
    table,
    text,
    true,
    union,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from ccdcal.catalog.models import Frame, HeaderCard, Master, MasterCalibrator, MasterInput
from ccdcal.errors import UsageError
from ccdcal.limits import EXPTIME_TOLERANCE, MAX_AGE, TEMP_TOLERANCE, parse_age

#: Keys every master group shares (docs/design.md, Grouping and matching).
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
    # a bad-pixel mask serves a camera set-up at any temperature (ccdcal.masters.bpm)
    "bpm": tuple(key for key in CAMERA_KEYS if key != "temp_key"),
}


def frame_groups(session: Session, kind: str) -> list[dict[str, Any]]:
    """Usable frames of one kind counted per group of :data:`GROUP_KEYS` (status ``ok``, not bad)."""
    return [dict(row._mapping) for row in session.execute(frame_groups_query(kind))]


def frame_groups_query(kind: str) -> Select[Any]:
    """The select of :func:`frame_groups` (the grouping index covers it)."""
    keys = [getattr(Frame, name) for name in GROUP_KEYS[kind]]
    return select(*keys, func.count().label("n")).where(usable(kind)).group_by(*keys).order_by(*keys)


def core_rows(session: Session, statement: Select[Any]) -> Sequence[Row[Any]]:
    """The rows of a select of columns, executed on the session's connection (after a flush of its
    pending changes, as the session would): without the ORM's per-row work, a third faster on 100,000
    rows."""
    session.flush()
    return session.connection().execute(statement).all()


_T = TypeVar("_T")

#: Values bound in one ``IN (...)`` list at most (SQLite allows 32766 parameters, PostgreSQL 65535).
IN_CHUNK = 5000


def in_chunks(values: Iterable[_T]) -> Iterator[list[_T]]:
    """``values`` in lists of at most :data:`IN_CHUNK`, each for one ``IN (...)`` list."""
    listed = list(values)
    for start in range(0, len(listed), IN_CHUNK):
        yield listed[start : start + IN_CHUNK]


def no_jit(session: Session) -> None:
    """Turn PostgreSQL's JIT compilation off for the session's transaction (nothing on SQLite).

    The catalog's selects are short, but one over 100,000 frames is estimated costly enough for the JIT
    to compile it first, which costs far more than it saves; planning and ``status`` run without it.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


def usable(kind: str) -> Any:
    """SQL condition: catalogued frames of a kind that may enter a master or be calibrated (status ok, not
    marked bad, and not a file ccdcal wrote: one catalogued before ingest skipped them has a CCDCALV card)."""
    # ``IS NOT true`` (is_bad is never NULL): a test no index serves, so that the databases look the
    # frames up by kind (ix_frames_group), not by the flag nearly every frame shares. The CCDCALV cards
    # are found by the keyword index (there are normally none).
    written = select(HeaderCard.frame_id).where(HeaderCard.keyword == "CCDCALV")
    return (
        (Frame.imagetyp == kind)
        & (Frame.status == "ok")
        & Frame.is_bad.is_not(True)
        & Frame.id.not_in(written.scalar_subquery())
    )


def grouped_frames(session: Session, kind: str) -> list[dict[str, Any]]:
    """Every usable frame of one kind with its group number, in one select ordered by the kind's keys.

    SQL orders the rows by :data:`GROUP_KEYS` (the grouping index serves it), then by DATE-OBS and path;
    a group is a run of rows with equal keys (NULL equal to NULL, as ``GROUP BY`` has it), numbered from 1
    in that order (``group_number``, as ``dense_rank()`` over the keys would), with its size
    (``group_size``). Counting the runs here rather than with window functions halves the time of a
    100,000-frame select on SQLite.
    """
    names = GROUP_KEYS[kind]
    rows = core_rows(session, grouped_frames_query(kind))
    if not rows:
        return []
    fields = [*rows[0]._fields, "group_number", "group_size"]
    first = len(fields) - 2 - len(names)
    keys_of = itemgetter(*range(first, first + len(names)))
    found: list[dict[str, Any]] = []
    for number, (_, run) in enumerate(groupby(rows, key=keys_of), 1):
        members = list(run)
        size = len(members)
        found += [dict(zip(fields, (*row, number, size), strict=True)) for row in members]
    return found


def grouped_frames_query(kind: str) -> Select[Any]:
    """The select of :func:`grouped_frames` (the group keys are its last columns)."""
    keys = [getattr(Frame, name) for name in GROUP_KEYS[kind]]
    return (
        select(
            Frame.id,
            Frame.path,
            Frame.hdu,
            Frame.sha256,
            Frame.exptime,
            Frame.ccd_temp,
            Frame.date_obs,
            *keys,
        )
        .where(usable(kind))
        .order_by(*keys, Frame.date_obs, Frame.path)
    )


#: Keys on which a master must equal the frame it serves (NULL matches NULL); temperature is matched
#: with a tolerance instead, exposure and filter per kind (see :mod:`ccdcal.catalog.selection`).
MATCH_KEYS = tuple(key for key in CAMERA_KEYS if key != "temp_key")


#: The camera set-up: a step is "not available" to a light when the catalog holds no frame and no master
#: of that kind with these keys (an LN2-cooled CCD has no darks at all).
SETUP_KEYS = ("instrument", "xbinning", "ybinning", "naxis1", "naxis2")


def kind_available(session: Session, kind: str, target: Mapping[str, Any]) -> bool:
    """Whether the catalog holds any frame (not rejected) or any master of ``kind`` for ``target``'s set-up.

    Parameters
    ----------
    session : Session
        An open catalog session.
    kind : str
        ``bias``, ``dark`` or ``flat``.
    target : mapping
        Values of :data:`SETUP_KEYS` (NULL matches NULL).
    """
    frames = select(Frame.id).where(
        Frame.imagetyp == kind,
        Frame.status != "rejected",
        *(getattr(Frame, k).is_not_distinct_from(target.get(k)) for k in SETUP_KEYS),
    )
    if session.execute(frames.limit(1)).first() is not None:
        return True
    masters = select(Master.id).where(
        Master.kind == kind, *(getattr(Master, k).is_not_distinct_from(target.get(k)) for k in SETUP_KEYS)
    )
    return session.execute(masters.limit(1)).first() is not None


#: Slack added to the temperature tolerance so that a difference of exactly the tolerance, computed in
#: binary floating point (``|-10.1 - -8.1|`` is 2.0000000000000004), still matches.
TEMP_SLACK = 1e-9


#: The kinds a maximum age applies to, and the units an age is written in (``--max-age``).
AGE_KINDS = ("bias", "dark", "flat")
_AGE_FORM = "use KIND=AGE[,KIND=AGE...], KIND bias, dark or flat, AGE as 30d, 12h or 2w"


@dataclass(frozen=True)
class MaxAge:
    """The largest time between a light's DATE-OBS and the mean DATE-OBS of the frames of a master it is
    given, per kind (``None``: any age, the default). ``--max-age bias=30d,dark=90d,flat=7d``.

    Raises
    ------
    UsageError
        An age outside :data:`ccdcal.limits.MAX_AGE`.
    """

    bias: dt.timedelta | None = None
    dark: dt.timedelta | None = None
    flat: dt.timedelta | None = None

    def __post_init__(self) -> None:
        for kind in AGE_KINDS:
            age = getattr(self, kind)
            if age is not None:
                days = age.total_seconds() / 86400.0
                if not MAX_AGE.contains(days):
                    raise UsageError(
                        f"--max-age {kind}={duration_text(age)} is out of range: use {MAX_AGE.text}"
                    )

    def of(self, kind: str) -> dt.timedelta | None:
        """The maximum age of a kind's masters (``None``: any; a ``bpm`` has none)."""
        age: dt.timedelta | None = getattr(self, kind) if kind in AGE_KINDS else None
        return age

    def text(self) -> str | None:
        """``bias=30d,flat=7d`` as given to ``--max-age`` (``None`` when no kind has one)."""
        parts = [f"{k}={_age_text(getattr(self, k))}" for k in AGE_KINDS if getattr(self, k) is not None]
        return ",".join(parts) or None

    @classmethod
    def parse(cls, text: str | None) -> MaxAge:
        """``bias=30d,dark=90d,flat=7d`` (days ``d``, hours ``h``, weeks ``w``; a bare number is days).

        Raises
        ------
        UsageError
            Text of another form, a kind given twice, or an age out of range.
        """
        ages: dict[str, dt.timedelta] = {}
        for part in (text or "").split(","):
            if not part.strip():
                continue
            kind, equals, value = (piece.strip() for piece in part.partition("="))
            kind = kind.lower()
            if not equals or kind not in AGE_KINDS or kind in ages:
                why = f"{kind!r} given twice" if kind in ages else f"{part.strip()!r}"
                raise UsageError(f"--max-age {text}: {why}: {_AGE_FORM}")
            ages[kind] = parse_age(value, f"--max-age {kind}=")
        return cls(**ages)


def _age_text(age: dt.timedelta) -> str:
    seconds = age.total_seconds()
    for unit, size in (("w", 7 * 86400.0), ("d", 86400.0), ("h", 3600.0)):
        if seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds / 86400.0:g}d"


def duration_text(age: dt.timedelta) -> str:
    """``12 days``, ``1 day``, ``5.5 hours``: a time span for messages."""
    seconds = abs(age.total_seconds())
    if seconds >= 86400.0:
        value, unit = seconds / 86400.0, "day"
    else:
        value, unit = seconds / 3600.0, "hour"
    shown = f"{round(value, 1):g}"
    return f"{shown} {unit}{'' if shown == '1' else 's'}"


@dataclass(frozen=True)
class MatchRules:
    """Tolerances and choices of master matching (docs/design.md, Grouping and matching).

    Attributes
    ----------
    temp_tolerance : float
        Largest |master.ccd_temp_mean − frame.ccd_temp| in °C (inclusive).
    exptime_tolerance : float
        Largest relative exposure difference of a dark used without scaling.
    dark_scale : bool
        Choose the dark of nearest exposure (preferring one at least as long) to be scaled, instead of
        requiring the same exposure.
    max_age : MaxAge
        The largest |master date − target date| per kind (a target without a date is not checked).
    validity : bool
        Take only masters whose validity range (``valid_from``, ``valid_to``) holds the target's date (a
        target without a date is not checked). Off for the calibrators of masters
        (:meth:`for_masters`): a master's validity is about the lights it serves.

    Raises
    ------
    UsageError
        When a tolerance is outside its range (:data:`ccdcal.limits.TEMP_TOLERANCE`,
        :data:`ccdcal.limits.EXPTIME_TOLERANCE`).
    """

    temp_tolerance: float = 2.0
    exptime_tolerance: float = 1e-6
    dark_scale: bool = False
    max_age: MaxAge = field(default_factory=MaxAge)
    validity: bool = True
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        TEMP_TOLERANCE.check(self.temp_tolerance)
        EXPTIME_TOLERANCE.check(self.exptime_tolerance)
        # Hashed once: planning looks a ranking up by its rules three times a light.
        key = (self.temp_tolerance, self.exptime_tolerance, self.dark_scale, self.max_age, self.validity)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def for_masters(self) -> MatchRules:
        """The rules of a master's calibrators: without the lights' maximum ages and validity ranges."""
        return MatchRules(self.temp_tolerance, self.exptime_tolerance, self.dark_scale, validity=False)


class epoch_seconds(FunctionElement[float]):
    """A datetime as seconds, for |Δt| ordering: ``julianday`` on SQLite, ``EXTRACT(EPOCH)`` elsewhere."""

    type = Float()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"(julianday({compiler.process(element.clauses, **kw)}) * 86400.0)"


@compiles(epoch_seconds)
def _epoch_default(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


# -- bad frames and masters ---------------------------------------------------------------------------


def unusable_masters() -> Any:
    """Select of the ids of masters that must not be used: marked bad, built from a raw frame marked bad,
    or pre-calibrated with such a master (followed through the calibrators, ``WITH RECURSIVE``).

    A group whose frames were marked bad gets a new master at the next build; until then (or when too few
    frames are left) its old master is not chosen, nor are the darks and flats made with it.
    """
    # Two selects, each served by an is_bad index (``= true``: PostgreSQL cannot use one for ``IS true``).
    seeds = union(
        select(Master.id.label("id")).where(Master.is_bad == true()),
        select(MasterInput.master_id.label("id"))
        .join(Frame, Frame.id == MasterInput.frame_id)
        .where(Frame.is_bad == true()),
    ).subquery("bad_seeds")
    tainted = select(seeds.c.id).cte("unusable", recursive=True)
    tainted = tainted.union(
        select(MasterCalibrator.master_id).join(tainted, tainted.c.id == MasterCalibrator.calibrator_id)
    )
    return select(tainted.c.id)


# -- provenance views (migration 0002) -----------------------------------------------------------------

#: The ``calibration_provenance`` view: one row per calibration and master used.
calibration_provenance = table(
    "calibration_provenance",
    column("calibration_id", Integer),
    column("calibration_status", Text),
    column("output_path", Text),
    column("output_sha256", Text),
    column("light_id", Integer),
    column("light_path", Text),
    column("light_sha256", Text),
    column("role", Text),
    column("master_id", Integer),
    column("master_path", Text),
    column("master_sha256", Text),
    column("master_version", Integer),
    column("master_status", Text),
    column("master_is_bad", Boolean),
    column("delta_temp", Float),
    column("delta_time", Float),
    column("scale", Float),
    column("pinned", Boolean),
    column("run_id", Integer),
    column("run_command", Text),
    column("ccdcal_version", Text),
    column("created_at", DateTime),
    column("superseded_reason", Text),
)

#: The ``master_lineage`` view: one row per master and raw frame behind it (through its calibrators too).
master_lineage = table(
    "master_lineage",
    column("master_id", Integer),
    column("master_kind", Text),
    column("master_path", Text),
    column("master_sha256", Text),
    column("master_status", Text),
    column("master_is_bad", Boolean),
    column("master_n_inputs", Integer),
    column("via", Text),
    column("depth", Integer),
    column("source_master_id", Integer),
    column("source_kind", Text),
    column("source_path", Text),
    column("source_sha256", Text),
    column("source_is_bad", Boolean),
    column("frame_id", Integer),
    column("frame_path", Text),
    column("frame_imagetyp", Text),
    column("frame_sha256", Text),
    column("frame_sha256_now", Text),
    column("frame_status", Text),
    column("frame_is_bad", Boolean),
)


def downstream_masters(
    session: Session, *, frame_id: int | None = None, master_id: int | None = None
) -> list[int]:
    """Ids of the masters made from a raw frame, or from a master (as a calibrator, at any depth).

    Read from the ``master_lineage`` view; a master is not its own downstream. Ordered by id.
    """
    lineage = master_lineage.c
    if frame_id is not None:
        query = select(lineage.master_id).where(lineage.frame_id == frame_id)
    else:
        query = select(lineage.master_id).where(
            lineage.source_master_id == master_id, lineage.master_id != master_id
        )
    return list(session.scalars(query.distinct().order_by(lineage.master_id)))


def calibrations_using(session: Session, master_ids: list[int]) -> list[int]:
    """Ids of the calibrations (any status) that applied one of ``master_ids``, from
    ``calibration_provenance``."""
    if not master_ids:
        return []
    view = calibration_provenance.c
    query = select(view.calibration_id).where(view.master_id.in_(master_ids)).distinct()
    return list(session.scalars(query.order_by(view.calibration_id)))
