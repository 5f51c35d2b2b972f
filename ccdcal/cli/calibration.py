"""Commands that calibrate: ``masters`` (build master frames) and ``process`` (masters as needed, then every
light)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccdcal import limits
from ccdcal.cli.base import (
    AsOfOption,
    FlatDarkScaleOption,
    MastersUncertaintyOption,
    MemLimitOption,
    MinFramesOption,
    OverscanOption,
    SaturationOption,
    UncertaintyOption,
    app,
    as_of_time,
    byte_size,
    err,
    out,
    print_json,
    print_lines,
    print_problems,
    print_table,
    progress_bar,
    state_of,
)
from ccdcal.cli.frameqa import (
    NoFrameQaOption,
    QaFlatMaxLevelOption,
    QaFlatMaxSaturatedOption,
    QaFlatMinFractionOption,
    QaFlatMinSnrOption,
    QaOutlierSigmaOption,
    QaTailFractionOption,
    QaTempToleranceOption,
    qa_options,
)
from ccdcal.errors import UsageError
from ccdcal.runtime.words import counted


@app.command(
    epilog="""
    ccdcal masters                  # build the missing or stale masters
    ccdcal masters --list --all -v  # every master, its frames' statistics
    ccdcal masters --bpm            # bad-pixel masks too, from darks and flats
    """
)
def masters(
    ctx: typer.Context,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", metavar="KIND", help="Build only this kind (bias, dark, flat); repeatable."),
    ] = None,
    masters_dir: Annotated[
        Path, typer.Option("--masters-dir", metavar="DIR", help="Folder for master files.")
    ] = Path("masters"),
    min_frames: MinFramesOption = 3,
    mem_limit: MemLimitOption = "2G",
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="Combine on a Dask cluster: tcp://HOST:8786, or local:N to start N local workers.",
        ),
    ] = None,
    sigma: Annotated[
        float,
        typer.Option(
            "--sigma", metavar="SIGMA", help=f"Clipping bounds in sigma, low and high ({limits.SIGMA.text})."
        ),
    ] = 3.0,
    iterations: Annotated[
        int,
        typer.Option(
            "--iterations", metavar="N", help=f"Sigma-clipping iterations ({limits.ITERATIONS.text})."
        ),
    ] = 5,
    dispersion: Annotated[
        str,
        typer.Option(
            "--dispersion", metavar="mad_std|std", help="Clipping dispersion: mad_std (default) or std."
        ),
    ] = "mad_std",
    no_bias: Annotated[
        bool, typer.Option("--no-bias", help="Darks keep the bias (used at their own exposure only).")
    ] = False,
    flat_dark_scale: FlatDarkScaleOption = False,
    temp_tolerance: Annotated[
        float,
        typer.Option(
            "--temp-tolerance",
            metavar="CELSIUS",
            help=f"|ΔT| allowed between a master and its users ({limits.TEMP_TOLERANCE.text}).",
        ),
    ] = 2.0,
    overscan: OverscanOption = "auto",
    saturation: SaturationOption = None,
    uncertainty: MastersUncertaintyOption = False,
    bpm: Annotated[
        bool,
        typer.Option(
            "--bpm", help="Also build bad-pixel masks: hot pixels of master darks, ccdmask of master flats."
        ),
    ] = False,
    no_frame_qa: NoFrameQaOption = False,
    qa_outlier_sigma: QaOutlierSigmaOption = 10.0,
    qa_temp_tolerance: QaTempToleranceOption = 2.0,
    qa_flat_min_snr: QaFlatMinSnrOption = 5.0,
    qa_flat_min_fraction: QaFlatMinFractionOption = 0.1,
    qa_flat_max_saturated: QaFlatMaxSaturatedOption = 0.05,
    qa_flat_max_level: QaFlatMaxLevelOption = 0.9,
    qa_tail_fraction: QaTailFractionOption = 0.01,
    show: Annotated[bool, typer.Option("--list", help="List the masters instead of building.")] = False,
    all_versions: Annotated[bool, typer.Option("--all", help="With --list: superseded ones too.")] = False,
    as_of: AsOfOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Build the missing or stale master bias, dark and flat frames.

    Each master is the sigma-clipped median of a group of raw frames of one camera set-up (and exposure,
    or filter), calibrated by the masters before it; --list shows the masters instead (with -v their
    inputs' statistics and the frames the frame QA set aside, with the rule and reason).
    """
    # Imported here to keep start-up fast (as in every command): `ccdcal --help` loads none of them.
    from ccdcal.catalog.queries import MatchRules
    from ccdcal.kernels.combine import ClipParams
    from ccdcal.kernels.options import StepOptions
    from ccdcal.masters.build import build_masters, list_masters
    from ccdcal.masters.groups import MasterOptions, check_options

    state = state_of(ctx)
    when = as_of_time(as_of)
    if when is not None and not show:
        raise UsageError("--as-of lists the masters as they stood then: use it with --list")
    if show:
        with state.catalog(as_of=when) as catalog:
            if state.verbosity > 0:
                # Imported here to keep start-up fast (as above): only -v reads the frame QA.
                from ccdcal.masters.listing import list_masters_qa

                rows = list_masters_qa(catalog, include_superseded=all_versions)
            else:
                rows = list_masters(catalog, include_superseded=all_versions)
        if as_json:
            print_json(rows)
            return
        if state.quiet:
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
        if state.verbosity > 0:
            _print_frame_qa(rows)
        return
    options = MasterOptions(
        masters_dir=masters_dir,
        kinds=tuple(k.lower() for k in kind) if kind else MasterOptions().kinds,
        min_frames=min_frames,
        params=ClipParams(sigma_lower=sigma, sigma_upper=sigma, maxiters=iterations, stdfunc=dispersion),
        mem_limit=byte_size(mem_limit),
        no_bias=no_bias,
        flat_dark_scale=flat_dark_scale,
        rules=MatchRules(temp_tolerance=temp_tolerance),
        optional=StepOptions.parse(overscan=overscan, saturation=saturation, uncertainty=uncertainty),
        bpm=bpm,
        scheduler=scheduler,
        qa=qa_options(
            no_frame_qa=no_frame_qa,
            outlier_sigma=qa_outlier_sigma,
            temp_tolerance=qa_temp_tolerance,
            flat_min_snr=qa_flat_min_snr,
            flat_min_fraction=qa_flat_min_fraction,
            flat_max_saturated=qa_flat_max_saturated,
            flat_max_level=qa_flat_max_level,
            tail_fraction=qa_tail_fraction,
        ),
    )
    check_options(options)  # a wrong option is told before a missing catalog
    with state.catalog() as catalog, progress_bar(state, "Building masters") as progress:
        summary = build_masters(catalog, options, progress=lambda _label, done, total: progress(done, total))
    if as_json:
        print_json({"catalog": catalog.name, "run": summary.run_id, **summary.as_dict()})
    elif not state.quiet:
        out.print(
            f"Masters (run {summary.run_id}): {len(summary.of('built'))} built, "
            + (f"{len(summary.of('restored'))} made current again, " if summary.of("restored") else "")
            + f"{len(summary.of('current'))} already current, {len(summary.of('skipped'))} skipped",
            markup=False,
        )
        print_lines(out, (f"  built {r.path} ({counted(r.n_inputs, 'frame')})" for r in summary.of("built")))
        print_lines(out, (f"  made current again {r.path} (its file intact)" for r in summary.of("restored")))
    print_problems(state, (f"Warning: {w}" for report in summary.reports for w in report.warnings))
    if summary.of("skipped") and not as_json:
        skipped = summary.of("skipped")
        print_lines(err, [f"Skipped ({len(skipped)}):", *(f"  {report.reason}" for report in skipped)])
    raise typer.Exit(summary.exit_code)


