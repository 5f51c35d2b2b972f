"""A recorded result made again, in a folder of its own, by the code that made it.

- a calibrated light: :func:`ccdcal.lights.worker.calibrate_frame` on the task its worker was given
  (:func:`ccdcal.reproduction.recipes.light_recipe`), the fused path or the one with optional steps as
  that task chooses, written where the worker writes (a temporary file beside the output, here in the
  folder);
- a combined master: :func:`ccdcal.masters.screen.combine_master` on its group's plan (inputs prepared,
  pre-calibrated, clipped and combined with their uncertainty, as ``ccdcal masters`` does), written as
  :func:`ccdcal.masters.files.master_hdul` lays out its file;
- a bad-pixel mask: :func:`ccdcal.masters.bpm.make_bpm` from its dark and flat.

Nothing here reads or writes the catalog, and nothing is written outside the folder given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdcal.errors import CcdcalError
from ccdcal.files.fitsio import write_atomic
from ccdcal.lights.worker import calibrate_frame
from ccdcal.masters.bpm import make_bpm, mask_hdul
from ccdcal.masters.files import master_hdul
from ccdcal.masters.groups import MasterOptions
from ccdcal.masters.screen import combine_master
from ccdcal.reproduction.recipes import Recipe, with_output


@dataclass
class Remade:
    """A result made again: its file (``None`` when it could not be made, ``error`` saying why), and
    what the making found that the catalog records too (a light's ``calibrations.steps`` details, a
    flat's levels)."""

    path: Path | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    flat_levels: list[float] = field(default_factory=list)


def remake(recipe: Recipe, folder: Path) -> Remade:
    """Make the result of ``recipe`` again in ``folder``.

    Never raises for a problem with the files (an input that cannot be read, a master prepared otherwise):
    the result has ``error`` set instead.
    """
    if recipe.task is not None:
        result = calibrate_frame(with_output(recipe, folder))
        if result.error is not None or result.temporary is None:
            return Remade(None, result.error or "no output written")
        return Remade(Path(result.temporary), details=dict(result.details))
    target = folder / recipe.name
    try:
        if recipe.bpm is not None:
            dark, flat, keys, params = recipe.bpm
            mask, header, _ = make_bpm(dark, flat, keys, params)
            write_atomic(target, mask_hdul(mask, header))
            return Remade(target)
        assert recipe.plan is not None
        options = MasterOptions(masters_dir=folder, params=recipe.clip, mem_limit=recipe.mem_limit)
        built = combine_master(recipe.plan, options)
        write_atomic(target, master_hdul(recipe.plan, built, recipe.clip))
        return Remade(target, flat_levels=list(built.flat_levels))
    except (CcdcalError, OSError, ValueError, ArithmeticError) as exc:
        return Remade(None, str(exc) or type(exc).__name__)
