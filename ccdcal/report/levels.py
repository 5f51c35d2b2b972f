"""The report's levels over time: each bias group's bias level, and each camera set-up's dark current.

A *level* is a master's sigma-clipped mean with its standard error, recorded when the master is built
(``masters.parameters.level``, :func:`ccdcal.kernels.qa.clipped_level`): not its median, which for masters
of integer frames moves by whole steps.

- **Bias level**, per bias group shown: one point per build date (UTC), the newest version built that
  day: the level of the raw image area. Without overscan it is the master's level. Where the bias was
  overscan-subtracted the master holds only what the overscan left (a level near 0 or 1 ADU that means
  nothing alone): the bias level is the overscan level subtracted from its inputs (their mean) plus the
  master's level. The overscan levels are medians of integer data, whole numbers or halves; the
  master's level adds back what they rounded. A master of an older ccdcal, which recorded no level,
  shows its median (or its overscan level alone) and says so.
- **Dark current**, per camera set-up of the darks shown (the dark group keys but the exposure): one point
  per build date, the slope of level against exposure (:func:`ccdcal.kernels.dark.fit_dark_current`) of
  the set-up's bias-subtracted master darks as they were at the end of that day — for each exposure, the
  newest version built by then. Darks that still contain the bias, and masters without a level, are
  left out (the latter counted in the point's notes).

Masters marked bad and masters without a DATE-OBS have no point; every version of a group shown counts,
whatever the report's scope. Plain values only, as :mod:`ccdcal.report.data`.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import CAMERA_KEYS
from ccdcal.files.naming import number_text
from ccdcal.kernels.dark import fit_dark_current
from ccdcal.masters.groups import describe_keys, overscan_level, recorded_level

#: What a bias point's value is.
OVERSCAN, OVERSCAN_ONLY, CLIPPED_MEAN, MEDIAN = (
    "overscan level + clipped mean",
    "overscan level",
    "clipped mean",
    "median",
)


@dataclass(frozen=True)
class DriftPoint:
    """One point of a series: a master's bias level, or a set-up's dark current fitted to its darks.

    Attributes
    ----------
    when : datetime
        The mean DATE-OBS of the masters' inputs (UTC); for a dark current, the mean over its darks.
    value, error : float, float or None
        Bias level [ADU] or dark current [ADU/s], and its standard uncertainty (``None``: not known).
    built : date
        The day (UTC) the newest of its masters was built.
    source : str
        What the value is: ``overscan level``, ``clipped mean`` or ``median`` for a bias; the exposures
        fitted for a dark current.
    masters : tuple of int
        The ids of the masters it is made of.
    resolved : bool
        ``False`` for a dark current its darks do not resolve (see
        :func:`~ccdcal.kernels.dark.fit_dark_current`).
    notes : tuple of str
        What to know about the value.
    """

    when: dt.datetime
    value: float
    error: float | None
    built: dt.date
    source: str
    masters: tuple[int, ...]
    resolved: bool = True
    notes: tuple[str, ...] = ()


@dataclass
class DriftSeries:
    """One bias group's level, or one set-up's dark current, over time (``kind`` ``bias`` or ``dark``)."""

    kind: str
    label: str
    points: list[DriftPoint]
    notes: list[str] = field(default_factory=list)


def _camera(master: Master) -> tuple[object, ...]:
    return tuple(getattr(master, name) for name in CAMERA_KEYS)


def select_levels(session: Session, shown: Iterable[tuple[str, Mapping[str, object]]]) -> list[DriftSeries]:
    """The bias level of the bias groups and the dark current of the set-ups of the masters ``shown``.

    Parameters
    ----------
    session : Session
        A reading session of the catalog.
    shown : iterable of (str, mapping)
        The kind and group keys of each master the report shows, in its order (the series' order).

    Returns
    -------
    list of DriftSeries
        The bias series, then the dark series, each in the order of the masters shown; a dark series
        whose masters have no level has no points and says why in its notes.
    """
    wanted: dict[tuple[str, tuple[object, ...]], int] = {}
    for kind, keys in shown:
        if kind in ("bias", "dark"):
            wanted.setdefault((kind, tuple(keys.get(name) for name in CAMERA_KEYS)), len(wanted))
    if not wanted:
        return []
    query = (
        select(Master)
        .where(Master.kind.in_(("bias", "dark")), Master.is_bad.is_(False), Master.date_obs_mean.is_not(None))
        .order_by(Master.id)
    )
    found: dict[tuple[str, tuple[object, ...]], list[Master]] = {}
    for master in session.scalars(query):
        group = (master.kind, _camera(master))
        if group in wanted and not (
            master.kind == "dark" and (master.includes_bias or master.exptime is None)
        ):
            found.setdefault(group, []).append(master)
    series = []
    for group in sorted(found, key=lambda g: (g[0] != "bias", wanted[g])):
        kind, camera = group
        label = describe_keys(dict(zip(CAMERA_KEYS, camera, strict=True)))
        series.append(
            _bias_series(label, found[group]) if kind == "bias" else _dark_series(label, found[group])
        )
    return [s for s in series if s.points or s.notes]


def _built(master: Master) -> dt.date:
    return master.created_at.date()


def _mean_time(times: list[dt.datetime]) -> dt.datetime:
    origin = min(times)
    return origin + dt.timedelta(seconds=statistics.fmean((t - origin).total_seconds() for t in times))


# -- bias ----------------------------------------------------------------------------------------------


def _bias_series(label: str, masters: list[Master]) -> DriftSeries:
    newest: dict[dt.date, Master] = {}
    for master in masters:  # by id: the last of a day is its newest
        newest[_built(master)] = master
    series = DriftSeries("bias", label, [])
    for day in sorted(newest):
        point = _bias_point(newest[day])
        if point is not None:
            series.points.append(point)
    return series


def _bias_point(master: Master) -> DriftPoint | None:
    assert master.date_obs_mean is not None  # selected so
    level = recorded_level(master.parameters)
    overscan = overscan_level(master.parameters)
    notes: list[str] = []
    if overscan is not None:
        value, error, inputs = overscan
        shown = f"{value:.6g}" + ("" if not error else f" ± {error:.2g}")
        notes.append(f"overscan level {shown} ADU subtracted from its {inputs} inputs (their mean)")
        if level is not None:
            source = OVERSCAN
            notes.append(f"the master holds {level[0]:.4g} ± {level[1]:.2g} ADU more (its clipped mean)")
            value, error = value + level[0], math.hypot(error or 0.0, level[1])
        else:
            source = OVERSCAN_ONLY
            notes.append("built by an older ccdcal, which recorded no clipped mean: the overscan level alone")
    elif level is not None:
        (value, error), source = level, CLIPPED_MEAN
    elif master.stat_median is not None:
        value, error, source = master.stat_median, None, MEDIAN
        notes.append("built by an older ccdcal, which recorded no clipped mean: its median is shown")
    else:
        return None
    if not math.isfinite(value) or not (error is None or math.isfinite(error)):  # a row edited by hand
        return None
    return DriftPoint(
        master.date_obs_mean, value, error, _built(master), source, (master.id,), notes=tuple(notes)
    )


# -- dark current --------------------------------------------------------------------------------------


def _dark_series(label: str, masters: list[Master]) -> DriftSeries:
    series = DriftSeries("dark", label, [])
    days = sorted({_built(m) for m in masters})
    for day in days:
        latest: dict[float, Master] = {}
        for master in masters:
            if _built(master) <= day:
                assert master.exptime is not None  # selected so
                latest[master.exptime] = master  # by id: the newest version of each exposure
        point = _dark_point(day, list(latest.values()))
        if point is not None:
            series.points.append(point)
    unmeasured = sum(recorded_level(m.parameters) is None for m in masters)
    if unmeasured and not series.points:
        series.notes.append(
            f"dark current not measured: its {unmeasured} bias-subtracted master darks were built by an "
            "older ccdcal, which recorded no clipped mean; the next master darks built will have one"
        )
    return series


def _dark_point(day: dt.date, darks: list[Master]) -> DriftPoint | None:
    measured = [(m, level) for m in darks if (level := recorded_level(m.parameters)) is not None]
    measured.sort(key=lambda pair: (pair[0].exptime or 0.0, pair[0].id))
    if not any((m.exptime or 0.0) > 0 for m, _ in measured):
        return None
    try:
        fit = fit_dark_current(
            [m.exptime or 0.0 for m, _ in measured],
            [level[0] for _, level in measured],
            [level[1] for _, level in measured],
        )
    except ValueError:  # levels no fit can use (a row edited by hand)
        return None
    notes = list(fit.notes)
    if fit.offset is not None and fit.offset_error is not None:
        notes.append(f"offset at zero exposure {fit.offset:+.3g} ± {fit.offset_error:.2g} ADU")
    left_out = len(darks) - len(measured)
    if left_out:
        notes.append(
            f"{left_out} master dark{'s' if left_out > 1 else ''} built by an older ccdcal left out "
            "(no clipped mean recorded)"
        )
    times = [m.date_obs_mean for m, _ in measured if m.date_obs_mean is not None]
    exposures = ", ".join(number_text(t) for t in fit.exposures)
    return DriftPoint(
        when=_mean_time(times),
        value=fit.rate,
        error=fit.error,
        built=day,
        source=f"{len(fit.exposures)} exposure{'s' if len(fit.exposures) > 1 else ''} ({exposures} s)",
        masters=tuple(m.id for m, _ in measured),
        resolved=fit.resolved,
        notes=tuple(notes),
    )
