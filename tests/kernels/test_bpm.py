"""Bad pixels: hot pixels of a master dark, ccdmask defects of a master flat."""

from __future__ import annotations

import ccdproc
import numpy as np
import pytest
from astropy.nddata import CCDData

from ccdcal.errors import UsageError
from ccdcal.kernels.bpm import BpmParams, flat_defects, hot_pixels, low_pixels

SHAPE = (60, 75)


def test_hot_pixels_of_a_dark() -> None:
    rng = np.random.default_rng(3)
    dark = rng.normal(20, 2, SHAPE)
    dark[5, 6] = 200
    dark[7, 8] = 35  # 7.5 sigma
    dark[9, 10] = 28  # 4 sigma: not hot at 5
    dark[11, 12] = np.nan
    hot = hot_pixels(dark, 5.0)
    assert {tuple(int(v) for v in p) for p in np.argwhere(hot)} == {(5, 6), (7, 8), (11, 12)}
    assert hot_pixels(dark, 3.5)[9, 10]
    assert hot_pixels(np.full(SHAPE, np.nan)).all()


@pytest.mark.parametrize("byblocks", [True, False])
def test_flat_defects_are_ccdmask(byblocks: bool) -> None:
    rng = np.random.default_rng(4)
    flat = rng.normal(1.0, 0.01, SHAPE)
    flat[10, 10] = 0.0  # dead
    flat[20, 30] = 0.5  # low
    flat[30, 40] = 1.5  # hot column pixel
    params = BpmParams(byblocks=byblocks)
    defects = flat_defects(flat, params)
    assert defects[10, 10]
    assert defects[20, 30]
    assert defects[30, 40]
    reference = ccdproc.ccdmask(CCDData(flat, unit=""), byblocks=byblocks)
    np.testing.assert_array_equal(defects, reference)
    assert low_pixels(flat, defects) == int((defects & (flat < np.median(flat))).sum())


def test_parameters_are_checked() -> None:
    assert BpmParams().as_json()["hot_sigma"] == 5.0
    with pytest.raises(UsageError) as raised:
        BpmParams(hot_sigma=-1)
    assert str(raised.value) == "bad-pixel hot_sigma must be a positive number, not -1"
    with pytest.raises(UsageError) as raised:
        BpmParams(ncmed=0)
    assert str(raised.value) == "bad-pixel ncmed must be a positive integer, not 0"
