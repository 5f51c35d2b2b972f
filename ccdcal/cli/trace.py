"""Commands that trace what made what: ``provenance``, ``audit``, ``reproduce``, ``impact``, ``mark-bad``,
``mark-good``, ``certify``, ``decertify``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ccdcal import limits
from ccdcal.cli.base import (
    TARGET_HELP,
    AsOfOption,
    State,
    app,
    as_of_time,
    err,
    out,
    print_json,
    print_lines,
    progress_bar,
    state_of,
    wide_console,
)
from ccdcal.errors import UsageError
from ccdcal.runtime.words import counted

if TYPE_CHECKING:  # types only: a command loads its library when it runs
    from ccdcal.catalog.db import Catalog
    from ccdcal.trace.impact import MarkResult
    from ccdcal.trace.provenance import Node
    from ccdcal.trace.validity import ValidityResult


@app.command(
    epilog="""
    ccdcal provenance calibrated/Light_001_cal.fits
    ccdcal provenance master:3 --json
    ccdcal provenance --from-header calibrated/Light_001_cal.fits --search .
    """
)
def provenance(
    ctx: typer.Context,
    target: Annotated[
        str | None, typer.Argument(metavar="FILE|ID", help=TARGET_HELP, show_default=False)
    ] = None,
    from_header: Annotated[
        Path | None,
        typer.Option(
            "--from-header",
            metavar="FILE",
            help="Read the tree from this FITS file's header alone (no catalog).",
        ),
    ] = None,
    search: Annotated[
        list[Path] | None,
        typer.Option(
            "--search",
            metavar="DIR",
            help="With --from-header: look for the files named under this folder too.",
        ),
    ] = None,
    as_of: AsOfOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Show the tree of what made a file, each file checked against its sha256.

    Output → masters (ΔT, Δt, scale, pinned) → calibrator masters → raw frames, each with its path, its
    sha256 and whether the file on disk still matches (exit 1 when one does not).
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from rich.text import Text
    from rich.tree import Tree

    from ccdcal.trace.headertrace import trace_header
    from ccdcal.trace.provenance import files_line, label
    from ccdcal.trace.provenance import provenance as provenance_tree

    state = state_of(ctx)
    if (target is None) == (from_header is None):
        raise UsageError("give a FILE or ID, or --from-header FILE (not both)")
    if search and from_header is None:
        raise UsageError("--search is used with --from-header only")
    when = as_of_time(as_of)
    if when is not None and from_header is not None:
        raise UsageError("--as-of reads the catalog: it cannot be used with --from-header")
    if from_header is not None:
        result = trace_header(from_header, search or [])
    else:
        assert target is not None
        with state.catalog(as_of=when) as catalog:
            result = provenance_tree(catalog, target)
    if as_json:
        print_json(result.as_dict())
    elif not state.quiet:
        seen: set[str] = set()

        def grow(branch: Tree, node: Node) -> None:
            key = node.ref or node.path or node.name
            if node.node == "master" and node.children and key in seen:
                branch.add(Text(f"({counted(len(node.children), 'file')} listed above)", style="dim"))
                return
            seen.add(key)
            for child in node.children:
                grow(branch.add(Text.assemble(*label(child))), child)

        tree = Tree(Text.assemble(*label(result.tree)), guide_style="dim")
        grow(tree, result.tree)
        wide_console().print(tree)
        out.print(files_line(result), markup=False)
    raise typer.Exit(result.exit_code)


@app.command(
    epilog="""
    ccdcal audit                             # exit status 1 when a file drifted
    ccdcal audit --search /mnt/new-disk      # where did the missing files go?
    ccdcal audit --fix-missing /mnt/new-disk
    """
)
def audit(
    ctx: typer.Context,
    search: Annotated[
        list[Path] | None,
        typer.Option(
            "--search",
            metavar="DIR",
            help="Look for missing files under this folder (by sha256); repeatable.",
        ),
    ] = None,
    fix_missing: Annotated[
        list[Path] | None,
        typer.Option(
            "--fix-missing",
            metavar="DIR",
            help="Look for missing files under this folder and re-point them; repeatable.",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help=f"Threads hashing files (default: automatic; {limits.JOBS.text}).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Hash every recorded file again; report the missing, changed and moved ones.

    Every raw frame, master and current calibrated file, hashed in parallel; exit 1 when anything drifted.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.trace.audit import audit as audit_files

    state = state_of(ctx)
    folders = [*(search or []), *(fix_missing or [])]
    with state.catalog() as catalog, progress_bar(state, "Auditing") as progress:
        report = audit_files(
            catalog,
            search=folders,
            fix=bool(fix_missing),
            jobs=jobs,
            progress=lambda _label, done, total: progress(done, total),
        )
    if as_json:
        print_json(report.as_dict())
    else:
        lines = report.lines()
        if not state.quiet:
            print_lines(out, lines[:1])
        print_lines(err, lines[1:])
    raise typer.Exit(report.exit_code)


@app.command(
    epilog="""
    ccdcal reproduce calibrated/Light_001_cal.fits
    ccdcal reproduce master:3 --deep
    ccdcal reproduce calibration:12 --json
    """
)
def reproduce(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="FILE|ID",
            help="A calibrated file or a master (its path), or calibration:N, master:N.",
            show_default=False,
        ),
    ],
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Also make every master of its lineage again from its raw frames."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Make a calibrated file or a master again from what the catalog recorded, and compare.

    The raw frames and masters it was made from (checked by sha256) and every step and parameter
    recorded; made in a temporary folder and compared data unit by data unit: exit 0 when reproduced
    bit for bit, 1 with what differs. Only reads the catalog.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.reproduction.core import reproduce as reproduce_target

    state = state_of(ctx)
    with state.catalog() as catalog, progress_bar(state, "Reproducing") as progress:
        result = reproduce_target(
            catalog, target, deep=deep, progress=lambda _label, done, total: progress(done, total)
        )
    if as_json:
        print_json(result.as_dict())
    elif result.exit_code:  # what differs, and why: listed with -q too
        print_lines(err, result.lines())
    elif not state.quiet:
        print_lines(out, result.lines())
    raise typer.Exit(result.exit_code)


@app.command(
    epilog="""
    ccdcal impact raw/BIAS/Bias_002.fits
    ccdcal impact master:1 --json
    """
)
def impact(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="FILE|ID", help=TARGET_HELP, show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List every master and calibrated file made from a raw frame or a master.

    At any depth: the masters combined from it, the masters calibrated with those, and every light
    calibrated with any of them.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.trace.impact import impact as impact_of

    state = state_of(ctx)
    with state.catalog() as catalog:
        result = impact_of(catalog, target)
    if as_json:
        print_json(result.as_dict())
        return
    if state.quiet:
        return
    lines = [result.headline()]
    if result.masters:
        lines.append(f"Masters ({len(result.masters)}):")
        lines += [
            f"  {m.status + (' BAD' if m.is_bad else ''):<14} master:{m.id} {m.path}" for m in result.masters
        ]
    if result.calibrations:
        lines.append(f"Calibrated files ({len(result.calibrations)}):")
        lines += [
            f"  {c.status:<14} calibration:{c.id} {c.path} (from {c.light_path})" for c in result.calibrations
        ]
    print_lines(out, lines)


@app.command(
    "mark-bad",
    epilog="""
    ccdcal mark-bad raw/BIAS/Bias_002.fits --reason "hot column"
    ccdcal mark-bad master:3 --reason "satellite trail"
    """,
)
def mark_bad(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="FILE|ID", help=TARGET_HELP, show_default=False)],
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why it is bad (kept in the catalog).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Keep a raw frame or a master out of every future master and calibration.

    The next `ccdcal process` rebuilds the masters made with it and calibrates their lights again.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.trace.impact import mark_bad as mark

    _marked(state_of(ctx), lambda catalog: mark(catalog, target, reason), as_json)


@app.command(
    "mark-good",
    epilog="""
    ccdcal mark-good raw/BIAS/Bias_002.fits
    ccdcal mark-good master:3 --reason "the trail was in one frame only"
    """,
)
def mark_good(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="FILE|ID", help=TARGET_HELP, show_default=False)],
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why (recorded with the run).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Clear the bad mark of a raw frame or a master.

    The next `ccdcal process` may use it again.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.trace.impact import mark_good as mark

    _marked(state_of(ctx), lambda catalog: mark(catalog, target, reason), as_json)


def _marked(state: State, marked: Callable[[Catalog], MarkResult], as_json: bool) -> None:
    """Mark on the catalog (``marked``: :func:`ccdcal.trace.impact.mark_bad` or ``mark_good`` of the
    target) and print the result."""
    with state.catalog() as catalog:
        result = marked(catalog)
    if as_json:
        print_json(result.as_dict())
    elif not state.quiet:
        out.print(result.headline(), markup=False)


MasterArgument = Annotated[
    str, typer.Argument(metavar="MASTER", help="A master: its path, or master:N.", show_default=False)
]
FromOption = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="DATETIME",
        help="The first DATE-OBS of the span: an ISO date or date-time, UTC unless an offset is given. "
        "Default: open (no start).",
        show_default=False,
    ),
]
ToOption = Annotated[
    str | None,
    typer.Option(
        "--to",
        metavar="DATETIME",
        help="The last DATE-OBS of the span (inclusive): an ISO date or date-time, UTC unless an offset is "
        "given. Default: open (no end).",
        show_default=False,
    ),
]


@app.command(
    epilog="""
    ccdcal certify master:3 --from 2026-03-01 --to 2026-03-31T23:59:59
    ccdcal certify masters/master_flat_Ha.fits --from 2026-03-14T18:00+01:00
    ccdcal certify master:3
    """
)
def certify(
    ctx: typer.Context,
    target: MasterArgument,
    start: FromOption = None,
    end: ToOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Set the dates of the lights a master may serve (its validity range, inclusive).

    Lights whose DATE-OBS is outside it get another master; without --from and --to the master is valid
    at any time again. The change is recorded with its run.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.trace.validity import certify as certify_master

    begin, finish = _span(start, end)
    _validity(state_of(ctx), lambda catalog: certify_master(catalog, target, begin, finish), as_json)


@app.command(
    epilog="""
    ccdcal decertify master:3 --from 2026-03-20
    ccdcal decertify master:3 --to 2026-03-05T06:00
    """
)
def decertify(
    ctx: typer.Context,
    target: MasterArgument,
    start: FromOption = None,
    end: ToOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Take a span of dates out of a master's validity range.

    The next `ccdcal process` calibrates again the lights of that span it served, with another master
    (or lists them with the reason). The span must reach the start or the end of the range.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.trace.validity import decertify as decertify_master

    begin, finish = _span(start, end)
    _validity(state_of(ctx), lambda catalog: decertify_master(catalog, target, begin, finish), as_json)


def _span(start: str | None, end: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``--from`` and ``--to`` as naive UTC."""
    return (
        None if start is None else limits.parse_utc(start, "--from"),
        None if end is None else limits.parse_utc(end, "--to"),
    )


def _validity(state: State, changed: Callable[[Catalog], ValidityResult], as_json: bool) -> None:
    """Change a master's validity range and print the result."""
    with state.catalog() as catalog:
        result = changed(catalog)
    if as_json:
        print_json(result.as_dict())
    elif not state.quiet:
        out.print(result.headline(), markup=False)
        print_lines(out, (f"  calibration:{c['id']} (from {c['light_path']})" for c in result.affected))
