"""Commands on the catalog itself: ``ingest``, ``status``, ``db upgrade``, ``db current``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccdcal import limits
from ccdcal.cli.base import (
    AsOfOption,
    app,
    as_of_time,
    db_app,
    err,
    key_text,
    out,
    print_json,
    print_lines,
    print_table,
    progress_bar,
    state_of,
)
from ccdcal.errors import NoCatalogError
from ccdcal.runtime.words import counted


@app.command(
    epilog="""
    ccdcal ingest raw/                          # every FITS file under raw/
    ccdcal ingest --imagetyp flat raw/skyflats  # flats saved as Light Frame
    ccdcal ingest raw/ --type-from-name 'bias_*=bias' --json
    """
)
def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Files and folders to catalogue (recursively).")
    ],
    imagetyp: Annotated[
        str | None,
        typer.Option(
            "--imagetyp",
            metavar="KIND",
            help="Force this type (bias, dark, flat, light) on every file under PATH.",
            case_sensitive=False,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help="Processes reading headers (default: automatic; 1 reads in this process; "
            f"{limits.JOBS.text}).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="Read on a Dask cluster: tcp://HOST:8786, or local:N to start N local workers.",
        ),
    ] = None,
    type_from_name: Annotated[
        list[str] | None,
        typer.Option(
            "--type-from-name",
            metavar="PATTERN=KIND",
            help="Force KIND on files whose name matches PATTERN (wildcards, any case), e.g. 'flats*=flat'; "
            "repeatable, the first matching rule wins.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Catalogue raw FITS frames, incrementally.

    Every header card, the normalised keys and the sha256 of each file go into the catalog (made when
    absent); files unchanged since the last ingest are not read again.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.ingestion.core import ingest as ingest_paths
    from ccdcal.ingestion.scan import require_fits

    state = state_of(ctx)
    try:
        opened = state.catalog()
    except NoCatalogError:  # made only for frames to catalogue: paths without a FITS file leave none
        require_fits(list(paths))
        opened = state.catalog(create=True)
    with opened as catalog, progress_bar(state, "Reading headers") as progress:
        summary = ingest_paths(
            catalog,
            paths,
            imagetyp=imagetyp.lower() if imagetyp else None,
            jobs=jobs,
            scheduler=scheduler,
            progress=progress,
            type_rules=type_from_name or (),
        )
    if as_json:
        print_json({"catalog": catalog.name, "run": summary.run_id, **summary.as_dict()})
    elif not state.quiet:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.by_type.items())) or "none"
        skipped = f", {len(summary.skipped)} skipped (written by ccdcal)" if summary.skipped else ""
        out.print(
            f"Catalog {catalog.name} (run {summary.run_id}): {summary.new} new, {summary.changed} changed, "
            f"{summary.unchanged} unchanged, {summary.missing} missing, {len(summary.rejected)} rejected"
            + (f", {len(summary.unreadable)} not read" if summary.unreadable else "")
            + skipped,
            markup=False,
        )
        out.print(f"Frames under these paths: {kinds}", markup=False)
        if summary.forced:
            how = f"to {imagetyp}" if imagetyp else "by --type-from-name"
            out.print(f"Type forced {how} on {counted(summary.forced, 'frame')}", markup=False)
        if summary.unclassified:
            out.print(
                f"Unclassified ({len(summary.unclassified)}; no type in header or folder name — "
                "use --imagetyp):",
                markup=False,
            )
            print_lines(out, (f"  {path}" for path in summary.unclassified))
        if summary.skipped:
            out.print(f"Skipped ({len(summary.skipped)}; files ccdcal wrote, not raw frames):", markup=False)
            print_lines(out, (f"  {path}: {note}" for path, note in summary.skipped))
    if not as_json:
        print_lines(err, summary.problem_lines())
    raise typer.Exit(summary.exit_code)


@app.command(
    epilog="""
    ccdcal status                      # frames, groups and the work left to do
    ccdcal status -v                   # also the frames set aside, and why
    ccdcal status --json > status.json
    """
)
def status(
    ctx: typer.Context,
    as_of: AsOfOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show what is catalogued and what is left to do.

    Frames by type and group; unclassified, rejected, missing and bad files; with -v the frame QA (the
    calibration frames measured, and those set aside with the rule and reason); then the pending work: the
    masters to build and the lights to calibrate, each with the reason.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.status import catalog_status, frame_qa_lines, pending_lines

    state = state_of(ctx)
    with state.catalog(as_of=as_of_time(as_of)) as catalog:
        report = catalog_status(catalog, frame_qa=state.verbosity > 0)
    if as_json:
        print_json(report)
        return
    if state.quiet:
        return
    totals = report["frames"]
    print_lines(
        out,
        [
            f"Catalog {report['catalog']}",
            *(
                f"  {name}: {', '.join(f'{k} {n}' for k, n in sorted(totals[name].items()))}"
                for name in sorted(totals)
            ),
        ],
    )
    columns = ("type", "instrument", "bin", "gain", "offset", "mode", "size", "temp", "exptime", "filter")
    rows = [
        [
            kind,
            key_text(group["instrument"]),
            f"{key_text(group['xbinning'])}x{key_text(group['ybinning'])}",
            key_text(group["gain"]),
            key_text(group["offset"]),
            key_text(group["readout_mode"]),
            f"{key_text(group['naxis1'])}x{key_text(group['naxis2'])}",
            key_text(group["temp_key"]),
            key_text(group["exptime"]) if "exptime" in group else "",
            key_text(group["filter"]) if "filter" in group else "",
            str(group["n"]),
        ]
        for kind, groups in report["groups"].items()
        for group in groups
    ]
    if rows:
        print_table(
            out, [[*columns, "frames"], *rows], title="Groups of usable frames", right=(len(columns),)
        )
    lines = []
    for title, key in (
        ("Unclassified (use ingest --imagetyp)", "unclassified"),
        ("Missing", "missing"),
    ):
        if report[key]:
            lines += [f"{title} ({len(report[key])}):", *(f"  {path}" for path in report[key])]
    for title, key in (("Rejected", "rejected"), ("Marked bad", "bad")):
        if report[key]:
            lines += [
                f"{title} ({len(report[key])}):",
                *(f"  {i['path']}: {i['reason']}" for i in report[key]),
            ]
    if "frame_qa" in report:
        lines += frame_qa_lines(report["frame_qa"])
    print_lines(out, [*lines, *pending_lines(report["pending"])])


@db_app.command(
    "upgrade",
    epilog="""
    ccdcal db upgrade
    ccdcal --db postgresql+psycopg://ccdcal@dbhost/observatory db upgrade
    """,
)
def db_upgrade(ctx: typer.Context) -> None:
    """Upgrade the catalog's schema to this ccdcal's revision (also done on every open)."""
    # Imported here to keep start-up fast (as in every command).
    from ccdcal.catalog.db import SCHEMA_HEAD

    state = state_of(ctx)
    with state.catalog(create=True) as catalog:
        before = catalog.revision_on_open
        if before != SCHEMA_HEAD:
            catalog.require_writable()
            with catalog.run("db upgrade", {"from": before, "to": SCHEMA_HEAD}):
                pass
    if not state.quiet:
        if before == SCHEMA_HEAD:
            out.print(f"{catalog.name} is at revision {SCHEMA_HEAD} (up to date)", markup=False)
        else:
            out.print(f"{catalog.name} upgraded from {before or 'empty'} to {SCHEMA_HEAD}", markup=False)


@db_app.command(
    "current",
    epilog="""
    ccdcal db current
    ccdcal --db night.db db current
    """,
)
def db_current(ctx: typer.Context) -> None:
    """Show the catalog's schema revision."""
    # Imported here to keep start-up fast (as in every command).
    from ccdcal.catalog.db import SCHEMA_HEAD

    state = state_of(ctx)
    with state.catalog(upgrade=False) as catalog:
        revision = catalog.current_revision()
    note = "(head)" if revision == SCHEMA_HEAD else f"(head is {SCHEMA_HEAD}; run `ccdcal db upgrade`)"
    if not state.quiet:
        out.print(f"{catalog.name}: revision {revision or 'none'} {note}", markup=False)
