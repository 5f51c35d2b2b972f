"""Cosmic rays: ccdproc's L.A.Cosmic on a calibrated image; flagged pixels cleaned, pre-flagged ones kept."""

from __future__ import annotations

import ccdproc
import numpy as np
import pytest
from astropy.nddata import CCDData

from ccdcal.errors import UsageError
from ccdcal.kernels.cosmic import CosmicParams, clean_cosmic_rays

SHAPE = (80, 90)
HITS = [(10, 12), (40, 41), (41, 41), (60, 70)]


@pytest.fixture
def image() -> np.ndarray:
    """Sky of 500 ADU (gain 2, read noise 5), a star, and cosmic-ray hits."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]]
    star = 8000 * np.exp(-((x - 30) ** 2 + (y - 25) ** 2) / (2 * 1.5**2))
    electrons = rng.poisson((500 + star) * 2.0) + rng.normal(0, 5, SHAPE)
    data = (electrons / 2.0).astype(np.float32)
    for hit in HITS:
        data[hit] += 4000
    data[70, 20] += 6000  # a hot pixel, already flagged by the bad-pixel mask
    return data


def test_cosmic_rays_cleaned_and_flagged(image: np.ndarray) -> None:
    flagged = np.zeros(SHAPE, dtype=bool)
    flagged[70, 20] = True
    params = CosmicParams()
    cleaned, cosmic = clean_cosmic_rays(image, flagged, params, gain=2.0, readnoise=5.0)
    found = {tuple(int(v) for v in p) for p in np.argwhere(cosmic)}
    assert set(HITS) <= found
    assert all(min(max(abs(y - a), abs(x - b)) for a, b in HITS) <= 1 for y, x in found)  # grown by sigfrac
    assert not cosmic[20:31, 25:36].any()  # the star is kept
    assert not cosmic[70, 20]  # given as bad: not a cosmic ray, left as it is
    assert cleaned[70, 20] == image[70, 20]
    for hit in HITS:
        assert abs(cleaned[hit] - 500) < 60
    untouched = ~cosmic
    np.testing.assert_array_equal(cleaned[untouched], image[untouched])
    assert cleaned.dtype == np.float32
    reference = ccdproc.cosmicray_lacosmic(
        CCDData(image, unit="adu", mask=flagged), gain=2.0, readnoise=5.0, gain_apply=False
    )
    np.testing.assert_array_equal(cosmic, reference.mask & ~flagged)
    np.testing.assert_array_equal(cleaned[cosmic], reference.data[cosmic])


def test_without_a_mask(image: np.ndarray) -> None:
    _, cosmic = clean_cosmic_rays(image, None, CosmicParams(), gain=2.0, readnoise=5.0)
    assert cosmic[70, 20]


def test_parameters_are_checked() -> None:
    assert CosmicParams().as_json() == {
        "sigclip": 4.5,
        "sigfrac": 0.3,
        "objlim": 5.0,
        "niter": 4,
        "satlevel": 65535.0,
        "cleantype": "meanmask",
    }
    with pytest.raises(UsageError) as raised:
        CosmicParams(sigclip=0)
    assert str(raised.value) == "--cr-sigclip 0 is out of range: use 0 < x <= 100"
    with pytest.raises(UsageError) as raised:
        CosmicParams(cleantype="zero")
    assert str(raised.value) == "cosmic-ray cleantype 'zero': use meanmask, medmask, median or idw"
