"""Master selection for every light at once: the rules of :func:`~ccdcal.catalog.selection.match_terms`,
applied with numpy to candidates read once.

:func:`~ccdcal.catalog.selection.best_masters` joins each light with its candidate masters in SQL and ranks
them with ``row_number()``: its cost grows as lights × candidates (100,000 lights and 5,000 current
masters: about a minute a kind). :func:`rank_masters` reads instead

- the candidate masters of a kind once (the target-independent conditions,
  :func:`~ccdcal.catalog.selection.candidate_conditions`, in SQL: current, usable, with or without the
  bias), and
- the target columns of the lights once (:class:`Targets`, shared by every kind and variant of a plan),

then applies the per-target rules to each group of lights sharing the camera keys (and, for flats, the
filter), as arrays: |ΔT| within the tolerance, the dark's exposure, then the order of preference —
nearest temperature, nearest time (masters without a date last), newest. The numbers are those SQL
computes: the same IEEE double arithmetic on temperatures and exposures, and times as the database
orders them (``julianday`` values read from SQLite; on PostgreSQL, whose ``EXTRACT(EPOCH)`` is exact, exact
microseconds). The result equals :func:`~ccdcal.catalog.selection.select_master` for every light
(``tests/catalog/test_ranking.py`` checks it on SQLite and PostgreSQL, ties included).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import MATCH_KEYS, TEMP_SLACK, MatchRules, core_rows, epoch_seconds
from ccdcal.catalog.selection import DEFAULT_RULES, candidate_conditions

#: Largest number of (light, master) pairs ranked in one array operation (memory stays bounded).
BLOCK_PAIRS = 1 << 20

_EPOCH_ORIGIN = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass
class Columns:
    """Matching values of many rows (lights, or candidate masters), as arrays; NULL is NaN (and a mask).

    Attributes
    ----------
    ids : ndarray of int64
    keys : list of tuple
        Per row, the values of :data:`~ccdcal.catalog.queries.MATCH_KEYS`, then the filter.
    temp, exptime : ndarray of float64
        Temperature (a light's CCD-TEMP, a master's mean), exposure.
    epoch : ndarray
        Time as the database orders it: float64 seconds (SQLite's julianday x 86400) or int64 exact
        microseconds (PostgreSQL); 0 where unknown.
    no_temp, no_epoch, no_exptime : ndarray of bool
        Where the value is NULL.
    includes_bias : ndarray of bool
        Masters only: the dark still contains the bias.
    when : ndarray of int64
        Lights only: DATE-OBS as exact microseconds (0 where unknown), for the validity ranges.
    valid_from, valid_to : ndarray of int64
        Masters only: the validity range as exact microseconds (open ends the extreme values).
    """

    ids: np.ndarray
    keys: list[tuple[Any, ...]]
    temp: np.ndarray
    epoch: np.ndarray
    exptime: np.ndarray
    no_temp: np.ndarray
    no_epoch: np.ndarray
    no_exptime: np.ndarray
    includes_bias: np.ndarray
    when: np.ndarray
    valid_from: np.ndarray
    valid_to: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]], exact_time: bool, *, with_bias: bool = False) -> Columns:
        """From rows starting (id, *MATCH_KEYS, filter, temperature, time, exposure), then for lights their
        DATE-OBS, for masters (``with_bias``) includes_bias, valid_from and valid_to."""
        width = len(MATCH_KEYS) + 1
        keys = [tuple(row[1 : 1 + width]) for row in rows]
        temp, when, exptime = ([row[1 + width + i] for row in rows] for i in range(3))
        no_epoch = np.array([value is None for value in when], dtype=bool)
        if exact_time:
            epoch = np.array(
                [0 if v is None else (v - _EPOCH_ORIGIN) // _MICROSECOND for v in when], dtype=np.int64
            )
        else:
            epoch = np.array([0.0 if v is None else v for v in when], dtype=np.float64)
        temps = np.array([np.nan if v is None else v for v in temp], dtype=np.float64)
        exps = np.array([np.nan if v is None else v for v in exptime], dtype=np.float64)
        bias = [bool(row[4 + width]) for row in rows] if with_bias else [False] * len(rows)
        low, high = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        if with_bias:
            valid_from = _exact([row[5 + width] for row in rows], low)
            valid_to = _exact([row[6 + width] for row in rows], high)
            dates = np.zeros(len(rows), dtype=np.int64)
        else:
            valid_from = valid_to = np.zeros(len(rows), dtype=np.int64)
            dates = _exact([row[4 + width] if len(row) > 4 + width else None for row in rows], 0)
        return cls(
            ids=np.array([row[0] for row in rows], dtype=np.int64),
            keys=keys,
            temp=temps,
            epoch=epoch,
            exptime=exps,
            no_temp=np.isnan(temps),
            no_epoch=no_epoch,
            no_exptime=np.isnan(exps),
            includes_bias=np.array(bias, dtype=bool),
            when=dates,
            valid_from=valid_from,
            valid_to=valid_to,
        )

    def take(self, index: np.ndarray) -> Columns:
        """The rows at ``index`` (without their keys: the caller knows them)."""
        return Columns(
            ids=self.ids[index],
            keys=[],
            temp=self.temp[index],
            epoch=self.epoch[index],
            exptime=self.exptime[index],
            no_temp=self.no_temp[index],
            no_epoch=self.no_epoch[index],
            no_exptime=self.no_exptime[index],
            includes_bias=self.includes_bias[index],
            when=self.when[index],
            valid_from=self.valid_from[index],
            valid_to=self.valid_to[index],
        )


def _exact(values: list[dt.datetime | None], unknown: int) -> np.ndarray:
    """Dates as exact microseconds since 1970 (``unknown`` where NULL)."""
    return np.array(
        [unknown if v is None else (v - _EPOCH_ORIGIN) // _MICROSECOND for v in values], dtype=np.int64
    )


def _time_column(column: Any, exact: bool) -> Any:
    """The time as read for ranking: the datetime itself (exact), or SQLite's own epoch seconds."""
    return column if exact else epoch_seconds(column)


def exact_time(session: Session) -> bool:
    """Whether times are ranked as exact microseconds (PostgreSQL), else as SQLite's epoch seconds."""
    return session.get_bind().dialect.name != "sqlite"


def target_columns(exact: bool) -> list[Any]:
    """The ``frames`` columns of a target, in the order :meth:`Columns.of` reads them (the time labelled
    ``epoch``: the datetime itself when ``exact``, else SQLite's epoch seconds)."""
    return [
        Frame.id,
        *(getattr(Frame, key) for key in MATCH_KEYS),
        Frame.filter,
        Frame.ccd_temp,
        _time_column(Frame.date_obs, exact).label("epoch"),
        Frame.exptime,
        Frame.date_obs.label("when"),
    ]


class Targets:
    """The target columns of many lights, grouped by camera keys for each kind.

    Parameters
    ----------
    columns : Columns
        The lights' values (:meth:`load` reads them).
    """

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self._groups: dict[bool, dict[tuple[Any, ...], np.ndarray]] = {}

    @classmethod
    def load(cls, session: Session, condition: Any) -> Targets:
        """Read the ``frames`` rows of ``condition`` (e.g. :func:`~ccdcal.catalog.queries.usable`)."""
        exact = exact_time(session)
        rows = core_rows(session, select(*target_columns(exact)).where(condition))
        return cls(Columns.of(rows, exact))

    def groups(self, by_filter: bool) -> dict[tuple[Any, ...], np.ndarray]:
        """Row indexes (ascending) per camera keys, and filter with ``by_filter``."""
        if not self._groups:
            full: dict[tuple[Any, ...], list[int]] = {}
            for index, key in enumerate(self.columns.keys):
                full.setdefault(key, []).append(index)
            merged: dict[tuple[Any, ...], list[np.ndarray]] = {}
            self._groups[True] = {k: np.array(v, dtype=np.intp) for k, v in full.items()}
            for key, rows in self._groups[True].items():  # the filters of each camera, merged
                merged.setdefault(key[: len(MATCH_KEYS)], []).append(rows)
            self._groups[False] = {k: np.sort(np.concatenate(v)) for k, v in merged.items()}
        return self._groups[by_filter]


def candidates(
    session: Session, kind: str, *, exclude_with_bias: bool = False, only_with_bias: bool = False
) -> Columns:
    """The masters of ``kind`` that may serve some target (current, usable, bias flags), as columns."""
    exact = exact_time(session)
    query = candidates_query(kind, exact, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias)
    return Columns.of(core_rows(session, query), exact, with_bias=True)


def candidates_query(
    kind: str, exact: bool, *, exclude_with_bias: bool = False, only_with_bias: bool = False
) -> Select[Any]:
    """The select of :func:`candidates`."""
    conditions = candidate_conditions(
        kind, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias
    )
    return select(
        Master.id,
        *(getattr(Master, key) for key in MATCH_KEYS),
        Master.filter,
        Master.ccd_temp_mean,
        _time_column(Master.date_obs_mean, exact),
        Master.exptime,
        Master.includes_bias,
        Master.valid_from,
        Master.valid_to,
    ).where(*conditions)


def rank_masters(
    session: Session,
    kind: str,
    targets: Targets,
    rules: MatchRules = DEFAULT_RULES,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> dict[int, int]:
    """The best master of ``kind`` for each target (see the module docstring).

    Parameters
    ----------
    session : Session
        An open catalog session.
    kind : str
        ``bias``, ``dark`` or ``flat``.
    targets : Targets
        The lights, read once.
    rules, exclude_with_bias, only_with_bias
        As :func:`~ccdcal.catalog.selection.match_terms`.

    Returns
    -------
    dict
        Frame id → master id, for the targets some master serves.
    """
    masters = candidates(session, kind, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias)
    by_filter = kind == "flat"
    cut = None if by_filter else len(MATCH_KEYS)
    pool: dict[tuple[Any, ...], list[int]] = {}
    for index, key in enumerate(masters.keys):
        pool.setdefault(key[:cut], []).append(index)
    chosen: dict[int, int] = {}
    lights = targets.columns
    for key, rows in targets.groups(by_filter).items():
        if key not in pool:
            continue
        group = masters.take(np.array(pool[key], dtype=np.intp))
        step = max(1, BLOCK_PAIRS // len(group.ids))
        for start in range(0, len(rows), step):
            block = lights.take(rows[start : start + step])
            best = _best(kind, block, group, rules)
            found = best >= 0
            chosen.update(zip(block.ids[found].tolist(), group.ids[best[found]].tolist(), strict=True))
    return chosen


def best_masters_ranked(
    session: Session,
    kind: str,
    lights: Any,
    rules: MatchRules = DEFAULT_RULES,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> dict[int, int]:
    """:func:`rank_masters` for the lights of a condition: the same answer as
    :func:`~ccdcal.catalog.selection.best_masters`."""
    return rank_masters(
        session,
        kind,
        Targets.load(session, lights),
        rules,
        exclude_with_bias=exclude_with_bias,
        only_with_bias=only_with_bias,
    )


def _best(kind: str, lights: Columns, masters: Columns, rules: MatchRules) -> np.ndarray:
    """For each light, the index in ``masters`` of its best master (-1: none), as match_terms ranks."""
    valid = _temperature_ok(lights, masters, rules) & _dates_ok(kind, lights, masters, rules)
    order: list[np.ndarray] = []
    if kind == "dark":
        exposure_ok, order = _dark_exposure(lights, masters, rules)
        valid &= exposure_ok
    temp_gap = np.abs(masters.temp[None, :] - lights.temp[:, None])
    order.append(np.where(np.isnan(temp_gap), 0.0, temp_gap))  # coalesce(abs(ΔT), 0)
    undated = masters.no_epoch[None, :] & ~lights.no_epoch[:, None]  # masters without a date last
    order.append(undated.astype(np.int8))
    time_gap = np.abs(masters.epoch[None, :] - lights.epoch[:, None])
    unknown = masters.no_epoch[None, :] | lights.no_epoch[:, None]
    order.append(np.where(unknown, 0, time_gap))  # coalesce(abs(Δt), 0)
    for term in order:
        valid &= _is_least(term, valid)
    newest = np.where(valid, masters.ids[None, :], -1)
    pick = newest.argmax(axis=1)
    return np.where(newest[np.arange(len(pick)), pick] >= 0, pick, -1)


def _is_least(term: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Where, among each row's valid entries, ``term`` takes its least value."""
    term = np.broadcast_to(term, valid.shape)
    top = np.inf if term.dtype.kind == "f" else np.iinfo(term.dtype).max
    masked = np.where(valid, term, top)
    least: np.ndarray = masked == masked.min(axis=1, keepdims=True)
    return least


def _temperature_ok(lights: Columns, masters: Columns, rules: MatchRules) -> np.ndarray:
    """Both without a temperature, or |ΔT| within the tolerance (NaN never is)."""
    both_unknown = lights.no_temp[:, None] & masters.no_temp[None, :]
    gap = np.abs(masters.temp[None, :] - lights.temp[:, None])
    with np.errstate(invalid="ignore"):
        ok: np.ndarray = both_unknown | (gap <= rules.temp_tolerance + TEMP_SLACK)
    return ok


def _dates_ok(kind: str, lights: Columns, masters: Columns, rules: MatchRules) -> np.ndarray:
    """The rules on a light's date (``selection.dated_conditions``): within the master's validity range
    (exact microseconds, as the databases compare dates) and the kind's maximum age (in the units of
    :attr:`Columns.epoch`, as SQL computes the gap); a light without a date passes."""
    undated = lights.no_epoch[:, None]
    ok: np.ndarray = np.ones((len(lights.ids), len(masters.ids)), dtype=bool)
    if rules.validity:
        when = lights.when[:, None]
        ok &= undated | ((masters.valid_from[None, :] <= when) & (when <= masters.valid_to[None, :]))
    age = rules.max_age.of(kind)
    if age is not None:
        limit = age // _MICROSECOND if masters.epoch.dtype.kind == "i" else age.total_seconds()
        gap = np.abs(masters.epoch[None, :] - lights.epoch[:, None])
        ok &= undated | (~masters.no_epoch[None, :] & (gap <= limit))
    return ok


def _dark_exposure(
    lights: Columns, masters: Columns, rules: MatchRules
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Exposure conditions and leading order terms of a dark (see ``selection._dark_exposure``)."""
    light_t, dark_t = lights.exptime[:, None], masters.exptime[None, :]
    unknown = lights.no_exptime[:, None] & masters.no_exptime[None, :]
    gap = np.abs(dark_t - light_t)
    with np.errstate(invalid="ignore"):
        if not rules.dark_scale:
            room = np.where(np.abs(light_t) > 1e-9, np.abs(light_t), 1e-9)
            return unknown | (gap <= rules.exptime_tolerance * room), []
        scalable = ~lights.no_exptime[:, None] & ~masters.includes_bias[None, :] & (dark_t > 0)
        longer_first = np.where(dark_t >= light_t * (1 - rules.exptime_tolerance), 0, 1).astype(np.int8)
    return unknown | scalable, [longer_first, np.where(np.isnan(gap), 0.0, gap)]
