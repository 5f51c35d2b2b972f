"""The ``ccdcal`` command line: parse options, call the library, print.

No work is done here. This module is also the one place where ccdcal's errors become user messages and
exit statuses (see :class:`CcdcalGroup`): 0 done, 1 some frames rejected/unmatched/failed, 2 usage or
configuration error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from ccdcal._version import __version__
from ccdcal.catalog.db import SCHEMA_HEAD, Catalog
from ccdcal.errors import CcdcalError
from ccdcal.ingest.core import ingest as ingest_paths
from ccdcal.status import catalog_status, pending_lines

# The numerical stack (numpy, astropy) is imported by the commands that need it, so that catalog
# commands and --help start quickly.

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


class CcdcalGroup(TyperGroup):
    """The command group; turns library errors and Ctrl-C into one-line messages and exit statuses."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CcdcalError as exc:
            err.print(f"Error: {exc}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted: what was finished is kept; run the same command again to resume.")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=CcdcalGroup,
    name="ccdcal",
    help="Catalog raw CCD/CMOS frames, build master calibrations and calibrate science frames, "
    "with provenance in a database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(cls=CcdcalGroup, help="Catalog schema: show or upgrade its revision.")
app.add_typer(db_app, name="db")


@dataclass
class State:
    """Options given before the command."""

    db: str | None = None
    verbosity: int = 0

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    def catalog(self, *, upgrade: bool = True) -> Catalog:
        return Catalog(self.db, upgrade=upgrade)


