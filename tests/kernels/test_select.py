"""The exact medians and sigma-clipped descriptions of ccdcal.kernels.select against numpy and astropy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import mad_std as astropy_mad_std
from astropy.stats import sigma_clip

from ccdcal.kernels.select import NBINS, SORT_AT_MOST, describe, finite_median, mad_std, moments_in_range


def numpy_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


def images(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Data of every shape the histogram search meets: continuous, quantised, constant, outliers far from
    the rest (guard bins), non-finite values, ranges that overflow or underflow, integers."""
    normal = rng.normal(1000.0, 10.0, n)
    hot = normal.copy()
    hot[rng.integers(0, n, max(n // 100, 1))] = 65000.0
    holes = normal.copy()
    holes[rng.integers(0, n, max(n // 10, 1))] = np.nan
    holes[0], holes[-1] = np.inf, -np.inf
    vignetted = normal.copy()
    vignetted[: n // 3] *= 0.2  # a third of the values far below: the median moves out of the middle
    return {
        "normal": normal,
        "normal float32": normal.astype(np.float32),
        "hot pixels": hot,
        "quantised": np.round(normal * 2) / 2,
        "few values": rng.integers(0, 3, n).astype(np.float64),
        "constant": np.full(n, 7.25),
        "non-finite": holes,
        "vignetted": vignetted,
        "huge range": np.concatenate([rng.normal(0, 1e-300, max(n - 2, 0)), [1e308, -1e308]])[:n],
        "subnormal": rng.integers(0, 50, n) * 5e-324,
        "uint16": rng.integers(0, 65535, n).astype(np.uint16),
        "all nan": np.full(n, np.nan),
    }


@pytest.mark.parametrize("n", [1, 2, 7, 1000, SORT_AT_MOST + 1, 3 * SORT_AT_MOST + 10])
def test_finite_median_is_numpys(n: int) -> None:
    rng = np.random.default_rng(n)
    for name, values in images(rng, n).items():
        assert same(finite_median(values), numpy_median(values)), name


def test_finite_median_of_a_float32_image_averages_in_float32() -> None:
    values = np.array([1.0, 16777216.0, 16777218.0, 3e7], np.float32)  # middle sum not a float32
    assert finite_median(values) == float(np.median(values))
    assert finite_median(values.astype(np.float64)) == float(np.median(values.astype(np.float64)))


def test_a_bin_too_full_to_sort_is_binned_again() -> None:
    """Two tight clusters: the histogram between them puts each in one bin, too full to sort."""
    rng = np.random.default_rng(2)
    half = 2 * SORT_AT_MOST
    values = np.concatenate([rng.normal(0.0, 1e-12, half), rng.normal(1.0, 1e-12, half + 1)])
    rng.shuffle(values)
    assert same(finite_median(values), numpy_median(values))
    assert same(finite_median(values[1:]), numpy_median(values[1:]))
    assert NBINS >= 1024


@pytest.mark.parametrize("n", [5, 5000, 300_000])
def test_describe_keeps_what_astropys_sigma_clip_keeps(n: int) -> None:
    rng = np.random.default_rng(n)
    for name, values in images(rng, n).items():
        if name in ("huge range", "all nan"):
            continue
        found = describe(values, 3.0, 5)
        finite = values[np.isfinite(values)].astype(np.float64)
        kept = sigma_clip(finite, sigma=3, maxiters=5, cenfunc="median", stdfunc="std", masked=False)
        assert found.kept == kept.size, name
        assert found.kept_mean == pytest.approx(np.mean(kept), rel=1e-12, abs=1e-300), name
        ddof1 = np.std(kept, ddof=1) if kept.size > 1 else 0.0
        assert found.kept_std == pytest.approx(ddof1, rel=1e-9, abs=1e-300), name
        assert found.count == finite.size
        assert same(found.median, float(np.median(finite))), name
        assert found.mean == pytest.approx(np.mean(finite), rel=1e-12, abs=1e-300), name
        assert found.std == pytest.approx(np.std(finite), rel=1e-9, abs=1e-300), name


def test_describe_of_nothing_finite() -> None:
    found = describe(np.full(10, np.nan), 3.0, 5)
    assert (found.count, found.kept, found.passes) == (0, 0, 0)
    assert np.isnan(found.median)
    assert np.isnan(found.mean)


def test_mad_std_and_moments_are_astropys_and_numpys() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(3.0, 2.0, 100_001)
    values[::97] = 1e4
    assert mad_std(values) == astropy_mad_std(values)
    count, mean, std = moments_in_range(values, 0.0, 6.0)
    inside = values[(values >= 0.0) & (values <= 6.0)]
    assert count == inside.size
    assert mean == pytest.approx(np.mean(inside), rel=1e-13)
    assert std == pytest.approx(np.std(inside), rel=1e-12)
