"""Master selection: the matching rules of docs/design.md, written once as SQL terms over a target.

:func:`match_terms` states the rules — which masters may serve a target and in what order of preference —
over *target columns*. The same terms serve two selects:

- :func:`select_master`: the best master for one target (a light, or a group of frames being combined),
  its values bound as parameters (the statement is built once per kind and rules);
- :func:`best_masters`: the best master for every light at once, the target columns being those of
  ``frames``: one select per kind, ranked by ``row_number()`` per light.

Planning every light uses neither: :mod:`ccdcal.catalog.ranking` reads the candidates
(:func:`candidate_conditions`, the target-independent part of the rules) and the lights once, and applies
the rest with numpy — the join of :func:`best_masters` grows as lights × candidates. Tests hold the three
to the same answer, ties included.

Rules (docs/design.md, Grouping and matching): current masters that may be used (not marked bad, no bad input
or calibrator, :func:`~ccdcal.catalog.queries.unusable_masters`) with the same camera keys
(:data:`~ccdcal.catalog.queries.MATCH_KEYS`, NULL matching NULL only) and |ΔT| within the tolerance (a
target without temperature takes only masters without one); darks of the same exposure within the relative
tolerance, or with dark scaling the nearest exposure, preferring one at least as long, among darks that can
be scaled; flats of the same filter; on the target's date, when it has one, the master's validity range and
the kind's maximum age (:func:`dated_conditions`). Among candidates: nearest temperature, then nearest in
time (masters without a date last), then the newest.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import BindParameter, Select, and_, bindparam, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType

from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import MATCH_KEYS, TEMP_SLACK, MatchRules, epoch_seconds, unusable_masters

#: The default tolerances (docs/design.md, Grouping and matching), without dark scaling.
DEFAULT_RULES = MatchRules()

#: The frame columns a target is made of.
TARGET_KEYS = (*MATCH_KEYS, "ccd_temp", "date_obs", "exptime", "filter")


def match_terms(
    kind: str,
    target: Mapping[str, Any],
    rules: MatchRules,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> tuple[list[Any], list[Any]]:
    """The conditions a master of ``kind`` must meet to serve ``target``, and the order of preference.

    Parameters
    ----------
    kind : str
        ``bias``, ``dark`` or ``flat``.
    target : mapping
        SQL expressions for :data:`TARGET_KEYS`: columns of ``frames``, or bound values.
    rules : MatchRules
        Tolerances and dark scaling.
    exclude_with_bias : bool
        Never choose a dark that still contains the bias.
    only_with_bias : bool
        Choose only a dark that still contains the bias (frames calibrated without a master bias).

    Returns
    -------
    conditions, order : list
        For ``WHERE`` (or ``JOIN ... ON``) and ``ORDER BY`` (best first, ties broken by the newest).
    """
    temp = target["ccd_temp"]
    conditions: list[Any] = [
        *candidate_conditions(kind, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias),
        *(same(getattr(Master, key), target[key]) for key in MATCH_KEYS),
        or_(
            and_(temp.is_(None), Master.ccd_temp_mean.is_(None)),
            func.abs(Master.ccd_temp_mean - temp) <= rules.temp_tolerance + TEMP_SLACK,
        ),
    ]
    order: list[Any] = []
    if kind == "dark":
        exposure_conditions, order = _dark_exposure(target["exptime"], rules)
        conditions += exposure_conditions
    if kind == "flat":
        conditions.append(same(Master.filter, target["filter"]))
    when = target["date_obs"]
    conditions += dated_conditions(kind, when, rules)
    delta_time = func.abs(epoch_seconds(Master.date_obs_mean) - epoch_seconds(when))
    order += [
        func.coalesce(func.abs(Master.ccd_temp_mean - temp), 0.0),
        # A target without a date does not order by time; else masters without one come last.
        case((when.is_(None), 0), (Master.date_obs_mean.is_(None), 1), else_=0),
        func.coalesce(delta_time, 0.0),
        Master.id.desc(),
    ]
    return conditions, order


def dated_conditions(kind: str, when: Any, rules: MatchRules) -> list[Any]:
    """The rules on the target's date (none for a target without one): the master's validity range holds
    it (``valid_from``/``valid_to``, inclusive, NULL open), and the master's mean DATE-OBS is within the
    kind's maximum age of it (a master without a date is not: its age is unknown)."""
    conditions: list[Any] = []
    if rules.validity:
        inside = and_(
            or_(Master.valid_from.is_(None), Master.valid_from <= when),
            or_(Master.valid_to.is_(None), Master.valid_to >= when),
        )
        conditions.append(or_(when.is_(None), inside))
    age = rules.max_age.of(kind)
    if age is not None:
        gap = func.abs(epoch_seconds(Master.date_obs_mean) - epoch_seconds(when))
        conditions.append(or_(when.is_(None), gap <= age.total_seconds()))
    return conditions


