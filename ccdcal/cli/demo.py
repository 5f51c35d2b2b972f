"""``ccdcal simulate``: a realistic raw night for demos and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccdcal.cli.base import app, out, progress_bar, state_of


@app.command(
    epilog="""
    ccdcal simulate night/ --seed 7   # the same seed, the same files
    ccdcal simulate raw/ --seed 1     # the raw night of make demo
    """
)
def simulate(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder to create (must be empty or absent).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Random seed: the same seed gives the same files.")
    ] = 0,
) -> None:
    """Write a small, realistic raw night for demos and tests.

    The frames of a cooled mono CMOS camera in the folders BIAS/ DARK/ FLAT/ LIGHT/ of DIR: biases, darks
    at four exposures, flats in two filters and a few lights.
    """
    # Imported here to keep start-up fast: a command loads only the library it calls.
    from ccdcal.simulate import simulate_night

    state = state_of(ctx)
    with progress_bar(state, "Simulating") as progress:
        night = simulate_night(directory, seed=seed, progress=progress)
    if not state.quiet:
        counts = ", ".join(f"{len(files)} {kind}" for kind, files in night.files.items())
        out.print(f"Simulated night in {night.root}: {counts}", markup=False)
