"""The ``ccdcal`` command line: parse options, call the library, print.

No work is done here. This module is also the one place where ccdcal's errors become user messages and
exit statuses (see :class:`CcdcalGroup`): 0 done, 1 some frames rejected/unmatched/failed, 2 usage or
configuration error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from ccdcal._version import __version__
from ccdcal.catalog.db import SCHEMA_HEAD, Catalog
from ccdcal.errors import CcdcalError
from ccdcal.owners import keep_interrupts
from ccdcal.status import catalog_status, pending_lines

# The numerical stack (numpy, astropy) and each command's library modules are imported by the commands
# that need them, so that catalog commands and --help start quickly.

out = Console(soft_wrap=True, highlight=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


class CcdcalGroup(TyperGroup):
    """The command group; turns library errors and Ctrl-C into one-line messages and exit statuses."""

    def invoke(self, ctx: Any) -> Any:
        keep_interrupts()
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


def print_table(
    out: Console, rows: Sequence[Sequence[str]], *, title: str | None = None, right: Sequence[int] = ()
) -> None:
    """A table as aligned plain text (first row: the headings; ``right``: columns aligned right).

    Plain text rather than a Rich table: a catalog's status lists hundreds of groups, which Rich lays out
    in about a second; this takes milliseconds, and reads the same in a terminal, a file or a pipe.
    """
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for row in rows:
        cells = (
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
    out.print("\n".join(lines), markup=False, highlight=False)


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
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
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
    """Catalogue raw FITS frames: every header card, normalised keys, hashes. Incremental."""
    from ccdcal.ingest.core import ingest as ingest_paths

    state = _state(ctx)
    with state.catalog() as catalog, _progress(state, "Reading headers") as progress:
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
            how = f"to {imagetyp}" if imagetyp else "by --type-from-name"
            out.print(f"Type forced {how} on {summary.forced} frames", markup=False)
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
    columns = ("type", "instrument", "bin", "gain", "offset", "mode", "size", "temp", "exptime", "filter")
    rows = [
        [
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
        ]
        for kind, groups in report["groups"].items()
        for group in groups
    ]
    if rows:
        print_table(
            out, [[*columns, "frames"], *rows], title="Groups of usable frames", right=(len(columns),)
        )
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


#: Options of the optional reduction steps (ccdcal.reduction), shared by masters and process.
OverscanOption = Annotated[
    str,
    typer.Option(
        "--overscan",
        help="Overscan on every frame: auto (BIASSEC row-wise median and TRIMSEC/DATASEC trim when the "
        "header has them), off, median, or poly:N (a degree-N polynomial fit).",
    ),
]
UncertaintyOption = Annotated[
    bool,
    typer.Option(
        "--uncertainty", help="Write UNCERT extensions: masters the combine's, lights propagated (ccdproc)."
    ),
]


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
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Combine on a Dask cluster: tcp://HOST:8786, or local:N to start N local workers.",
        ),
    ] = None,
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
    overscan: OverscanOption = "auto",
    uncertainty: UncertaintyOption = False,
    bpm: Annotated[
        bool,
        typer.Option(
            "--bpm", help="Also build bad-pixel masks: hot pixels of master darks, ccdmask of master flats."
        ),
    ] = False,
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
        headings = ["id", "kind", "file", "status", "inputs", "median", "std", "rejected"]
        print_table(
            out,
            [
                headings,
                *(
                    [
                        str(row["id"]),
                        row["kind"],
                        Path(row["path"]).name,
                        row["status"] + (" BAD" if row["is_bad"] else ""),
                        str(row["n_inputs"]),
                        f"{row['median']:.6g}" if row["median"] is not None else "NA",
                        f"{row['std']:.4g}" if row["std"] is not None else "NA",
                        f"{row['rejected_fraction']:.3%}" if row["rejected_fraction"] is not None else "NA",
                    ]
                    for row in rows
                ),
            ],
        )
        return
    options = MasterOptions(
        masters_dir=masters_dir,
        kinds=tuple(k.lower() for k in kind) if kind else MasterOptions().kinds,
        min_frames=min_frames,
        params=ClipParams(sigma_lower=sigma, sigma_upper=sigma, maxiters=iterations, stdfunc=dispersion),
        mem_limit=_size(mem_limit),
        no_bias=no_bias,
        rules=MatchRules(temp_tolerance=temp_tolerance),
        overscan=overscan,
        uncertainty=uncertainty,
        bpm=bpm,
        scheduler=scheduler,
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
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Combine masters and calibrate on a Dask cluster: tcp://HOST:8786, or local:N to start N "
            "local workers.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing (no files, no rows).")
    ] = False,
    redo: Annotated[bool, typer.Option("--redo", help="Calibrate every light again.")] = False,
    overscan: OverscanOption = "auto",
    uncertainty: UncertaintyOption = False,
    gain: Annotated[
        float | None, typer.Option("--gain", help="Gain in e-/ADU for --uncertainty (default: EGAIN ...).")
    ] = None,
    readnoise: Annotated[
        float | None, typer.Option("--readnoise", help="Read noise in e- (default: RDNOISE ...).")
    ] = None,
    cosmic_rays: Annotated[
        bool, typer.Option("--cosmic-rays", help="Clean cosmic rays (L.A.Cosmic), flagged in MASK.")
    ] = False,
    cr_sigclip: Annotated[float, typer.Option("--cr-sigclip", help="L.A.Cosmic sigclip.")] = 4.5,
    cr_objlim: Annotated[float, typer.Option("--cr-objlim", help="L.A.Cosmic objlim.")] = 5.0,
    no_bpm: Annotated[
        bool, typer.Option("--no-bpm", help="Do not OR the bad-pixel mask (masters --bpm) into MASK.")
    ] = False,
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
        scheduler=scheduler,
        redo=redo,
        min_frames=min_frames,
        mem_limit=_size(mem_limit),
        overscan=overscan,
        uncertainty=uncertainty,
        gain=gain,
        readnoise=readnoise,
        cosmic_rays=cosmic_rays,
        cr_sigclip=cr_sigclip,
        cr_objlim=cr_objlim,
        no_bpm=no_bpm,
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
        print_table(out, rows)
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


@app.command()
def report(
    ctx: typer.Context,
    run_id: Annotated[int | None, typer.Option("--run", help="Report on this run only.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Report on what was done since this ISO date or time (UTC)."),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write an HTML quality report: master previews and statistics, levels over time, lights before and
    after, problems with reasons, runs with parameters and versions. One file, images inline."""
    from ccdcal.report import build_report, parse_since

    state = _state(ctx)
    when = parse_since(since) if since is not None else None
    with state.catalog() as catalog, _progress(state, "Rendering previews") as progress:
        summary = build_report(catalog, output, run_id=run_id, since=when, progress=progress)
    if as_json:
        _print_json(summary.as_dict())
    elif not state.quiet:
        out.print(
            f"Report {summary.path} ({summary.scope}): {summary.masters} masters, {summary.lights} "
            f"calibrated lights, {summary.problems} problems, {summary.images} images, "
            f"{summary.size / 1024:.0f} KiB",
            markup=False,
        )
    for _path, reason in summary.unavailable if not as_json else []:
        err.print(f"Warning: no preview: {reason}", markup=False)


