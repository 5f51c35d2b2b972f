"""A master's inputs prepared as every frame of the reduction is: overscan subtracted and trimmed.

The combine (:func:`ccdcal.kernels.combine.combine_files`) reads FITS files in row blocks. When the
overscan step applies, each raw input is read once, its overscan subtracted and the image trimmed
(:func:`ccdcal.kernels.overscan.apply_overscan`), and the result written as a float32 FITS file beside the
masters (a ``.ccdcal-tmp-`` name: a crash leaves nothing a rerun does not remove), which the combine then
reads like any input. float32 holds the median-mode results exactly (a 16-bit value minus a median of
16-bit values is a multiple of 0.5 below 2**17); a fitted overscan is rounded to float32 (6e-8 relative).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.io import fits

from ccdcal.files.fitsio import read_image, temporary_path
from ccdcal.kernels.overscan import NO_OVERSCAN, OverscanPlan, apply_overscan, shown, signature_of_header


@contextmanager
def prepared_inputs(
    paths: Sequence[Path],
    hdu: int,
    plan: OverscanPlan | None,
    folder: Path,
    calibrators: Sequence[str | None] = (),
) -> Iterator[tuple[list[Path], int, list[float | None]]]:
    """The files the combine reads, and each input's median overscan level.

    Parameters
    ----------
    paths : sequence of Path
        The raw inputs.
    hdu : int
        Their image HDU.
    plan : OverscanPlan or None
        The overscan and trim applied to every input (``None`` or a plan that does nothing: the raw files
        are read as they are).
    folder : Path
        Where the prepared files are written (removed when the block ends).
    calibrators : sequence of str or None
        The master files subtracted from the inputs: their inputs must have been prepared the same way.

    Yields
    ------
    paths : list of Path
        The files to combine.
    hdu : int
        Their image HDU.
    levels : list of float or None
        The overscan level subtracted from each input (``None`` without overscan).
    """
    check_preparation(calibrators, plan)
    if plan is None or not plan.applies:
        yield list(paths), hdu, [None] * len(paths)
        return
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    levels: list[float | None] = []
    try:
        for path in paths:
            image, level = apply_overscan(read_image(path, hdu, np.float64), plan)
            target = temporary_path(folder)
            written.append(target)
            fits.PrimaryHDU(image.astype(np.float32)).writeto(target)
            levels.append(level)
        yield written, 0, levels
    finally:
        for target in written:
            target.unlink(missing_ok=True)


def check_preparation(masters: Sequence[str | None], plan: OverscanPlan | None) -> None:
    """Refuse a calibrator master whose inputs were not prepared as ``plan`` prepares these.

    Raises
    ------
    ValueError
        Naming the master and both preparations.
    """
    wanted = (plan or NO_OVERSCAN).signature()
    for path in masters:
        if path is None:
            continue
        found = signature_of_header(fits.getheader(path))
        if found != wanted:
            raise ValueError(
                f"{Path(path).name} was built from frames prepared with overscan {shown(found)}, these "
                f"inputs with {shown(wanted)}: build it again with the same --overscan"
            )