def candidate_conditions(
    kind: str, *, exclude_with_bias: bool = False, only_with_bias: bool = False
) -> list[Any]:
    """The conditions of :func:`match_terms` that do not depend on the target: current masters of
    ``kind`` that may be used, and (darks) whether they may, or must, still contain the bias."""
    conditions: list[Any] = [
        Master.kind == kind,
        Master.status == "current",
        Master.is_bad.is_not(True),  # never NULL; not an index lookup (ix_masters_match serves)
        Master.id.not_in(unusable_masters()),
    ]
    if kind == "dark" and exclude_with_bias:
        conditions.append(Master.includes_bias.is_(False))
    if kind == "dark" and only_with_bias:
        conditions.append(Master.includes_bias.is_(True))
    return conditions


def _dark_exposure(exptime: Any, rules: MatchRules) -> tuple[list[Any], list[Any]]:
    """The conditions and leading order terms on a dark's exposure (a target without one takes only
    darks without one)."""
    unknown = and_(exptime.is_(None), Master.exptime.is_(None))
    if not rules.dark_scale:
        room = case((func.abs(exptime) > 1e-9, func.abs(exptime)), else_=1e-9)
        return [or_(unknown, func.abs(Master.exptime - exptime) <= rules.exptime_tolerance * room)], []
    scalable = and_(exptime.is_not(None), Master.includes_bias.is_(False), Master.exptime > 0)
    longer_first = case((Master.exptime >= exptime * (1 - rules.exptime_tolerance), 0), else_=1)
    return [or_(unknown, scalable)], [longer_first, func.coalesce(func.abs(Master.exptime - exptime), 0.0)]


class same(FunctionElement[Any]):
    """``a IS NOT DISTINCT FROM b`` (NULL matches NULL only), as each database can serve it from an index
    or a hash: ``a IS b`` on SQLite (an index lookup); on PostgreSQL, where that operator can use neither,
    ``COALESCE(a, s) = COALESCE(b, s)`` with a sentinel ``s`` no catalog value takes, so that a join of
    every light with the masters is one hash join. Untyped, so that SQLAlchemy adds no ``= 1`` (which would
    hide the ``IS`` from SQLite's planner)."""

    type = NullType()
    inherit_cache = True


#: NULL stand-ins of :class:`same` on PostgreSQL, by SQL type.
_SENTINEL = {"FLOAT": "-1.7976931348623157e308", "INTEGER": "-2147483648"}
_TEXT_SENTINEL = "'\x01 none'"


@compiles(same, "sqlite")
def _same_sqlite(element: same, compiler: Any, **kw: Any) -> str:
    left, right = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{left} IS {right}"


@compiles(same)
def _same_default(element: same, compiler: Any, **kw: Any) -> str:
    left_clause = next(iter(element.clauses))
    sql_type = compiler.dialect.type_compiler_instance.process(left_clause.type)
    kind = "FLOAT" if "FLOAT" in sql_type or "DOUBLE" in sql_type else sql_type.split("(")[0]
    sentinel = _SENTINEL.get(kind, _TEXT_SENTINEL)
    left, right = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"COALESCE({left}, {sentinel}) = COALESCE({right}, {sentinel})"