@app.command()
def preview(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A FITS frame (.fits .fit .fts, .gz, .fz).")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="The PNG to write. Default: {stem}.png in the current folder."),
    ] = None,
    hdu: Annotated[
        int | None, typer.Option("--hdu", min=0, help="HDU to show (default: the first image).")
    ] = None,
    max_size: Annotated[
        int, typer.Option("--max-size", help="Longest side in pixels (averaged down); 0 keeps every pixel.")
    ] = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Write a zscale PNG of a FITS frame (row 0 at the bottom, as DS9 shows it)."""
    from ccdcal.report import preview_file

    state = _state(ctx)
    result = preview_file(file, output, hdu=hdu, max_size=max_size)
    if as_json:
        _print_json(result.as_dict())
    elif not state.quiet:
        shown = result.preview
        out.print(
            f"Preview {result.output}: {shown.width}x{shown.height} px of {result.source} HDU {shown.hdu} "
            f"({shown.shape[1]}x{shown.shape[0]}), zscale {shown.limits[0]:.6g} to {shown.limits[1]:.6g}",
            markup=False,
        )


@app.command("run")
def run_seed_config(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Argument(
            metavar="CONFIG", help="The config file (the seed's config.ini). Default: ./config.ini."
        ),
    ] = None,
    write_config: Annotated[
        Path | None,
        typer.Option(
            "--write-config", metavar="PATH", help="Write a fully commented default config to PATH and exit."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the script pipeline's config.ini end to end: ingest, build masters, calibrate the lights."""
    from ccdcal.errors import UsageError
    from ccdcal.seedconfig import load_config, run_config, write_default_config

    state = _state(ctx)
    if write_config is not None:
        if config is not None:
            raise UsageError("give either CONFIG or --write-config PATH, not both")
        written = write_default_config(write_config)
        if not state.quiet:
            out.print(f"Wrote {written}; edit it, then run: ccdcal run {written}", markup=False)
        return
    seed = load_config(config if config is not None else Path("config.ini"))  # checked before any write
    with _progress(state, "Running") as progress:
        result = run_config(seed, state.db, lambda _label, done, total: progress(done, total))
    if as_json:
        _print_json(result.as_dict())
    elif not state.quiet:
        for line in result.lines(details=seed.debug or state.verbosity > 0):
            out.print(line, markup=False)
        print_table(out, result.summary.table_rows())
    for line in result.problem_lines() if not as_json else []:
        err.print(line, markup=False)
    raise typer.Exit(result.exit_code)