def _version(value: bool) -> None:
    if value:
        out.print(f"ccdcal {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="CCDCAL_DB",
            help="Catalog: a path (SQLite) or a SQLAlchemy URL. Default ./ccdcal.db.",
            show_envvar=True,
        ),
    ] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="Say more.")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, help="Show the version and exit."),
    ] = False,
) -> None:
    """Catalog raw frames, build masters and calibrate lights, with provenance."""
    state = State(db=db, verbosity=-1 if quiet else verbose)
    logging.basicConfig(
        level=logging.DEBUG if verbose > 0 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = state


def _state(ctx: typer.Context) -> State:
    state = ctx.find_object(State)
    return state if state is not None else State()


@contextmanager
def _progress(state: State, label: str) -> Iterator[Any]:
    """A Rich progress bar on a terminal (stderr); a silent callback in pipes or with -q."""
    show = err.is_terminal and not state.quiet
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str, sort_keys=False), indent=2)


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to catalogue (recursively).")],
    imagetyp: Annotated[
        str | None,
        typer.Option(
            "--imagetyp",
            help="Force this type (bias, dark, flat, light) on every file under PATH.",
            case_sensitive=False,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Processes reading headers (default: automatic; 1 reads in this process).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Catalogue raw FITS frames: every header card, normalised keys, hashes. Incremental."""
    state = _state(ctx)
    with state.catalog() as catalog, _progress(state, "Reading headers") as progress:
        summary = ingest_paths(
            catalog,
            paths,
            imagetyp=imagetyp.lower() if imagetyp else None,
            jobs=jobs,
            progress=progress,
        )
    if as_json:
        _print_json({"catalog": catalog.name, "run": summary.run_id, **summary.as_dict()})
    elif not state.quiet:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.by_type.items())) or "none"
        out.print(
            f"Catalog {catalog.name} (run {summary.run_id}): {summary.new} new, {summary.changed} changed, "
            f"{summary.unchanged} unchanged, {summary.missing} missing, {len(summary.rejected)} rejected",
            markup=False,
        )
        out.print(f"Frames under these paths: {kinds}", markup=False)
        if summary.forced:
            out.print(f"Type forced to {imagetyp} on {summary.forced} frames", markup=False)
        if summary.unclassified:
            out.print(
                f"Unclassified ({len(summary.unclassified)}; no type in header or folder name — "
                "use --imagetyp):",
                markup=False,
            )
            for path in summary.unclassified:
                out.print(f"  {path}", markup=False)
    if summary.rejected and not as_json:
        err.print(f"Rejected ({len(summary.rejected)}):", markup=False)
        for path, reason in summary.rejected:
            err.print(f"  {path}: {reason}", markup=False)
    raise typer.Exit(summary.exit_code)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What is catalogued: frames by type and group, unclassified, rejected and missing files."""
    state = _state(ctx)
    with state.catalog() as catalog:
        report = catalog_status(catalog)
    if as_json:
        _print_json(report)
        return
    out.print(f"Catalog {report['catalog']}", markup=False)
    totals = report["frames"]
    for status_name in sorted(totals):
        parts = ", ".join(f"{k} {n}" for k, n in sorted(totals[status_name].items()))
        out.print(f"  {status_name}: {parts}", markup=False)
    table = Table(box=None, title="Groups of usable frames", title_justify="left", pad_edge=False)
    for column in (
        "type",
        "instrument",
        "bin",
        "gain",
        "offset",
        "mode",
        "size",
        "temp",
        "exptime",
        "filter",
    ):
        table.add_column(column)
    table.add_column("frames", justify="right")
    for kind, groups in report["groups"].items():
        for group in groups:
            table.add_row(
                kind,
                _text(group["instrument"]),
                f"{_text(group['xbinning'])}x{_text(group['ybinning'])}",
                _text(group["gain"]),
                _text(group["offset"]),
                _text(group["readout_mode"]),
                f"{_text(group['naxis1'])}x{_text(group['naxis2'])}",
                _text(group["temp_key"]),
                _text(group["exptime"]) if "exptime" in group else "",
                _text(group["filter"]) if "filter" in group else "",
                str(group["n"]),
            )
    if table.row_count:
        # In a pipe, lay the table out wide rather than wrapping it at 80 columns.
        wide = out if out.is_terminal else Console(file=out.file, width=200, highlight=False)
        wide.print(table)
    for title, key in (
        ("Unclassified (use ingest --imagetyp)", "unclassified"),
        ("Missing", "missing"),
    ):
        if report[key]:
            out.print(f"{title} ({len(report[key])}):", markup=False)
            for path in report[key]:
                out.print(f"  {path}", markup=False)
    for title, key in (("Rejected", "rejected"), ("Marked bad", "bad")):
        if report[key]:
            out.print(f"{title} ({len(report[key])}):", markup=False)
            for item in report[key]:
                out.print(f"  {item['path']}: {item['reason']}", markup=False)
    for line in pending_lines(report["pending"]):
        out.print(line, markup=False)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """``512M``, ``2G``, ``1500000`` → bytes (a usage error names the bad value)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and value[-1:] else ""
    try:
        number = float(value[:-1] if unit else value)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size such as 512M or 2G") from None
    if number <= 0:
        raise typer.BadParameter(f"{text!r} must be positive")
    return int(number * _SIZE_UNITS[unit])


@app.command()
def masters(
    ctx: typer.Context,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Build only this kind (bias, dark, flat); repeatable.")
    ] = None,
    masters_dir: Annotated[Path, typer.Option("--masters-dir", help="Folder for master files.")] = Path(
        "masters"
    ),
    min_frames: Annotated[int, typer.Option("--min-frames", help="Smallest group combined.")] = 3,
    mem_limit: Annotated[
        str, typer.Option("--mem-limit", help="Memory the combine may use, e.g. 512M or 2G.")
    ] = "2G",
    sigma: Annotated[float, typer.Option("--sigma", help="Clipping bounds in sigma (low and high).")] = 3.0,
    iterations: Annotated[int, typer.Option("--iterations", help="Sigma-clipping iterations.")] = 5,
    dispersion: Annotated[
        str, typer.Option("--dispersion", help="Clipping dispersion: mad_std (default) or std.")
    ] = "mad_std",
    no_bias: Annotated[
        bool, typer.Option("--no-bias", help="Darks keep the bias (used at their own exposure only).")
    ] = False,
    temp_tolerance: Annotated[
        float, typer.Option("--temp-tolerance", help="|ΔT| allowed between a master and its users (°C).")
    ] = 2.0,
    show: Annotated[bool, typer.Option("--list", help="List the masters instead of building.")] = False,
    all_versions: Annotated[bool, typer.Option("--all", help="With --list: superseded ones too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Build missing or stale master bias, dark and flat frames (sigma-clipped median, 5 iterations)."""
    from ccdcal.catalog.queries import MatchRules
    from ccdcal.masters import MasterOptions, build_masters, list_masters
    from ccdcal.steps.combine import ClipParams

    state = _state(ctx)
    if show:
        with state.catalog() as catalog:
            rows = list_masters(catalog, include_superseded=all_versions)
        if as_json:
            _print_json(rows)
            return
        table = Table(box=None, pad_edge=False)
        for column in ("id", "kind", "file", "status", "inputs", "median", "std", "rejected"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                str(row["id"]),
                row["kind"],
                Path(row["path"]).name,
                row["status"] + (" BAD" if row["is_bad"] else ""),
                str(row["n_inputs"]),
                f"{row['median']:.6g}" if row["median"] is not None else "NA",
                f"{row['std']:.4g}" if row["std"] is not None else "NA",
                f"{row['rejected_fraction']:.3%}" if row["rejected_fraction"] is not None else "NA",
            )
        wide = out if out.is_terminal else Console(file=out.file, width=200, highlight=False)
        wide.print(table)
        return
    options = MasterOptions(
        masters_dir=masters_dir,
        kinds=tuple(k.lower() for k in kind) if kind else MasterOptions().kinds,
        min_frames=min_frames,
        params=ClipParams(sigma_lower=sigma, sigma_upper=sigma, maxiters=iterations, stdfunc=dispersion),
        mem_limit=_size(mem_limit),
        no_bias=no_bias,
        rules=MatchRules(temp_tolerance=temp_tolerance),
    )
    with state.catalog() as catalog, _progress(state, "Building masters") as progress:
        summary = build_masters(catalog, options, progress=lambda _label, done, total: progress(done, total))
    if as_json:
        _print_json({"catalog": catalog.name, "run": summary.run_id, **summary.as_dict()})
    elif not state.quiet:
        out.print(
            f"Masters (run {summary.run_id}): {len(summary.of('built'))} built, "
            f"{len(summary.of('current'))} already current, {len(summary.of('skipped'))} skipped",
            markup=False,
        )
        for report in summary.of("built"):
            out.print(f"  built {report.path} ({report.n_inputs} frames)", markup=False)
    for report in summary.reports:
        for warning in report.warnings:
            err.print(f"Warning: {warning}", markup=False)
    if summary.of("skipped") and not as_json:
        err.print(f"Skipped ({len(summary.of('skipped'))}):", markup=False)
        for report in summary.of("skipped"):
            err.print(f"  {report.reason}", markup=False)
    raise typer.Exit(summary.exit_code)


def _text(value: Any) -> str:
    """A group key for display: ``NA`` when absent, whole numbers without ``.0``."""
    if value is None:
        return "NA"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@app.command()
def process(
    ctx: typer.Context,
    masters_dir: Annotated[Path, typer.Option("--masters-dir", help="Folder for master files.")] = Path(
        "masters"
    ),
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Folder for calibrated lights ({stem}_cal.fits).")
    ] = Path("calibrated"),
    dark_scale: Annotated[
        bool,
        typer.Option(
            "--dark-scale/--no-dark-scale", help="Scale the dark of nearest exposure to the light's."
        ),
    ] = False,
    no_bias: Annotated[
        bool, typer.Option("--no-bias", help="Darks keep the bias (used at their own exposure only).")
    ] = False,
    no_dark: Annotated[bool, typer.Option("--no-dark", help="Do not subtract darks.")] = False,
    no_flat: Annotated[bool, typer.Option("--no-flat", help="Do not divide by flats.")] = False,
    temp_tolerance: Annotated[
        float, typer.Option("--temp-tolerance", help="|ΔT| allowed between a master and a light (°C).")
    ] = 2.0,
    exptime_tolerance: Annotated[
        float, typer.Option("--exptime-tolerance", help="Relative exposure difference of an unscaled dark.")
    ] = 1e-6,
    bias: Annotated[Path | None, typer.Option("--bias", help="Use this master bias (pinned).")] = None,
    dark: Annotated[Path | None, typer.Option("--dark", help="Use this master dark (pinned).")] = None,
    flat: Annotated[Path | None, typer.Option("--flat", help="Use this master flat (pinned).")] = None,
    allow_missing: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-missing", help="Calibrate without this step when no master matches; repeatable."
        ),
    ] = None,
    flat_min: Annotated[
        float, typer.Option("--flat-min", help="Flat pixels below this are clamped and flagged in MASK.")
    ] = 0.01,
    min_frames: Annotated[int, typer.Option("--min-frames", help="Smallest group combined.")] = 3,
    mem_limit: Annotated[
        str, typer.Option("--mem-limit", help="Memory the combine may use, e.g. 512M or 2G.")
    ] = "2G",
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Processes calibrating frames (default: all cores)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing (no files, no rows).")
    ] = False,
    redo: Annotated[bool, typer.Option("--redo", help="Calibrate every light again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Build masters as needed, then calibrate every light (bias, dark, flat), with provenance rows."""
    from ccdcal import pipeline
    from ccdcal.catalog.queries import MatchRules

    state = _state(ctx)
    options = pipeline.ProcessOptions(
        masters_dir=masters_dir,
        output_dir=output_dir,
        rules=MatchRules(temp_tolerance, exptime_tolerance, dark_scale),
        no_bias=no_bias,
        no_dark=no_dark,
        no_flat=no_flat,
        allow_missing=tuple(k.lower() for k in allow_missing or ()),
        bias=bias,
        dark=dark,
        flat=flat,
        flat_min=flat_min,
        jobs=jobs,
        redo=redo,
        min_frames=min_frames,
        mem_limit=_size(mem_limit),
    )
    with state.catalog() as catalog:
        if dry_run:
            summary = pipeline.dry_run(catalog, options)
        else:
            with _progress(state, "Processing") as progress:
                summary = pipeline.process(
                    catalog, options, lambda _label, done, total: progress(done, total)
                )
    if as_json:
        _print_json(summary.as_dict())
    elif not state.quiet:
        for line in summary.plan_lines() if summary.dry_run else [summary.headline()]:
            out.print(line, markup=False)
        rows = summary.table_rows() if not (summary.dry_run or summary.nothing_done) else []
        if rows:
            table = Table(box=None, pad_edge=False)
            for column in rows[0]:
                table.add_column(column)
            for row in rows[1:]:
                table.add_row(*row)
            wide = out if out.is_terminal else Console(file=out.file, width=250, highlight=False)
            wide.print(table)
    for line in summary.problem_lines() if not as_json else []:
        err.print(line, markup=False)
    raise typer.Exit(summary.exit_code)


@app.command()
def simulate(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Folder to create (must be empty or absent).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same files.")] = 0,
) -> None:
    """Write a small, realistic raw night (BIAS/ DARK/ FLAT/ LIGHT/) for demos and tests."""
    from ccdcal.simulate import simulate_night

    state = _state(ctx)
    with _progress(state, "Simulating") as progress:
        night = simulate_night(directory, seed=seed, progress=progress)
    if not state.quiet:
        counts = ", ".join(f"{len(files)} {kind}" for kind, files in night.files.items())
        out.print(f"Simulated night in {night.root}: {counts}", markup=False)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Upgrade the catalog's schema to this ccdcal's revision (also done on every open)."""
    state = _state(ctx)
    with state.catalog() as catalog:
        before = catalog.revision_on_open
        if before != SCHEMA_HEAD:
            with catalog.run("db upgrade", {"from": before, "to": SCHEMA_HEAD}):
                pass
    if not state.quiet:
        if before == SCHEMA_HEAD:
            out.print(f"{catalog.name} is at revision {SCHEMA_HEAD} (up to date)", markup=False)
        else:
            out.print(f"{catalog.name} upgraded from {before or 'empty'} to {SCHEMA_HEAD}", markup=False)


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the catalog's schema revision."""
    state = _state(ctx)
    with state.catalog(upgrade=False) as catalog:
        revision = catalog.current_revision()
    note = "(head)" if revision == SCHEMA_HEAD else f"(head is {SCHEMA_HEAD}; run `ccdcal db upgrade`)"
    out.print(f"{catalog.name}: revision {revision or 'none'} {note}", markup=False)


def run() -> None:
    """Entry point for ``python -m ccdcal``."""
    app(prog_name="ccdcal")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())  # type: ignore[func-returns-value]
