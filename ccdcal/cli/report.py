"""Commands that show results: ``report`` (an HTML quality report) and ``preview`` (a zscale PNG of a
frame)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccdcal import limits
from ccdcal.cli.base import app, err, out, print_json, progress_bar, state_of
from ccdcal.runtime.words import counted


@app.command(
    epilog="""
    ccdcal report -o night.html              # the catalog as it is now
    ccdcal report --run 4                    # what run 4 did
    ccdcal report --since 2026-03-14 -o week.html
    """
)
def report(
    ctx: typer.Context,
    run_id: Annotated[
        int | None,
        typer.Option("--run", metavar="ID", help=f"Report on this run only ({limits.RUN_ID.text})."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Report on what was done since this date or time (ISO 8601: 2026-03-14, "
            "2026-03-14T18:00; UTC unless an offset is given).",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", metavar="FILE", help="The HTML file to write.")
    ] = Path("report.html"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write an HTML quality report.

    Master previews and statistics, bias level and dark current over time, lights before and after,
    problems with their reasons, runs with their parameters and versions: one file, images inline. Without
    --run or --since, the catalog as it is now.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.report.build import build_report
    from ccdcal.report.data import parse_since

    state = state_of(ctx)
    when = parse_since(since) if since is not None else None
    with state.catalog() as catalog, progress_bar(state, "Rendering previews") as progress:
        summary = build_report(catalog, output, run_id=run_id, since=when, progress=progress)
    if as_json:
        print_json(summary.as_dict())
    elif not state.quiet:
        out.print(
            f"Report {summary.path} ({summary.scope}): {counted(summary.masters, 'master')}, "
            f"{counted(summary.lights, 'calibrated light')}, {counted(summary.problems, 'problem')}, "
            f"{counted(summary.images, 'image')}, "
            f"{summary.size / 1024:.0f} KiB",
            markup=False,
        )
    for _path, reason in summary.unavailable if not (as_json or state.quiet) else []:
        err.print(f"Warning: no preview: {reason}", markup=False)


@app.command(
    epilog="""
    ccdcal preview raw/LIGHT/Light_001.fits       # writes ./Light_001.png
    ccdcal preview calibrated/Light_001_cal.fits -o light.png --max-size 512
    """
)
def preview(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A FITS frame (.fits .fit .fts, .gz, .fz).")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="The PNG to write. Default: {stem}.png in the current folder.",
        ),
    ] = None,
    hdu: Annotated[
        int | None,
        typer.Option(
            "--hdu", metavar="N", help=f"HDU to show (default: the first image; {limits.HDU.text})."
        ),
    ] = None,
    max_size: Annotated[
        int,
        typer.Option(
            "--max-size",
            metavar="PIXELS",
            help=f"Longest side in pixels (averaged down); 0 keeps every pixel ({limits.MAX_SIZE.text}).",
        ),
    ] = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Write a zscale PNG of a FITS frame.

    Row 0 at the bottom, as DS9 shows it; raw frames, masters and calibrated lights alike.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.report.previews import preview_file

    state = state_of(ctx)
    result = preview_file(file, output, hdu=hdu, max_size=max_size)
    if as_json:
        print_json(result.as_dict())
    elif not state.quiet:
        shown = result.preview
        out.print(
            f"Preview {result.output}: {shown.width}x{shown.height} px of {result.source} HDU {shown.hdu} "
            f"({shown.shape[1]}x{shown.shape[0]}), zscale {shown.limits[0]:.6g} to {shown.limits[1]:.6g}",
            markup=False,
        )
