"""``ccdcal run CONFIG``: the script pipeline's config.ini, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccdcal.cli.base import (
    app,
    out,
    print_json,
    print_lines,
    print_problems,
    print_table,
    progress_bar,
    state_of,
)
from ccdcal.errors import UsageError


@app.command(
    "run",
    epilog="""
    ccdcal run                             # ./config.ini
    ccdcal run calib_dir/config.ini
    ccdcal run --write-config config.ini   # a commented default to edit
    """,
)
def run_seed_config(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Argument(
            metavar="CONFIG",
            help="The config file (the script pipeline's config.ini). Default: ./config.ini.",
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
    """Run the script pipeline's config.ini end to end.

    Ingest the raw frames, build the masters switched on, calibrate the lights: one run, recorded with the
    whole config, in the catalog beside it (ccdcal.db).
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.config.run import load_config, run_config, write_default_config

    state = state_of(ctx)
    if write_config is not None:
        if config is not None:
            raise UsageError("give either CONFIG or --write-config PATH, not both")
        written = write_default_config(write_config)
        if not state.quiet:
            out.print(f"Wrote {written}; edit it, then run: ccdcal run {written}", markup=False)
        return
    seed = load_config(config if config is not None else Path("config.ini"))  # checked before any write
    with progress_bar(state, "Running") as progress:
        result = run_config(seed, state.db, lambda _label, done, total: progress(done, total))
    if as_json:
        print_json(result.as_dict())
    elif not state.quiet:
        print_lines(out, result.lines(details=seed.debug or state.verbosity > 0))
        print_table(out, result.summary.table_rows())
    if not as_json:
        print_problems(state, result.problem_lines())
    raise typer.Exit(result.exit_code)
