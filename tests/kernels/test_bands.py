"""A combine in bands of rows put together equals the whole combine; bands fit the memory limit."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from ccdcal.kernels.bands import Stitcher, plan_bands
from ccdcal.kernels.combine import ClipParams, combine_files
from tests.kernels.test_combine import band_inputs


def test_bands_put_together_equal_the_whole_combine(tmp_path: Path) -> None:
    paths, offsets, scales = band_inputs(tmp_path)
    whole = combine_files(paths, offset=offsets, scale=scales)
    bands = plan_bands(6, (53, 29), 2**30, parts=5, offset_images=2)
    assert bands == [(0, 10), (10, 21), (21, 31), (31, 42), (42, 53)]
    stitcher = Stitcher((53, 29), 6, ClipParams())
    for rows in reversed(bands):  # in any order
        stitcher.add(combine_files(paths, offset=offsets, scale=scales, rows=rows))
    result = stitcher.result()
    np.testing.assert_array_equal(result.image, whole.image)
    np.testing.assert_array_equal(result.rejected, whole.rejected)
    assert result.rejected_fraction == whole.rejected_fraction
    assert (result.n_nonfinite, result.n_inputs, result.first_row) == (whole.n_nonfinite, 6, 0)
    assert result.n_blocks == 5
    with pytest.raises(ValueError, match="overlaps"):
        stitcher.add(combine_files(paths, rows=(5, 6)))
    part = Stitcher((53, 29), 6, ClipParams())
    part.add(combine_files(paths, rows=(0, 50)))
    with pytest.raises(ValueError, match="3 rows have no band, from row 50"):
        part.result()
    with pytest.raises(ValueError, match="other frames or parameters"):
        part.add(combine_files(paths[:5], rows=(50, 53)))


def test_bands_with_saturated_samples_equal_the_whole_combine(tmp_path: Path) -> None:
    """The saturated samples each band leaves out are counted, and the bands put together equal the whole."""
    paths, offsets, scales = band_inputs(tmp_path)
    levels = [20000.0, None, 15000.0, 20000.0, 0.0, 25000.0]
    whole = combine_files(paths, offset=offsets, scale=scales, saturation=levels)
    assert whole.n_saturated > 0
    stitcher = Stitcher((53, 29), 6, ClipParams())
    for rows in plan_bands(6, (53, 29), 2**30, parts=4, offset_images=2):
        stitcher.add(combine_files(paths, offset=offsets, scale=scales, rows=rows, saturation=levels))
    result = stitcher.result()
    np.testing.assert_array_equal(result.image, whole.image)
    np.testing.assert_array_equal(result.rejected, whole.rejected)
    assert (result.n_saturated, result.n_nonfinite) == (whole.n_saturated, whole.n_nonfinite)


def test_bands_fit_the_memory_limit() -> None:
    n, ny, nx = 20, 1000, 400
    reading = 2 * 16 * (n * nx * 8 + nx * 2)
    assert plan_bands(n, (ny, nx), 2**30, parts=1) == [(0, ny)]
    assert len(plan_bands(n, (ny, nx), 2**30, parts=8)) == 8
    assert plan_bands(n, (3, nx), 2**30, parts=8) == [(0, 1), (1, 2), (2, 3)]
    limit = reading + 100 * nx * (10 + 8 * 2)  # room for bands of 100 rows with two offset images
    bands = plan_bands(n, (ny, nx), limit, parts=2, offset_images=2)
    assert len(bands) == 10
    assert bands[0][0] == 0
    assert bands[-1][1] == ny
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
    assert max(r1 - r0 for r0, r1 in bands) <= 100