class bound(FunctionElement[Any]):
    """A target value bound as a parameter, typed like the ``frames`` column (``CAST`` on PostgreSQL,
    which cannot infer the type of a NULL parameter; SQLite needs none and would change a date's)."""

    inherit_cache = True

    def __init__(self, key: str, value: Any) -> None:
        column_type = Frame.__table__.c[key].type
        super().__init__(value if isinstance(value, BindParameter) else literal(value, column_type))
        self.type = column_type


@compiles(bound, "sqlite")
def _bound_sqlite(element: bound, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(bound)
def _bound_default(element: bound, compiler: Any, **kw: Any) -> str:
    sql_type = compiler.dialect.type_compiler_instance.process(element.type)
    return f"CAST({compiler.process(element.clauses, **kw)} AS {sql_type})"


def select_master(
    session: Session,
    kind: str,
    target: Mapping[str, Any],
    rules: MatchRules = DEFAULT_RULES,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> Master | None:
    """The master of ``kind`` that best serves one target (see :func:`match_terms`).

    Parameters
    ----------
    session : Session
        An open catalog session.
    kind : str
        ``bias``, ``dark`` or ``flat``.
    target : mapping
        ``frames``-like values of :data:`TARGET_KEYS` (missing ones are NULL).
    rules, exclude_with_bias, only_with_bias
        As :func:`match_terms`.

    Returns
    -------
    Master or None
        The best candidate, or ``None`` when nothing matches.
    """
    query = _select_master_statement(kind, rules, exclude_with_bias, only_with_bias)
    return session.scalars(query, {f"target_{key}": target.get(key) for key in TARGET_KEYS}).first()


@lru_cache(maxsize=128)
def _select_master_statement(
    kind: str, rules: MatchRules, exclude_with_bias: bool, only_with_bias: bool
) -> Select[Any]:
    """:func:`select_master_query` with the target as named parameters (``target_{key}``), built once."""
    values = {
        key: bound(key, bindparam(f"target_{key}", type_=Frame.__table__.c[key].type)) for key in TARGET_KEYS
    }
    conditions, order = match_terms(
        kind, values, rules, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias
    )
    return select(Master).where(*conditions).order_by(*order).limit(1)


def select_master_query(
    kind: str,
    target: Mapping[str, Any],
    rules: MatchRules = DEFAULT_RULES,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> Select[Any]:
    """The select of :func:`select_master`."""
    values = {key: bound(key, target.get(key)) for key in TARGET_KEYS}
    conditions, order = match_terms(
        kind, values, rules, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias
    )
    return select(Master).where(*conditions).order_by(*order).limit(1)


def best_masters(
    session: Session,
    kind: str,
    lights: Any,
    rules: MatchRules = DEFAULT_RULES,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> dict[int, int]:
    """The best master of ``kind`` for each of many lights, in one select.

    Parameters
    ----------
    session : Session
        An open catalog session.
    kind : str
        ``bias``, ``dark`` or ``flat``.
    lights : SQL condition
        Which ``frames`` rows to match (e.g. :func:`~ccdcal.catalog.queries.usable` ``("light")``).
    rules, exclude_with_bias, only_with_bias
        As :func:`match_terms`.

    Returns
    -------
    dict
        Frame id → master id, for the lights some master serves.
    """
    query = best_masters_query(
        kind, lights, rules, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias
    )
    return {frame_id: master_id for frame_id, master_id in session.execute(query)}  # noqa: C416


def best_masters_query(
    kind: str,
    lights: Any,
    rules: MatchRules = DEFAULT_RULES,
    *,
    exclude_with_bias: bool = False,
    only_with_bias: bool = False,
) -> Select[Any]:
    """The select of :func:`best_masters`: (frame id, master id) of each light's best master."""
    columns = {key: getattr(Frame, key) for key in TARGET_KEYS}
    conditions, order = match_terms(
        kind, columns, rules, exclude_with_bias=exclude_with_bias, only_with_bias=only_with_bias
    )
    ranked = (
        select(
            Frame.id.label("frame_id"),
            Master.id.label("master_id"),
            func.row_number().over(partition_by=Frame.id, order_by=order).label("rank"),
        )
        .join_from(Frame, Master, and_(*conditions))
        .where(lights)
        .subquery()
    )
    return select(ranked.c.frame_id, ranked.c.master_id).where(ranked.c.rank == 1)
