"""A master's inputs prepared as every frame of the reduction is: overscan subtracted and trimmed.

The combine (:func:`ccdcal.kernels.combine.combine_files`) reads FITS files in row blocks. When the
overscan step applies, each raw input is read once, its overscan subtracted and the image trimmed
(:func:`ccdcal.kernels.overscan.apply_overscan`), and the result written as a float32 FITS file beside the
masters (a ``.ccdcal-tmp-`` name: a crash leaves nothing a rerun does not remove), which the combine then
reads like any input. float32 holds the median-mode results exactly (a 16-bit value minus a median of
16-bit values is a multiple of 0.5 below 2**17); a fitted overscan is rounded to float32 (6e-8 relative).
A raw sample at or above its frame's saturation level (found on the raw value, before the overscan is
subtracted) is written NaN, so that the combine leaves it out as it does a non-finite sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits

from ccdcal.files.fitsio import read_image, temporary_path
from ccdcal.kernels.overscan import NO_OVERSCAN, OverscanPlan, apply_overscan, shown, signature_of_header
from ccdcal.kernels.saturation import saturated


class Prepared(NamedTuple):
    """What :func:`prepared_inputs` yields."""

    #: The files to combine.
    paths: list[Path]
    #: Their image HDU.
    hdu: int
    #: The overscan level subtracted from each input (``None`` without overscan).
    levels: list[float | None]
    #: Each input's saturated samples written NaN (empty when the raw files are read as they are: the
    #: combine leaves them out itself).
    saturated: list[int]


@contextmanager
def prepared_inputs(
    paths: Sequence[Path],
    hdu: int,
    plan: OverscanPlan | None,
    folder: Path,
    calibrators: Sequence[str | None] = (),
    saturation: Sequence[float | None] = (),
) -> Iterator[Prepared]:
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
    saturation : sequence of (float or None)
        Each input's saturation level (empty: none), applied to the prepared files.

    Yields
    ------
    Prepared
        The files, their HDU, each input's overscan level and saturated samples.
    """
    check_preparation(calibrators, plan)
    if plan is None or not plan.applies:
        yield Prepared(list(paths), hdu, [None] * len(paths), [])
        return
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    levels: list[float | None] = []
    counts: list[int] = []
    try:
        for index, path in enumerate(paths):
            raw = read_image(path, hdu, np.float64)
            hit = saturated(raw, saturation[index] if saturation else None)  # on the raw values
            image, level = apply_overscan(raw, plan)
            if plan.trim is not None:
                hit = hit[plan.trim.slices]
            image[hit] = np.nan
            target = temporary_path(folder)
            written.append(target)
            fits.PrimaryHDU(image.astype(np.float32)).writeto(target)
            levels.append(level)
            counts.append(int(np.count_nonzero(hit)))
        yield Prepared(written, 0, levels, counts)
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
