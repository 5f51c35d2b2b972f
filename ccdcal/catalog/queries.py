"""The catalog's grouping and summary selects. Grouping keys are data: one tuple of columns per kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, Float, case, func, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from ccdcal.catalog.models import Frame, Master

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


#: Keys on which a master must equal the frame it serves (NULL matches NULL); temperature is matched
#: with a tolerance instead, exposure and filter per kind (see :func:`select_master`).
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


@dataclass(frozen=True)
class MatchRules:
    """Tolerances and choices of master matching (DESIGN.md "Grouping and matching").

    Attributes
    ----------
    temp_tolerance : float
        Largest |master.ccd_temp_mean − frame.ccd_temp| in °C (inclusive).
    exptime_tolerance : float
        Largest relative exposure difference of a dark used without scaling.
    dark_scale : bool
        Choose the dark of nearest exposure (preferring one at least as long) to be scaled, instead of
        requiring the same exposure.
    """

    temp_tolerance: float = 2.0
    exptime_tolerance: float = 1e-6
    dark_scale: bool = False


def select_master(
    session: Session,
    kind: str,
    target: Mapping[str, Any],
    rules: MatchRules = MatchRules(),
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> Master | None:
    """The master of ``kind`` that best serves a frame (or a group of frames) with ``target``'s keys.

    One select over current masters not marked bad, with the same camera keys (:data:`MATCH_KEYS`,
    NULL matching NULL only) and |ΔT| within the tolerance (a target without temperature takes only
    masters without one). Per kind:

    - dark: the same exposure within the relative tolerance; with ``rules.dark_scale`` the dark of
      nearest exposure instead, preferring one at least as long as the target's, and only darks that
      can be scaled (bias subtracted, positive exposure: a dark still holding the bias is never chosen);
    - flat: the same filter.

    Among candidates: nearest in temperature, then nearest in time (masters without a date last), then
    the newest.

    Parameters
    ----------
    session : Session
        An open catalog session.
    kind : str
        ``bias``, ``dark`` or ``flat``.
    target : mapping
        ``frames``-like values: the :data:`MATCH_KEYS`, ``ccd_temp``, ``date_obs``, and ``exptime``
        (darks) or ``filter`` (flats).
    rules : MatchRules
        Tolerances and dark scaling.
    exclude_with_bias : bool
        Never choose a dark that still contains the bias (implied by ``rules.dark_scale``).
    only_with_bias : bool
        Choose only a dark that still contains the bias (for frames calibrated without a master bias).

    Returns
    -------
    Master or None
        The best candidate, or ``None`` when nothing matches.
    """
    conditions = [
        Master.kind == kind,
        Master.status == "current",
        Master.is_bad.is_(False),
        *(getattr(Master, key).is_not_distinct_from(target.get(key)) for key in MATCH_KEYS),
    ]
    temp = target.get("ccd_temp")
    if temp is None:
        conditions.append(Master.ccd_temp_mean.is_(None))
        delta_temp: Any = literal(0.0)
    else:
        delta_temp = func.abs(Master.ccd_temp_mean - temp)
        conditions.append(delta_temp <= rules.temp_tolerance + TEMP_SLACK)
    order: list[Any] = []
    if kind == "dark":
        exposure_conditions, order = _dark_exposure(target.get("exptime"), rules)
        conditions += exposure_conditions
        if exclude_with_bias:
            conditions.append(Master.includes_bias.is_(False))
        if only_with_bias:
            conditions.append(Master.includes_bias.is_(True))
    if kind == "flat":
        conditions.append(Master.filter.is_not_distinct_from(target.get("filter")))
    order.append(delta_temp)
    when = target.get("date_obs")
    if when is not None:
        delta_time = func.abs(epoch_seconds(Master.date_obs_mean) - epoch_seconds(literal(when, DateTime())))
        order += [Master.date_obs_mean.is_(None), delta_time]
    order.append(Master.id.desc())
    query = select(Master).where(*conditions).order_by(*order).limit(1)
    return session.scalars(query).first()


def _dark_exposure(exptime: float | None, rules: MatchRules) -> tuple[list[Any], list[Any]]:
    """The conditions and leading order terms on a dark's exposure."""
    if exptime is None:
        return [Master.exptime.is_(None)], []
    if not rules.dark_scale:
        tolerance = rules.exptime_tolerance * max(abs(exptime), 1e-9)
        return [func.abs(Master.exptime - exptime) <= tolerance], []
    scalable = [Master.includes_bias.is_(False), Master.exptime > 0]
    longer_first = case((Master.exptime >= exptime * (1 - rules.exptime_tolerance), 0), else_=1)
    return scalable, [longer_first, func.abs(Master.exptime - exptime)]


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