# -- provenance, audit, bad files (ccdcal.provenance, ccdcal.headertrace, ccdcal.audit, ccdcal.impact) ------

_TARGET_HELP = "A calibrated file, master or raw frame (its path), or calibration:N, master:N, frame:N."


def _existing_catalog(state: State) -> Catalog:
    """The catalog, which must exist (an older schema is upgraded): these commands never create one."""
    state.catalog(upgrade=False).close()
    return state.catalog()


def _wide() -> Console:
    """stdout; in a pipe, laid out wide rather than wrapped at 80 columns."""
    return out if out.is_terminal else Console(file=out.file, width=250, highlight=False, soft_wrap=True)


@app.command()
def provenance(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(help=_TARGET_HELP, show_default=False)] = None,
    from_header: Annotated[
        Path | None,
        typer.Option("--from-header", help="Read the tree from this FITS file's header alone (no catalog)."),
    ] = None,
    search: Annotated[
        list[Path] | None,
        typer.Option("--search", help="With --from-header: look for the files named under this folder too."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """The tree of what made a file, each file checked against its recorded sha256.

    Output → masters (ΔT, Δt, scale, pinned) → calibrator masters → raw frames, each with its path, its
    sha256 and whether the file on disk still matches (exit 1 when one does not).
    """
    from rich.text import Text
    from rich.tree import Tree

    from ccdcal.errors import UsageError
    from ccdcal.headertrace import trace_header
    from ccdcal.provenance import files_line, label
    from ccdcal.provenance import provenance as provenance_tree

    state = _state(ctx)
    if (target is None) == (from_header is None):
        raise UsageError("give a FILE or ID, or --from-header FILE (not both)")
    if search and from_header is None:
        raise UsageError("--search is used with --from-header only")
    if from_header is not None:
        result = trace_header(from_header, search or [])
    else:
        assert target is not None
        with _existing_catalog(state) as catalog:
            result = provenance_tree(catalog, target)
    if as_json:
        _print_json(result.as_dict())
    elif not state.quiet:
        seen: set[str] = set()

        def grow(branch: Any, node: Any) -> None:
            key = node.ref or node.path or node.name
            if node.node == "master" and node.children and key in seen:
                branch.add(Text(f"({len(node.children)} files listed above)", style="dim"))
                return
            seen.add(key)
            for child in node.children:
                grow(branch.add(Text.assemble(*label(child))), child)

        tree = Tree(Text.assemble(*label(result.tree)), guide_style="dim")
        grow(tree, result.tree)
        _wide().print(tree)
        out.print(files_line(result), markup=False)
    raise typer.Exit(result.exit_code)


@app.command()
def audit(
    ctx: typer.Context,
    search: Annotated[
        list[Path] | None,
        typer.Option("--search", help="Look for missing files under this folder (by sha256); repeatable."),
    ] = None,
    fix_missing: Annotated[
        list[Path] | None,
        typer.Option(
            "--fix-missing", help="Look for missing files under this folder and re-point them; repeatable."
        ),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, help="Threads hashing files (default: automatic).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Hash every recorded file again; report missing, changed and moved ones.

    Every raw frame, master and current calibrated file, hashed in parallel; exit 1 when anything drifted.
    """
    from ccdcal.audit import audit as audit_files

    state = _state(ctx)
    folders = [*(search or []), *(fix_missing or [])]
    with _existing_catalog(state) as catalog, _progress(state, "Auditing") as progress:
        report = audit_files(
            catalog,
            search=folders,
            fix=bool(fix_missing),
            jobs=jobs,
            progress=lambda _label, done, total: progress(done, total),
        )
    if as_json:
        _print_json(report.as_dict())
    else:
        lines = report.lines()
        if not state.quiet:
            out.print(lines[0], markup=False)
        for line in lines[1:]:
            err.print(line, markup=False)
    raise typer.Exit(report.exit_code)


@app.command()
def impact(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help=_TARGET_HELP, show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Every master and calibrated file made from a raw frame or a master, at any depth."""
    from ccdcal.impact import impact as impact_of

    state = _state(ctx)
    with _existing_catalog(state) as catalog:
        result = impact_of(catalog, target)
    if as_json:
        _print_json(result.as_dict())
        return
    if state.quiet:
        return
    out.print(result.headline(), markup=False)
    if result.masters:
        out.print(f"Masters ({len(result.masters)}):", markup=False)
        for m in result.masters:
            bad = " BAD" if m.is_bad else ""
            out.print(f"  {m.status + bad:<14} master:{m.id} {m.path}", markup=False)
    if result.calibrations:
        out.print(f"Calibrated files ({len(result.calibrations)}):", markup=False)
        for c in result.calibrations:
            out.print(f"  {c.status:<14} calibration:{c.id} {c.path} (from {c.light_path})", markup=False)


@app.command("mark-bad")
def mark_bad(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help=_TARGET_HELP, show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why it is bad (kept in the catalog).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Keep a raw frame or a master out of every future master and calibration.

    The next `ccdcal process` rebuilds the masters made with it and calibrates their lights again.
    """
    from ccdcal.impact import mark_bad as mark

    state = _state(ctx)
    with _existing_catalog(state) as catalog:
        result = mark(catalog, target, reason)
    if as_json:
        _print_json(result.as_dict())
    elif not state.quiet:
        out.print(result.headline(), markup=False)


@app.command("mark-good")
def mark_good(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help=_TARGET_HELP, show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded with the run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Clear the bad mark of a raw frame or a master: `ccdcal process` may use it again."""
    from ccdcal.impact import mark_good as mark

    state = _state(ctx)
    with _existing_catalog(state) as catalog:
        result = mark(catalog, target, reason)
    if as_json:
        _print_json(result.as_dict())
    elif not state.quiet:
        out.print(result.headline(), markup=False)


def run() -> None:
    """Entry point for ``python -m ccdcal``."""
    app(prog_name="ccdcal")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())  # type: ignore[func-returns-value]
