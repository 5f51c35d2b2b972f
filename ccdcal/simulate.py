"""A small, realistic, deterministic raw night for demos and tests (``ccdcal simulate DIR``).

:func:`simulate_night` writes the seed's raw layout::

    DIR/BIAS/Bias_001.fits ...
    DIR/DARK/Dark_2s_001.fits ... Dark_300s_005.fits
    DIR/FLAT/Flat_R_001.fits ... Flat_Ha_005.fits
    DIR/LIGHT/Light_001.fits ...      (numbered across filters, in time order)

The camera is a cooled monochrome CMOS (a ``ZWO ASI294MM Pro`` binned 2x2, gain 120, offset 30,
set point -10 °C) and the headers are the ones N.I.N.A. writes (same keywords, order and comments;
``uint16`` pixels stored as ``BITPIX = 16`` with ``BZERO = 32768``). Everything is drawn from a
NumPy ``Generator`` seeded with ``seed``: the same seed gives byte-identical files, and the fixed
patterns of the camera and the sky (column pattern, hot pixels, vignetting centre, dust donut,
star field) depend on the seed and the image shape only, not on how many frames are asked for.

The signal model, in electrons then ADU (``egain`` electrons per ADU)::

    bias_map  = bias_level + column_pattern                              [ADU, fixed]
    dark_rate = dark_current + hot pixels                                [e-/s/px, fixed]
    flat      = vignetting * dust_donut * (1 + PRNU)                     [1 at the optical centre]
    noise     = N(0, read_noise)                                         [ADU, each frame]
    dark_e    = Poisson(dark_rate * t)                                   [e-]
    bias      = bias_map + noise
    dark      = bias_map + dark_e / egain + noise
    flat_k    = bias_map + (Poisson(level_k * egain * flat) + dark_e) / egain + noise
    light     = bias_map + (Poisson((sky + stars) * t * flat) + dark_e) / egain + noise

each rounded and clipped to 0..65535. :attr:`SimulatedNight.truth` holds every parameter so tests
can check numbers; the pure functions below (:func:`vignetting`, :func:`dust_donut`,
:func:`flat_pattern`, :func:`gaussian_stars`, :func:`dark_rate_map`, :func:`read_out`,
:func:`to_uint16`) recompute the noiseless parts from it.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from ccdcal.errors import UsageError

__all__ = [
    "SimulatedNight",
    "column_pattern",
    "dark_rate_map",
    "dust_donut",
    "flat_pattern",
    "gaussian_stars",
    "read_out",
    "simulate_night",
    "to_uint16",
    "vignetting",
]

FloatArray = NDArray[np.float64]

# --- The camera, the telescope, the site and the night (fixed; the seed draws the rest) -----------

INSTRUMENT = "ZWO ASI294MM Pro"
SOFTWARE = "N.I.N.A. 3.1.2.9001"
GAIN = 120
OFFSET = 30
EGAIN = 0.25
"""Electrons per ADU at gain 120 in the 16-bit file's units."""
BINNING = 2
PIXEL_SIZE_UM = 4.63
"""Binned pixel size (2 x 2.315 µm)."""
SET_TEMP = -10.0
CCD_TEMP_SPREAD = 0.25
"""CCD-TEMP is SET-TEMP plus a uniform draw in ±this, written to 0.1 °C (so always within ±0.3)."""
READOUT_MODE = "Normal"
USB_LIMIT = 40

BIAS_LEVEL = 500.0
"""Mean bias level [ADU]."""
READ_NOISE = 3.5
"""Gaussian read noise [ADU]."""
COLUMN_SIGMA = 1.0
"""Standard deviation of the fixed column pattern [ADU] (zero mean)."""
DARK_CURRENT = 0.02
"""Dark current of a normal pixel [e-/s/px]."""
N_HOT_PIXELS = 24
HOT_RATE_RANGE = (0.5, 5.0)
"""Dark current of the hot pixels [e-/s], drawn log-uniformly."""
PRNU_SIGMA = 0.005
"""Pixel response non-uniformity (relative standard deviation)."""
VIGNETTING_STRENGTH = 0.25
"""Fractional light loss at the half-diagonal distance from the optical centre."""
DUST_DEPTH = 0.06
"""Fractional light loss at the ring of the dust donut."""

TELESCOPE = "Sky-Watcher Esprit 100ED"
FOCAL_LENGTH_MM = 550.0
FOCAL_RATIO = 5.5
SITE = {"SITEELEV": 520.0, "SITELAT": 48.1374, "SITELONG": 11.5755}
FILTER_WHEEL = "ZWO EFW"
TARGET = "M 51"
TARGET_RA_DEG = 202.469625
TARGET_DEC_DEG = 47.195258

