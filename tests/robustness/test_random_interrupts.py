"""Ctrl-C and SIGTERM at random moments of ``ingest``, ``masters``, ``process`` and ``run``: each ends
within seconds with its one-line message (130 and 143), leaves no run ``running`` and no claim held, and
the same command run again leaves what an uninterrupted run leaves (:mod:`tests.robustness.interrupts`).

A few dozen tries run with the suite, drawn from :data:`SEED` (``CCDCAL_INTERRUPT_SEED`` draws others);
a failure names its try, which the same seed draws again (its moment is a fraction of the command's
duration on this machine). Hundreds run with ``make stress`` (:func:`test_stress`, marker ``stress``,
deselected otherwise): ``STRESS_TRIES`` tries (300 by default) of ``STRESS_SEED``, on SQLite and
PostgreSQL, with a table of the outcomes and exit times at the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from tests.conftest import _pg_admin_url
from tests.robustness.interrupts import (
    BACKENDS,
    COMMANDS,
    LATEST,
    LIGHTS,
    Bench,
    Case,
    PgServer,
    attempt,
    cases,
    summary,
)

SEED = int(os.environ.get("CCDCAL_INTERRUPT_SEED", "17"))
#: The tries of the suite: on SQLite every command, signal and target, some twice; a few on PostgreSQL.
SQLITE_TRIES = cases(SEED, 20, ("sqlite",))
POSTGRESQL_TRIES = cases(SEED + 1, 8, ("postgresql",))


def postgresql_reachable() -> str | None:
    """Why PostgreSQL tries cannot run (``None`` when they can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (the postgres extra) is not installed"
    server = PgServer(_pg_admin_url())
    try:
        server.drop(server.create())
    except OperationalError as exc:
        return f"no PostgreSQL server reachable at {_pg_admin_url()}: {exc.orig}"
    finally:
        server.close()
    return None


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    opened = Bench.open(tmp_path_factory.mktemp("random-interrupts"), seed=SEED, in_process=True)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def pg_bench(bench: Bench) -> Bench:
    reason = postgresql_reachable()
    if reason is not None:
        pytest.skip(reason)
    if bench.pg is None:
        bench.use_postgresql(_pg_admin_url())
    return bench


def reproduce(case: Case) -> str:
    return f"(again: CCDCAL_INTERRUPT_SEED={case.seed} pytest {__file__} -k '{case.name}')"


@pytest.mark.parametrize("case", SQLITE_TRIES, ids=lambda c: c.name)
def test_a_random_interrupt_stops_cleanly_and_the_next_run_resumes(bench: Bench, case: Case) -> None:
    outcome = attempt(case, bench)
    assert outcome.ok, f"{outcome.report()}\n{reproduce(case)}"


@pytest.mark.postgres
@pytest.mark.parametrize("case", POSTGRESQL_TRIES, ids=lambda c: c.name)
def test_a_random_interrupt_on_postgresql(pg_bench: Bench, case: Case) -> None:
    outcome = attempt(case, pg_bench)
    assert outcome.ok, f"{outcome.report()}\n{reproduce(case)}"


def listed(name: str, default: Sequence[str]) -> tuple[str, ...]:
    """The comma-separated values of the environment variable ``name`` (``default`` when unset)."""
    value = os.environ.get(name, "")
    return tuple(v.strip() for v in value.split(",") if v.strip()) or tuple(default)


@pytest.mark.slow
@pytest.mark.stress
def test_stress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``STRESS_TRIES`` random tries (300) of ``STRESS_SEED`` (1) on SQLite and PostgreSQL (when reachable);
    prints a line per try, then the table (also written to the file ``STRESS_REPORT`` when given).

    To aim at one part: ``STRESS_COMMANDS`` (ingest,masters,process,run), ``STRESS_BACKENDS``
    (sqlite,postgresql), ``STRESS_SIGNALS`` (SIGINT,SIGTERM), ``STRESS_MOMENTS`` (the range of the
    moments, as fractions of the command's duration: 0-1.1) and ``STRESS_LIGHTS`` (the night's lights: 8).
    """
    count = int(os.environ.get("STRESS_TRIES", "300"))
    seed = int(os.environ.get("STRESS_SEED", "1"))
    commands = listed("STRESS_COMMANDS", COMMANDS)
    signals = [signal.Signals[name] for name in listed("STRESS_SIGNALS", ("SIGINT", "SIGTERM"))]
    low, high = (float(v) for v in os.environ.get("STRESS_MOMENTS", f"0-{LATEST}").split("-"))
    backends = listed("STRESS_BACKENDS", BACKENDS)
    reason = postgresql_reachable() if "postgresql" in backends else None
    if reason is not None:
        backends = tuple(b for b in backends if b != "postgresql")
    stress = Bench.open(
        tmp_path,
        seed=seed,
        commands=commands,
        lights=int(os.environ.get("STRESS_LIGHTS", LIGHTS)),
        in_process=True,
    )
    try:
        if "postgresql" in backends:
            stress.use_postgresql(_pg_admin_url())
        tries = cases(seed, count, backends, commands, signals, (low, high))
        outcomes = []
        begun = time.monotonic()
        with capsys.disabled():
            print(f"\nstress: {count} tries of seed {seed} on {', '.join(backends)}", flush=True)
            if reason is not None:
                print(f"stress: PostgreSQL left out: {reason}", flush=True)
            print(
                "stress: uninterrupted "
                + ", ".join(f"{c} {r.seconds:.2f} s" for c, r in stress.references.items()),
                flush=True,
            )
            for case in tries:
                outcome = attempt(case, stress)
                outcomes.append(outcome)
                took = f"{outcome.seconds:.3f} s" if outcome.seconds is not None else "-"
                mark = "ok" if outcome.ok else "FAILED: " + "; ".join(outcome.failures)[:200]
                done = outcome.left.short if outcome.left else "?"
                print(
                    f"{case.number + 1:4d}/{count} {case.name}: {outcome.kind} {took} [{done}] {mark}",
                    flush=True,
                )
            table = summary(outcomes, time.monotonic() - begun)
            print(table, flush=True)
        report = os.environ.get("STRESS_REPORT")
        if report:
            Path(report).write_text(table + "\n")
    finally:
        stress.close()
    failed = [o for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} tries failed (seed {seed}); see the table above"