def _print_frame_qa(rows: list[dict[str, object]]) -> None:
    """``masters --list -v``: each master's inputs' statistics and the frames its group set aside."""
    # Imported here to keep start-up fast (as in every command).
    from ccdcal.masters.listing import master_heading, set_aside_lines, statistics_table

    for row in rows:
        if not row["inputs"] and not row["set_aside"]:
            continue  # a bad-pixel mask: made from masters, not frames
        table = statistics_table(row)
        print_lines(out, ["", master_heading(row)])
        if table:
            print_table(out, [["", *cells] for cells in table], right=tuple(range(3, len(table[0]))))
        elif row["inputs"]:
            print_lines(out, ["  inputs not measured (built before frame QA)"])
        print_lines(out, (f"  {line}" for line in set_aside_lines(row)))


@app.command(
    epilog="""
    ccdcal process --dry-run     # the plan: masters to build, lights to calibrate
    ccdcal process --jobs 4      # calibrate in 4 worker processes
    ccdcal process --dark-scale --allow-missing flat
    """
)
def process(
    ctx: typer.Context,
    masters_dir: Annotated[
        Path, typer.Option("--masters-dir", metavar="DIR", help="Folder for master files.")
    ] = Path("masters"),
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", metavar="DIR", help="Folder for calibrated lights ({stem}_cal.fits)."),
    ] = Path("calibrated"),
    dark_scale: Annotated[
        bool,
        typer.Option(
            "--dark-scale/--no-dark-scale", help="Scale the dark of nearest exposure to the light's."
        ),
    ] = False,
    flat_dark_scale: FlatDarkScaleOption = False,
    no_bias: Annotated[
        bool, typer.Option("--no-bias", help="Darks keep the bias (used at their own exposure only).")
    ] = False,
    no_dark: Annotated[bool, typer.Option("--no-dark", help="Do not subtract darks.")] = False,
    no_flat: Annotated[bool, typer.Option("--no-flat", help="Do not divide by flats.")] = False,
    temp_tolerance: Annotated[
        float,
        typer.Option(
            "--temp-tolerance",
            metavar="CELSIUS",
            help=f"|ΔT| allowed between a master and a light ({limits.TEMP_TOLERANCE.text}).",
        ),
    ] = 2.0,
    exptime_tolerance: Annotated[
        float,
        typer.Option(
            "--exptime-tolerance",
            metavar="FRACTION",
            help=f"Relative exposure difference of an unscaled dark ({limits.EXPTIME_TOLERANCE.text}).",
        ),
    ] = 1e-6,
    bias: Annotated[
        Path | None, typer.Option("--bias", metavar="FILE", help="Use this master bias (pinned).")
    ] = None,
    dark: Annotated[
        Path | None, typer.Option("--dark", metavar="FILE", help="Use this master dark (pinned).")
    ] = None,
    flat: Annotated[
        Path | None, typer.Option("--flat", metavar="FILE", help="Use this master flat (pinned).")
    ] = None,
    allow_missing: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-missing",
            metavar="STEP",
            help="Calibrate without this step when no master matches; repeatable.",
        ),
    ] = None,
    flat_min: Annotated[
        float,
        typer.Option(
            "--flat-min",
            metavar="LEVEL",
            help=f"Flat pixels below this are clamped and flagged in MASK ({limits.FLAT_MIN.text}).",
        ),
    ] = 0.01,
    flat_low: Annotated[
        float,
        typer.Option(
            "--flat-low",
            metavar="FRACTION",
            help="Flat pixels below this (a low response: vignetted) are flagged in MASK, bit 16 "
            f"({limits.FLAT_LOW.text}, above --flat-min).",
        ),
    ] = 0.5,
    saturation: SaturationOption = None,
    min_frames: MinFramesOption = 3,
    mem_limit: MemLimitOption = "2G",
    no_frame_qa: NoFrameQaOption = False,
    qa_outlier_sigma: QaOutlierSigmaOption = 10.0,
    qa_temp_tolerance: QaTempToleranceOption = 2.0,
    qa_flat_min_snr: QaFlatMinSnrOption = 5.0,
    qa_flat_min_fraction: QaFlatMinFractionOption = 0.1,
    qa_flat_max_saturated: QaFlatMaxSaturatedOption = 0.05,
    qa_flat_max_level: QaFlatMaxLevelOption = 0.9,
    qa_tail_fraction: QaTailFractionOption = 0.01,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help=f"Processes calibrating frames (default: all cores; {limits.JOBS.text}).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
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
        float | None,
        typer.Option(
            "--gain",
            metavar="E/ADU",
            help=f"Gain for --uncertainty (default: EGAIN ...; {limits.GAIN.text}).",
        ),
    ] = None,
    readnoise: Annotated[
        float | None,
        typer.Option(
            "--readnoise",
            metavar="ELECTRONS",
            help=f"Read noise (default: RDNOISE ...; {limits.READNOISE.text}).",
        ),
    ] = None,
    cosmic_rays: Annotated[
        bool, typer.Option("--cosmic-rays", help="Clean cosmic rays (L.A.Cosmic), flagged in MASK.")
    ] = False,
    cr_sigclip: Annotated[
        float,
        typer.Option("--cr-sigclip", metavar="SIGMA", help=f"L.A.Cosmic sigclip ({limits.CR_SIGCLIP.text})."),
    ] = 4.5,
    cr_objlim: Annotated[
        float,
        typer.Option("--cr-objlim", metavar="CONTRAST", help=f"L.A.Cosmic objlim ({limits.CR_OBJLIM.text})."),
    ] = 5.0,
    no_bpm: Annotated[
        bool, typer.Option("--no-bpm", help="Do not OR the bad-pixel mask (masters --bpm) into MASK.")
    ] = False,
    write_uncalibrated: Annotated[
        bool,
        typer.Option(
            "--write-uncalibrated",
            help="Write the lights no step applies to (no bias, dark, flat or overscan): their pixels "
            "are the raw frame's. Without it they are listed, not written.",
        ),
    ] = False,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            metavar="KIND=AGE,...",
            help="The oldest master of a kind a light may be given, from the light's DATE-OBS: "
            f"bias=30d,dark=90d,flat=7d (d days, h hours, w weeks; {limits.MAX_AGE.text}). Default: any age.",
            show_default=False,
        ),
    ] = None,
    as_of: AsOfOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Calibrate every light, building the masters it needs first.

    Each light gets the master bias, dark and flat that match it in the catalog; the output's provenance
    (the masters used and why) is recorded. Lights already calibrated as they would be now are skipped.
    """
    # Imported here to keep start-up fast.
    from ccdcal.kernels.options import StepOptions
    from ccdcal.lights.workers import early_workers

    # The worker process is forked first, before the catalog's libraries load: it loads the kernels while
    # this process plans (ccdcal.lights.workers).
    with early_workers(jobs, wanted=not dry_run and not scheduler):
        # Imported here to keep start-up fast (and after the fork: the worker process needs none of them).
        from ccdcal.catalog.queries import MatchRules, MaxAge
        from ccdcal.lights import pipeline
        from ccdcal.lights.options import ProcessOptions, check_options

        state = state_of(ctx)
        when = as_of_time(as_of)
        if when is not None and not dry_run:
            raise UsageError("--as-of plans as the catalog stood then: use it with --dry-run")
        options = ProcessOptions(
            masters_dir=masters_dir,
            output_dir=output_dir,
            rules=MatchRules(temp_tolerance, exptime_tolerance, dark_scale, max_age=MaxAge.parse(max_age)),
            no_bias=no_bias,
            flat_dark_scale=flat_dark_scale,
            no_dark=no_dark,
            no_flat=no_flat,
            allow_missing=tuple(k.lower() for k in allow_missing or ()),
            bias=bias,
            dark=dark,
            flat=flat,
            flat_min=flat_min,
            flat_low=flat_low,
            jobs=jobs,
            scheduler=scheduler,
            redo=redo,
            min_frames=min_frames,
            mem_limit=byte_size(mem_limit),
            optional=StepOptions.parse(
                overscan=overscan,
                saturation=saturation,
                uncertainty=uncertainty,
                gain=gain,
                readnoise=readnoise,
                cosmic_rays=cosmic_rays,
                cr_sigclip=cr_sigclip,
                cr_objlim=cr_objlim,
            ),
            no_bpm=no_bpm,
            write_uncalibrated=write_uncalibrated,
            qa=qa_options(
                no_frame_qa=no_frame_qa,
                outlier_sigma=qa_outlier_sigma,
                temp_tolerance=qa_temp_tolerance,
                flat_min_snr=qa_flat_min_snr,
                flat_min_fraction=qa_flat_min_fraction,
                flat_max_saturated=qa_flat_max_saturated,
                flat_max_level=qa_flat_max_level,
                tail_fraction=qa_tail_fraction,
            ),
        )
        check_options(options)  # a wrong option is told before a missing catalog
        with state.catalog(as_of=when) as catalog:
            if dry_run:
                summary = pipeline.dry_run(catalog, options)
            else:
                with progress_bar(state, "Processing") as progress:
                    summary = pipeline.process(
                        catalog, options, lambda _label, done, total: progress(done, total)
                    )
        if as_json:
            print_json(summary.as_dict())
        elif not state.quiet:
            steps = None if summary.dry_run else summary.steps_line()
            lines = [summary.headline(), *([steps] if steps else [])]
            print_lines(out, summary.plan_lines() if summary.dry_run else lines)
            rows = summary.table_rows() if not (summary.dry_run or summary.nothing_done) else []
            print_table(out, rows)
        if not as_json:
            print_problems(state, summary.problem_lines())
        raise typer.Exit(summary.exit_code)