FLATS: dict[str, tuple[float, float]] = {"R": (2.0, 25000.0), "Ha": (5.0, 21000.0)}
"""Filter -> (flat exposure [s], flat level above bias at the optical centre [ADU])."""
FLAT_LEVEL_JITTER = 0.02
"""Each flat's level is the filter's level times 1 + a uniform draw in ±this."""
LIGHTS: dict[str, tuple[float, float, float]] = {"R": (60.0, 5.0, 1.0), "Ha": (300.0, 0.2, 0.05)}
"""Filter -> (light exposure [s], sky [e-/s/px], star throughput relative to R)."""
N_STARS = 40
STAR_RATE_RANGE = (20.0, 2000.0)
"""Total star signal in R [e-/s], drawn log-uniformly."""
STAR_FWHM = 3.0
"""Gaussian FWHM of the stars [px]."""
STAR_MIN_SEPARATION = 12.0
"""Minimum distance between two stars [px], so that none blend."""
DITHER_MAX = 3.0
"""Each light is shifted by a uniform draw in ±this [px] on each axis."""

NIGHT = "2026-03-14"
UTC_OFFSET = timedelta(hours=1)
"""Local time of the site (CET, before the switch to summer time)."""
_NIGHT_UTC = datetime(2026, 3, 14, tzinfo=UTC)
BIAS_START = _NIGHT_UTC + timedelta(hours=17, minutes=2)
FLAT_START = _NIGHT_UTC + timedelta(hours=17, minutes=50)
LIGHT_START = _NIGHT_UTC + timedelta(hours=19, minutes=20)
LIGHT_END = _NIGHT_UTC + timedelta(days=1, hours=3, minutes=40)
READOUT_S = 1.2
"""Download time between two frames [s]."""

DARK_EXPTIMES = sorted({e for e, _ in FLATS.values()} | {e for e, _, _ in LIGHTS.values()})
"""Darks are taken at the flats' and the lights' exposures [s]."""

KIND_FOLDERS = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "LIGHT"}
_MIN_SIDE = 32


# --- Result ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedNight:
    """What :func:`simulate_night` wrote.

    Attributes
    ----------
    root : Path
        The night's folder (absolute), holding ``BIAS/``, ``DARK/``, ``FLAT/`` and ``LIGHT/``.
    files : dict of str to list of Path
        ``'bias'``, ``'dark'``, ``'flat'``, ``'light'`` -> the files written, sorted.
    truth : dict of str to Any
        Every parameter used: camera (``egain``, ``bias_level``, ``read_noise``, ``column_pattern``,
        ``dark_current``, ``hot_pixels`` as ``(y, x, e-/s)``), flat field (``vignetting``,
        ``dust``, ``prnu_sigma``, ``flat_levels``), sky (``sky_rate``, ``sky_adu``), stars
        (``stars`` as ``(y, x, R e-/s)``, ``star_sigma``), exposures, and ``frames``: for each file,
        by its path relative to ``root`` (``'LIGHT/Light_001.fits'``), its kind, exposure, filter,
        times, CCD-TEMP, flat level and dither. Pixel coordinates are 0-based NumPy
        ``(row, column)``.
    """

    root: Path
    files: dict[str, list[Path]]
    truth: dict[str, Any] = field(repr=False)


# --- Physics: pure functions over arrays ----------------------------------------------------------


def column_pattern(n_columns: int, sigma: float, rng: np.random.Generator) -> FloatArray:
    """Draw a fixed column pattern of a CMOS read-out.

    Parameters
    ----------
    n_columns : int
        Number of image columns.
    sigma : float
        Standard deviation of the column offsets [ADU].
    rng : numpy.random.Generator
        Source of the draw.

    Returns
    -------
    ndarray of float64, shape (n_columns,)
        Column offsets [ADU] with zero mean exactly, to add to every row.
    """
    offsets = rng.normal(0.0, sigma, n_columns)
    return np.asarray(offsets - offsets.mean(), dtype=np.float64)


def _radius(shape: tuple[int, int], center: tuple[float, float]) -> FloatArray:
    """Distance of every pixel centre from ``center`` = (row, column) [px]."""
    yy, xx = np.indices(shape, dtype=np.float64)
    return np.asarray(np.hypot(yy - center[0], xx - center[1]), dtype=np.float64)


def half_diagonal(shape: tuple[int, int]) -> float:
    """Distance from the geometric centre of an image of ``shape`` to a corner pixel [px]."""
    return math.hypot((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)


def vignetting(
    shape: tuple[int, int],
    center: tuple[float, float],
    strength: float,
    radius: float | None = None,
) -> FloatArray:
    """Radial vignetting: relative illumination ``1 - strength * (r / radius)**2``.

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, columns).
    center : tuple of float
        Optical centre (row, column), 0-based; the illumination is 1 there.
    strength : float
        Fractional light loss at distance ``radius`` from the centre.
    radius : float, optional
        Reference distance [px]; default :func:`half_diagonal` of ``shape``.

    Returns
    -------
    ndarray of float64, shape ``shape``
        Relative illumination, floored at 0.05.
    """
    ref = half_diagonal(shape) if radius is None else radius
    r = _radius(shape, center)
    return np.asarray(np.maximum(1.0 - strength * (r / ref) ** 2, 0.05), dtype=np.float64)


def dust_donut(
    shape: tuple[int, int], center: tuple[float, float], radius: float, width: float, depth: float
) -> FloatArray:
    """The out-of-focus shadow of a dust mote on the filter: a dark ring.

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, columns).
    center : tuple of float
        Centre of the donut (row, column).
    radius : float
        Radius of the ring [px].
    width : float
        Gaussian half-width (sigma) of the ring [px].
    depth : float
        Fractional light loss on the ring.

    Returns
    -------
    ndarray of float64, shape ``shape``
        Transmission ``1 - depth * exp(-((r - radius) / width)**2 / 2)``.
    """
    r = _radius(shape, center)
    return np.asarray(1.0 - depth * np.exp(-0.5 * ((r - radius) / width) ** 2), dtype=np.float64)


def flat_pattern(
    shape: tuple[int, int],
    vignetting_params: dict[str, Any],
    dust_params: dict[str, Any],
    prnu: FloatArray | None = None,
) -> FloatArray:
    """The relative response of each pixel to uniform light (what a normalised flat estimates).

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, columns).
    vignetting_params : dict
        Keyword arguments of :func:`vignetting` (``center``, ``strength``, ``radius``), as in
        ``truth['vignetting']``.
    dust_params : dict
        Keyword arguments of :func:`dust_donut` (``center``, ``radius``, ``width``, ``depth``),
        as in ``truth['dust']``.
    prnu : ndarray, optional
        Relative pixel gain deviations (mean ~0); omitted means none.

    Returns
    -------
    ndarray of float64, shape ``shape``
        ``vignetting * dust_donut * (1 + prnu)``.
    """
    pattern = vignetting(shape, **vignetting_params) * dust_donut(shape, **dust_params)
    if prnu is not None:
        pattern = pattern * (1.0 + prnu)
    return np.asarray(pattern, dtype=np.float64)


def gaussian_stars(
    shape: tuple[int, int],
    ys: Sequence[float] | FloatArray,
    xs: Sequence[float] | FloatArray,
    fluxes: Sequence[float] | FloatArray,
    sigma: float,
) -> FloatArray:
    """Render circular Gaussian stars.

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, columns).
    ys, xs : array_like of float
        Star centres (row, column), 0-based.
    fluxes : array_like of float
        Total signal of each star (any unit; the image is in the same unit per pixel).
    sigma : float
        Gaussian standard deviation [px].

    Returns
    -------
    ndarray of float64, shape ``shape``
        Sum of the stars; each is sampled at pixel centres within 5 sigma and normalised so the
        pixels of its stamp sum to its flux (less where the stamp leaves the image).
    """
    image = np.zeros(shape, dtype=np.float64)
    half = max(1, math.ceil(5.0 * sigma))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    for y, x, flux in zip(ys, xs, fluxes, strict=True):
        iy, ix = round(float(y)), round(float(x))
        gy = np.exp(-0.5 * ((iy + offsets - y) / sigma) ** 2)
        gx = np.exp(-0.5 * ((ix + offsets - x) / sigma) ** 2)
        stamp = np.outer(gy, gx)
        stamp *= float(flux) / stamp.sum()
        y0, x0 = iy - half, ix - half
        ry0, rx0 = max(y0, 0), max(x0, 0)
        ry1, rx1 = min(y0 + stamp.shape[0], shape[0]), min(x0 + stamp.shape[1], shape[1])
        if ry0 >= ry1 or rx0 >= rx1:
            continue
        image[ry0:ry1, rx0:rx1] += stamp[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0]
    return image


def dark_rate_map(
    shape: tuple[int, int], dark_current: float, hot_pixels: Sequence[tuple[int, int, float]]
) -> FloatArray:
    """Dark current of every pixel.

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, columns).
    dark_current : float
        Dark current of a normal pixel [e-/s].
    hot_pixels : sequence of (int, int, float)
        ``(row, column, e-/s)`` of each hot pixel; its rate replaces the normal one.

    Returns
    -------
    ndarray of float64, shape ``shape``
        Dark current [e-/s/px]; the dark signal of an exposure of ``t`` seconds is this times ``t``.
    """
    rate = np.full(shape, dark_current, dtype=np.float64)
    for y, x, hot in hot_pixels:
        rate[y, x] = hot
    return rate


def read_out(
    electrons: FloatArray,
    bias_map: FloatArray,
    egain: float,
    read_noise: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Convert collected electrons to ADU the way the camera's read-out does (before quantisation).

    Parameters
    ----------
    electrons : ndarray
        Electrons collected in each pixel (already Poisson-distributed).
    bias_map : ndarray
        Bias level of each pixel, including the column pattern [ADU].
    egain : float
        Electrons per ADU.
    read_noise : float
        Gaussian read noise [ADU].
    rng : numpy.random.Generator
        Source of the read noise.

    Returns
    -------
    ndarray of float64
        ``bias_map + electrons / egain + N(0, read_noise)`` [ADU].
    """
    noise = rng.normal(0.0, read_noise, electrons.shape)
    return np.asarray(bias_map + electrons / egain + noise, dtype=np.float64)


def to_uint16(adu: FloatArray) -> NDArray[np.uint16]:
    """Quantise to the camera's 16-bit output: round to the nearest integer and clip to 0..65535.

    Parameters
    ----------
    adu : ndarray of float

    Returns
    -------
    ndarray of uint16
    """
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


# --- The night's plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """One exposure to simulate and write."""

    kind: str
    relpath: str
    exptime: float
    start: datetime
    ccd_temp: float
    filter: str | None = None
    flat_level: float | None = None
    dither: tuple[float, float] | None = None


@dataclass(frozen=True)
class _Fixed:
    """The fixed patterns of the camera, the optics and the sky for one seed and shape."""

    bias_map: FloatArray
    dark_rate: FloatArray
    flat: FloatArray
    star_ys: FloatArray
    star_xs: FloatArray
    star_rates: FloatArray
    truth: dict[str, Any]


def _fmt_exptime(seconds: float) -> str:
    """``60.0`` -> ``'60'``, ``2.5`` -> ``'2.5'`` (for file names)."""
    return f"{seconds:g}"


def _star_positions(
    shape: tuple[int, int], margin: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Up to :data:`N_STARS` star centres at least ``margin`` from the edges and
    :data:`STAR_MIN_SEPARATION` apart (fewer when the image is too small to hold them)."""
    ys: list[float] = []
    xs: list[float] = []
    for _ in range(100 * N_STARS):
        if len(ys) == N_STARS:
            break
        y = float(rng.uniform(margin, shape[0] - 1 - margin))
        x = float(rng.uniform(margin, shape[1] - 1 - margin))
        if all(math.hypot(y - oy, x - ox) >= STAR_MIN_SEPARATION for oy, ox in zip(ys, xs, strict=True)):
            ys.append(y)
            xs.append(x)
    return np.array(ys, dtype=np.float64), np.array(xs, dtype=np.float64)


def _fixed_patterns(shape: tuple[int, int], rng: np.random.Generator) -> _Fixed:
    """Draw the camera's fixed patterns, the flat-field geometry and the star field."""
    ny, nx = shape
    columns = column_pattern(nx, COLUMN_SIGMA, rng)
    bias_map = np.broadcast_to(BIAS_LEVEL + columns, shape).astype(np.float64)

    flat_index = rng.choice(ny * nx, size=min(N_HOT_PIXELS, ny * nx), replace=False)
    lo, hi = math.log(HOT_RATE_RANGE[0]), math.log(HOT_RATE_RANGE[1])
    hot_rates = np.exp(rng.uniform(lo, hi, flat_index.size))
    hot_pixels = sorted(
        (int(i // nx), int(i % nx), round(float(r), 4)) for i, r in zip(flat_index, hot_rates, strict=True)
    )
    dark_rate = dark_rate_map(shape, DARK_CURRENT, hot_pixels)

    vig: dict[str, Any] = {
        "center": (
            round((ny - 1) / 2.0 + rng.uniform(-0.05, 0.05) * ny, 2),
            round((nx - 1) / 2.0 + rng.uniform(-0.05, 0.05) * nx, 2),
        ),
        "strength": VIGNETTING_STRENGTH,
        "radius": half_diagonal(shape),
    }
    # The dust mote's shadow lies away from the optical centre, where the flat level is defined.
    dust_radius = 0.05 * min(shape)
    dust_distance = rng.uniform(0.25, 0.4) * min(shape)
    dust_angle = rng.uniform(0.0, 2.0 * math.pi)
    dust = {
        "center": (
            round(vig["center"][0] + dust_distance * math.sin(dust_angle), 2),
            round(vig["center"][1] + dust_distance * math.cos(dust_angle), 2),
        ),
        "radius": dust_radius,
        "width": 0.3 * dust_radius,
        "depth": DUST_DEPTH,
    }
    prnu = rng.normal(0.0, PRNU_SIGMA, shape)
    flat = flat_pattern(shape, vig, dust, prnu)

    sigma = STAR_FWHM / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    margin = math.ceil(5.0 * sigma + DITHER_MAX) + 1
    star_ys, star_xs = _star_positions(shape, margin, rng)
    lo, hi = math.log(STAR_RATE_RANGE[0]), math.log(STAR_RATE_RANGE[1])
    star_rates = np.exp(rng.uniform(lo, hi, star_ys.size))

    truth: dict[str, Any] = {
        "bias_level": BIAS_LEVEL,
        "read_noise": READ_NOISE,
        "column_sigma": COLUMN_SIGMA,
        "column_pattern": columns,
        "dark_current": DARK_CURRENT,
        "hot_pixels": hot_pixels,
        "vignetting": vig,
        "dust": dust,
        "prnu_sigma": PRNU_SIGMA,
        "stars": [
            (float(y), float(x), float(r)) for y, x, r in zip(star_ys, star_xs, star_rates, strict=True)
        ],
        "star_fwhm": STAR_FWHM,
        "star_sigma": sigma,
    }
    return _Fixed(bias_map, dark_rate, flat, star_ys, star_xs, star_rates, truth)


def _ccd_temp(rng: np.random.Generator) -> float:
    """CCD-TEMP as the camera reports it: near the set point, to 0.1 °C."""
    return round(SET_TEMP + float(rng.uniform(-CCD_TEMP_SPREAD, CCD_TEMP_SPREAD)), 1)


def _after(moment: datetime, seconds: float, rng: np.random.Generator) -> datetime:
    """``moment`` plus ``seconds`` plus a random fraction of a second (microsecond resolution)."""
    return moment + timedelta(microseconds=round((seconds + float(rng.uniform(0.0, 0.4))) * 1e6))


def _light_filters(n_light: int) -> list[str]:
    """The filter of each light in time order: first half (rounded up) R, then Ha."""
    n_first = (n_light + 1) // 2
    return ["R"] * n_first + ["Ha"] * (n_light - n_first)


def _plan(n_bias: int, n_dark: int, n_flat: int, n_light: int, rng: np.random.Generator) -> list[_Frame]:
    """Every exposure in time order: bias, darks, flats at dusk; lights through the night."""
    frames: list[_Frame] = []
    t = _after(BIAS_START, 0.0, rng)
    for i in range(1, n_bias + 1):
        frames.append(_Frame("bias", f"BIAS/Bias_{i:03d}.fits", 0.0, t, _ccd_temp(rng)))
        t = _after(t, READOUT_S, rng)

    t = _after(t, 30.0, rng)
    for exptime in DARK_EXPTIMES:
        for i in range(1, n_dark + 1):
            name = f"DARK/Dark_{_fmt_exptime(exptime)}s_{i:03d}.fits"
            frames.append(_Frame("dark", name, exptime, t, _ccd_temp(rng)))
            t = _after(t, exptime + READOUT_S, rng)

    t = _after(max(t, FLAT_START), 0.0, rng)
    for filt, (exptime, level) in FLATS.items():
        for i in range(1, n_flat + 1):
            jitter = 1.0 + float(rng.uniform(-FLAT_LEVEL_JITTER, FLAT_LEVEL_JITTER))
            frames.append(
                _Frame(
                    "flat",
                    f"FLAT/Flat_{filt}_{i:03d}.fits",
                    exptime,
                    t,
                    _ccd_temp(rng),
                    filter=filt,
                    flat_level=round(level * jitter, 3),
                )
            )
            t = _after(t, exptime + READOUT_S, rng)
        t = _after(t, 8.0, rng)  # filter change

    filters = _light_filters(n_light)
    longest = max((LIGHTS[f][0] for f in filters), default=0.0)
    spacing = max((LIGHT_END - LIGHT_START).total_seconds() / max(n_light, 1), longest + 30.0)
    for i, filt in enumerate(filters):
        start = _after(LIGHT_START, i * spacing + float(rng.uniform(0.0, 20.0)), rng)
        dither = (
            round(float(rng.uniform(-DITHER_MAX, DITHER_MAX)), 3),
            round(float(rng.uniform(-DITHER_MAX, DITHER_MAX)), 3),
        )
        frames.append(
            _Frame(
                "light",
                f"LIGHT/Light_{i + 1:03d}.fits",
                LIGHTS[filt][0],
                start,
                _ccd_temp(rng),
                filter=filt,
                dither=dither,
            )
        )
    return frames


# --- Exposures ------------------------------------------------------------------------------------


def _expose(frame: _Frame, fixed: _Fixed, rng: np.random.Generator) -> NDArray[np.uint16]:
    """Simulate the pixels of one frame."""
    shape = fixed.bias_map.shape
    electrons = rng.poisson(fixed.dark_rate * frame.exptime).astype(np.float64)
    if frame.kind == "flat":
        assert frame.flat_level is not None
        electrons += rng.poisson(frame.flat_level * EGAIN * fixed.flat)
    elif frame.kind == "light":
        assert frame.filter is not None
        assert frame.dither is not None
        exptime, sky_rate, throughput = LIGHTS[frame.filter]
        stars = gaussian_stars(
            (shape[0], shape[1]),
            fixed.star_ys + frame.dither[0],
            fixed.star_xs + frame.dither[1],
            fixed.star_rates * throughput * exptime,
            fixed.truth["star_sigma"],
        )
        electrons += rng.poisson((sky_rate * exptime + stars) * fixed.flat)
    return to_uint16(read_out(electrons, fixed.bias_map, EGAIN, READ_NOISE, rng))


# --- Headers and files ----------------------------------------------------------------------------


def _fits_time(moment: datetime) -> str:
    """``2026-03-14T21:03:11.123456``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _hms(degrees: float) -> str:
    """Right ascension in degrees -> N.I.N.A.'s ``'HH MM SS'``."""
    total = round(degrees / 15.0 * 3600.0)
    return f"{total // 3600:02d} {total // 60 % 60:02d} {total % 60:02d}"


def _dms(degrees: float) -> str:
    """Declination in degrees -> N.I.N.A.'s ``'+DD MM SS'``."""
    sign = "-" if degrees < 0 else "+"
    total = round(abs(degrees) * 3600.0)
    return f"{sign}{total // 3600:02d} {total // 60 % 60:02d} {total % 60:02d}"


def _nina_header(frame: _Frame, shape: tuple[int, int]) -> fits.Header:
    """The primary header N.I.N.A. writes for ``frame``: same keywords, order and comments."""
    h = fits.Header()
    h["SIMPLE"] = (True, "C# FITS")
    h["BITPIX"] = (16, "")
    h["NAXIS"] = (2, "Dimensionality")
    h["NAXIS1"] = (shape[1], "")
    h["NAXIS2"] = (shape[0], "")
    h["BZERO"] = (32768, "")
    h["EXTEND"] = (True, "Extensions are permitted")
    h["IMAGETYP"] = (frame.kind.upper(), "Type of exposure")
    h["EXPOSURE"] = (frame.exptime, "[s] Exposure duration")
    h["EXPTIME"] = (frame.exptime, "[s] Exposure duration")
    h["DATE-LOC"] = (_fits_time(frame.start + UTC_OFFSET), "Time of observation (local)")
    h["DATE-OBS"] = (_fits_time(frame.start), "Time of observation (UTC)")
    h["XBINNING"] = (BINNING, "X axis binning factor")
    h["YBINNING"] = (BINNING, "Y axis binning factor")
    h["GAIN"] = (GAIN, "Sensor gain")
    h["OFFSET"] = (OFFSET, "Sensor gain offset")
    h["EGAIN"] = (EGAIN, "[e-/ADU] Electrons per A/D unit")
    h["XPIXSZ"] = (PIXEL_SIZE_UM, "[um] Pixel X axis size")
    h["YPIXSZ"] = (PIXEL_SIZE_UM, "[um] Pixel Y axis size")
    h["INSTRUME"] = (INSTRUMENT, "Imaging instrument name")
    h["SET-TEMP"] = (SET_TEMP, "[degC] CCD temperature setpoint")
    h["CCD-TEMP"] = (frame.ccd_temp, "[degC] CCD temperature")
    h["READOUTM"] = (READOUT_MODE, "Sensor readout mode")
    h["USBLIMIT"] = (USB_LIMIT, "Camera-specific USB setting")
    h["TELESCOP"] = (TELESCOPE, "Name of telescope")
    h["FOCALLEN"] = (FOCAL_LENGTH_MM, "[mm] Focal length")
    h["FOCRATIO"] = (FOCAL_RATIO, "Focal ratio")
    if frame.kind == "light":
        assert frame.dither is not None
        scale_deg = 206.264806 * PIXEL_SIZE_UM / FOCAL_LENGTH_MM / 3600.0
        dec = TARGET_DEC_DEG + frame.dither[0] * scale_deg
        ra = TARGET_RA_DEG + frame.dither[1] * scale_deg / math.cos(math.radians(TARGET_DEC_DEG))
        h["RA"] = (round(ra, 6), "[deg] RA of telescope")
        h["DEC"] = (round(dec, 6), "[deg] Declination of telescope")
    h["SITEELEV"] = (SITE["SITEELEV"], "[m] Observation site elevation")
    h["SITELAT"] = (SITE["SITELAT"], "[deg] Observation site latitude")
    h["SITELONG"] = (SITE["SITELONG"], "[deg] Observation site longitude")
    if frame.filter is not None:
        h["FWHEEL"] = (FILTER_WHEEL, "Filter Wheel name")
        h["FILTER"] = (frame.filter, "Active filter name")
    if frame.kind == "light":
        h["OBJECT"] = (TARGET, "Name of the object of interest")
        h["OBJCTRA"] = (_hms(TARGET_RA_DEG), "[H M S] RA of imaged object")
        h["OBJCTDEC"] = (_dms(TARGET_DEC_DEG), "[D M S] Declination of imaged object")
    h["ROWORDER"] = ("TOP-DOWN", "FITS Image Orientation")
    h["EQUINOX"] = (2000.0, "Equinox of celestial coordinate system")
    h["SWCREATE"] = (SOFTWARE, "Software that created this file")
    return h


def _write_atomic(path: Path, header: fits.Header, data: NDArray[np.uint16]) -> None:
    """Write a BITPIX 16 / BZERO 32768 image to a temporary name beside ``path``, then rename."""
    # Created empty with the usual permissions (0666 less the umask; mkstemp would make it 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        # StreamingHDU writes the header exactly as given (N.I.N.A.'s card order, BZERO after
        # NAXIS2); the stored integers are the unsigned values minus BZERO.
        stream = fits.StreamingHDU(tmp, header)
        stream.write((data ^ np.uint16(0x8000)).view(np.int16))
        stream.close()
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- The night ------------------------------------------------------------------------------------


def _check_arguments(
    seed: int, shape: tuple[int, int], counts: dict[str, int]
) -> tuple[int, tuple[int, int]]:
    """Validate the options; raise :class:`UsageError` naming the bad one."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, not {seed!r}")
    if (
        len(shape) != 2
        or any(isinstance(n, bool) or not isinstance(n, int | np.integer) for n in shape)
        or min(shape) < _MIN_SIDE
    ):
        raise UsageError(f"shape must be two integers of at least {_MIN_SIDE} pixels, not {shape!r}")
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise UsageError(f"{name} must be a non-negative integer, not {count!r}")
    return int(seed), (int(shape[0]), int(shape[1]))


def _prepare_root(directory: Path | str) -> Path:
    """Create the night's folder; refuse one that exists and is not an empty directory."""
    root = Path(directory).expanduser().resolve()
    if root.exists():
        if not root.is_dir():
            raise UsageError(f"{root} exists and is not a directory: choose a new folder to simulate into")
        if any(root.iterdir()):
            raise UsageError(f"{root} is not empty: choose a new or empty folder to simulate into")
    in_the_way = next((p for p in root.parents if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise UsageError(f"cannot create {root}: {in_the_way} is a file, not a folder; choose another folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in KIND_FOLDERS.values():
            (root / folder).mkdir()
    except OSError as exc:
        raise UsageError(
            f"cannot create {root}: {exc.strerror or exc}; choose a folder you can write in"
        ) from exc
    return root


def simulate_night(
    directory: Path | str,
    seed: int = 0,
    *,
    shape: tuple[int, int] = (240, 320),
    n_bias: int = 7,
    n_dark: int = 5,
    n_flat: int = 5,
    n_light: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> SimulatedNight:
    """Write a raw night of a cooled mono CMOS camera in the seed's ``BIAS/ DARK/ FLAT/ LIGHT/``.

    Parameters
    ----------
    directory : Path or str
        Folder to create (parents included). It may exist only if empty.
    seed : int, default 0
        Seed of the NumPy generator: the same seed (and options) gives byte-identical files.
    shape : tuple of int, default (240, 320)
        Image shape (rows, columns) = (NAXIS2, NAXIS1); at least 32 on each side.
    n_bias : int, default 7
        Number of bias frames.
    n_dark : int, default 5
        Number of darks at each exposure used by the flats (2 s, 5 s) and the lights (60 s, 300 s).
    n_flat : int, default 5
        Number of flats in each filter (R at 2 s, Ha at 5 s).
    n_light : int, default 3
        Number of lights: the first half (rounded up) in R at 60 s, the rest in Ha at 300 s,
        numbered ``Light_001`` ... in time order across filters.
    progress : callable, optional
        Called as ``progress(done, total)`` after each file is written.

    Returns
    -------
    SimulatedNight
        The folder, the files by kind and the parameters used (see :class:`SimulatedNight`).

    Raises
    ------
    ccdcal.errors.UsageError
        When ``directory`` exists and is not an empty folder, or an option is out of range.

    Notes
    -----
    The night is 2026-03-14 at a site at UTC+1: biases from 17:02 UTC, then darks (shortest
    first), flats at dusk from 17:50 UTC, lights spread from 19:20 UTC to 03:40 UTC the next day.
    With the defaults (40 files of 240 x 320 pixels) the night takes about 6 MB and a fraction of a
    second.
    """
    seed, shape = _check_arguments(
        seed, shape, {"n_bias": n_bias, "n_dark": n_dark, "n_flat": n_flat, "n_light": n_light}
    )
    root = _prepare_root(directory)

    # Separate streams, so the fixed patterns and the schedule do not depend on the frame counts.
    pattern_ss, plan_ss, noise_ss = np.random.SeedSequence(seed).spawn(3)
    fixed = _fixed_patterns(shape, np.random.default_rng(pattern_ss))
    frames = _plan(n_bias, n_dark, n_flat, n_light, np.random.default_rng(plan_ss))
    noise = np.random.default_rng(noise_ss)

    files: dict[str, list[Path]] = {kind: [] for kind in KIND_FOLDERS}
    frame_truth: dict[str, dict[str, Any]] = {}
    for done, frame in enumerate(frames, start=1):
        path = root / frame.relpath
        _write_atomic(path, _nina_header(frame, shape), _expose(frame, fixed, noise))
        files[frame.kind].append(path)
        frame_truth[frame.relpath] = {
            "kind": frame.kind,
            "exptime": frame.exptime,
            "filter": frame.filter,
            "date_obs": _fits_time(frame.start),
            "date_loc": _fits_time(frame.start + UTC_OFFSET),
            "ccd_temp": frame.ccd_temp,
            "flat_level": frame.flat_level,
            "dither": frame.dither,
        }
        if progress is not None:
            progress(done, len(frames))

    truth: dict[str, Any] = {
        "seed": seed,
        "shape": shape,
        "night": NIGHT,
        "utc_offset_hours": UTC_OFFSET.total_seconds() / 3600.0,
        "instrument": INSTRUMENT,
        "gain": GAIN,
        "offset": OFFSET,
        "egain": EGAIN,
        "binning": (BINNING, BINNING),
        "pixel_size_um": PIXEL_SIZE_UM,
        "set_temp": SET_TEMP,
        "ccd_temp_spread": CCD_TEMP_SPREAD,
        **fixed.truth,
        "dark_exptimes": list(DARK_EXPTIMES),
        "flat_exptimes": {filt: exptime for filt, (exptime, _) in FLATS.items()},
        "flat_levels": {filt: level for filt, (_, level) in FLATS.items()},
        "flat_level_jitter": FLAT_LEVEL_JITTER,
        "light_exptimes": {filt: exptime for filt, (exptime, _, _) in LIGHTS.items()},
        "sky_rate": {filt: sky for filt, (_, sky, _) in LIGHTS.items()},
        "sky_adu": {filt: sky * exptime / EGAIN for filt, (exptime, sky, _) in LIGHTS.items()},
        "star_throughput": {filt: tp for filt, (_, _, tp) in LIGHTS.items()},
        "target": {"object": TARGET, "ra_deg": TARGET_RA_DEG, "dec_deg": TARGET_DEC_DEG},
        "frames": frame_truth,
    }
    return SimulatedNight(
        root=root, files={kind: sorted(paths) for kind, paths in files.items()}, truth=truth
    )
