"""The combine kernel: a sigma-clipped median of a stack of frames, exactly as astropy defines it.

Definition (docs/design.md, Science): the combined pixel equals ::

    np.ma.median(astropy.stats.sigma_clip(stack, sigma=3, maxiters=5, cenfunc="median",
                                          stdfunc="mad_std", axis=0), axis=0)

on the same float data. With string ``cenfunc``/``stdfunc`` and an ``axis``, astropy runs its compiled
path (``astropy/stats/src/compute_bounds.c`` called by ``SigmaClip._sigmaclip_fast``); that path, not
the Python one, is the definition. Per pixel it does:

1. Non-finite samples (NaN, ±inf) are masked before anything else and never take part.
2. Iterate on the set of kept samples: ``median`` (mean of the two middle values for an even count),
   ``std = median(|x - median|) * 1.482602218505602`` (``mad_std``; ``std`` is the population standard
   deviation about the mean), bounds ``median - sigma_lower*std`` and ``median + sigma_upper*std``;
   keep the samples with ``lower <= x <= upper``. Stop when that keeps every sample (converged) or none,
   or after ``maxiters`` passes that removed something (a ``maxiters`` of 5 computes at most 5 pairs of
   bounds). The bounds of the last pass computed are the result, even when that pass removed samples.
3. Those final bounds are applied to *all* the original finite samples (a sample rejected by an earlier,
   narrower pass comes back when the final bounds include it): a sample is masked when
   ``x < lower or x > upper``.
4. The combined value is the median of the kept samples.

Consequences that this module reproduces: a constant pixel has ``mad_std == 0``, so its bounds are the
constant itself and every sample equal to it is kept (a pixel whose majority is one value keeps only that
value); an all-NaN pixel has no bounds (astropy returns NaN bounds) and its median is *masked* (the masked
array's hidden data is 0.0): ccdcal writes NaN there. The rejected count of a pixel is the number of
samples the definition masks, non-finite inputs included (``n`` minus the samples the median is taken
of). The numbers are the C code's: medians ``0.5 * (upper middle + lower middle)``, deviations
``fabs(x - median)``, the factor ``1.482602218505602``, ``std`` summed in the samples' original order,
bounds ``median -/+ sigma * std``, all in float64 without fused multiply-adds, so the same samples are
clipped. Integer stacks are clipped as float64 (astropy's ``astype(float)``), float32 ones as their exact
float64 values. The combined value is computed in float64 and rounded to float32; ``np.ma.median`` keeps
the input's float type, so a float32 stack's definition averages the two middle values in float32 (equal
to within one float32 step) and a float16 stack's in float16 (ccdcal then equals the definition on the
same numbers widened to float32).

The combine's uncertainty is computed in the same pass, as ``ccdproc.Combiner.median_combine`` computes
it from the samples kept: ``1.482602218505602 × median(|x - median|) / √k`` of the ``k`` samples the
median is taken of, in float64 and rounded to float32 (NaN where there is none), whatever the clipping's
dispersion (ccdproc's ``sigma_func`` is ``mad_std``).

Where the work is done: :mod:`ccdcal.kernels.clipkernel` (the numba kernel, which converts each sample
to float64 on the fly, so a stack is never copied to float64; its docstring describes the algorithm),
:mod:`ccdcal.kernels.sortnet` (the sorting networks it applies), :mod:`ccdcal.kernels.clipblock` (its
per-frame arguments) and :mod:`ccdcal.kernels.fitsblocks` (reading FITS files in row blocks).

``combine_files`` reads FITS files in row blocks (each file read once, peak memory bounded by
``mem_limit``), decoding the big-endian data unit and applying BSCALE/BZERO/BLANK inside the kernel with
astropy's arithmetic, and optionally computes ``(frame - offset) * scale`` per frame before clipping.
With ``rows=(r0, r1)`` it combines only that band of rows: every pixel is combined on its own samples, so
bands combined anywhere (:func:`ccdcal.kernels.bands.plan_bands`; Dask workers, :mod:`ccdcal.masters.combine`)
and put together by :class:`ccdcal.kernels.bands.Stitcher` equal the whole combine bit for bit.
"""

from __future__ import annotations

import contextlib
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ccdcal.errors import UsageError
from ccdcal.limits import ITERATIONS, SIGMA

if TYPE_CHECKING:
    from ccdcal.kernels.clipblock import Decoding, Transform
    from ccdcal.kernels.framestats import FrameSamples

# The engine (clipblock and its numba kernel, fitsblocks and astropy) is imported where a combine runs:
# the planners and `ccdcal status` import ClipParams from here without it (start-up time).

__all__ = [
    "ClipParams",
    "CombineResult",
    "combine_files",
    "sigma_clipped_median",
    "sigma_clipped_median_deviation",
]

#: Largest stack: the rejected-count image is uint16.
MAX_FRAMES = 65535
#: Bytes a pixel of a combine's results: the float32 image, its float32 uncertainty, the uint16 counts.
RESULT_BYTES = 4 + 4 + 2


# --------------------------------------------------------------------------------------------------
# Parameters and results


@dataclass(frozen=True)
class ClipParams:
    """Sigma-clipping parameters of the combine.

    Parameters
    ----------
    sigma_lower, sigma_upper : float
        Clip samples below ``median - sigma_lower * std`` and above ``median + sigma_upper * std``.
        Within :data:`ccdcal.limits.SIGMA` (0.5 to 100, ``--sigma``).
    maxiters : int
        Maximum number of clipping passes (1 to 100: :data:`ccdcal.limits.ITERATIONS`), counted as
        astropy counts them: a pass that removes nothing ends the iterations (converged) and does not
        count.
    cenfunc : str
        Centre function; only ``"median"``.
    stdfunc : str
        Dispersion: ``"mad_std"`` (``1.482602218505602 × median absolute deviation``) or ``"std"``
        (population standard deviation about the mean, as astropy's C code computes it).

    Raises
    ------
    ccdcal.errors.UsageError
        When a value is outside the above.
    """

    sigma_lower: float = 3.0
    sigma_upper: float = 3.0
    maxiters: int = 5
    cenfunc: str = "median"
    stdfunc: str = "mad_std"

    def __post_init__(self) -> None:
        SIGMA.check(self.sigma_lower)
        SIGMA.check(self.sigma_upper)
        iters = self.maxiters
        if isinstance(iters, bool) or not isinstance(iters, numbers.Integral):
            raise UsageError(f"--iterations must be a whole number, not {iters!r}")
        ITERATIONS.check(iters)
        if self.cenfunc != "median":
            raise UsageError(f"cenfunc must be 'median' (the only centre supported), not {self.cenfunc!r}")
        if self.stdfunc not in ("mad_std", "std"):
            raise UsageError(f"stdfunc must be 'mad_std' or 'std', not {self.stdfunc!r}")

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-ready values, for the catalog.

        Returns
        -------
        dict
            ``method`` (``"sigma_clipped_median"``), the five fields, and ``definition`` naming the
            reference implementation the result matches.
        """
        return {
            "method": "sigma_clipped_median",
            "sigma_lower": float(self.sigma_lower),
            "sigma_upper": float(self.sigma_upper),
            "maxiters": int(self.maxiters),
            "cenfunc": self.cenfunc,
            "stdfunc": self.stdfunc,
            "definition": "astropy.stats.sigma_clip compiled path (last bounds applied to all samples)"
            " then numpy.ma.median",
        }


@dataclass(frozen=True)
class CombineResult:
    """What ``combine_files`` returns.

    Attributes
    ----------
    image : numpy.ndarray
        The combined image, float32 (NaN where no input sample was finite).
    rejected : numpy.ndarray
        Samples masked per pixel, uint16: clipped plus non-finite (the definition's mask count).
    rejected_fraction : float
        ``rejected.sum() / (n_inputs * image.size)``.
    uncertainty : numpy.ndarray
        The combine's uncertainty, float32 (see the module docstring; NaN where ``image`` is).
    n_inputs : int
        Number of frames combined.
    n_nonfinite : int
        Number of non-finite input samples (after offset and scale), all of them counted in ``rejected``;
        the saturated ones included.
    n_saturated : int
        Number of input samples at or above their frame's saturation level (left out as non-finite).
    block_rows : int
        Image rows read per block.
    n_blocks : int
        Number of blocks the image was read in.
    params : ClipParams
        The clipping parameters used.
    first_row : int
        Image row of ``image[0]``: 0, or the first row of the band combined (``combine_files(rows=)``).
    samples : FrameSamples or None
        The inputs' grid samples and their differences from ``image`` (``combine_files(measure=True)``,
        :mod:`ccdcal.kernels.framestats`), else ``None``.
    """

    image: np.ndarray
    rejected: np.ndarray
    rejected_fraction: float
    uncertainty: np.ndarray
    n_inputs: int
    n_nonfinite: int = 0
    n_saturated: int = 0
    block_rows: int = 0
    n_blocks: int = 0
    params: ClipParams = field(default_factory=ClipParams)
    first_row: int = 0
    samples: FrameSamples | None = None


# --------------------------------------------------------------------------------------------------
# The kernel on one block


def _run_kernel(
    block: np.ndarray,
    decoding: Decoding,
    transform: Transform,
    rows: slice,
    params: ClipParams,
    out: np.ndarray,
    rejected: np.ndarray,
    nonfinite: np.ndarray,
    saturated: np.ndarray,
    uncertainty: np.ndarray,
) -> None:
    """:func:`ccdcal.kernels.clipblock.clip_block` with the clipping parameters ``params``."""
    # Imported here for start-up time: the numba kernel loads when a combine runs.
    from ccdcal.kernels.clipblock import clip_block

    clip_block(
        block,
        decoding,
        transform,
        rows,
        out,
        rejected,
        nonfinite,
        saturated,
        uncertainty,
        sigma_lower=float(params.sigma_lower),
        sigma_upper=float(params.sigma_upper),
        maxiters=int(params.maxiters),
        use_mad=params.stdfunc == "mad_std",
    )


# --------------------------------------------------------------------------------------------------
# In memory


def _native_stack(stack: Any) -> np.ndarray:
    """The stack as a C-contiguous native-endian real array the kernel can read (copied only if needed)."""
    arr = np.asarray(stack)
    if arr.ndim != 3:
        raise UsageError(f"a stack must have 3 dimensions (frames, rows, columns), not shape {arr.shape}")
    if arr.shape[0] < 1:
        raise UsageError("a stack needs at least one frame")
    if arr.shape[0] > MAX_FRAMES:
        raise UsageError(f"at most {MAX_FRAMES} frames can be combined, not {arr.shape[0]}")
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise UsageError(f"a stack must hold integers or real floats, not {arr.dtype}")
    if kind == "f" and arr.dtype.itemsize not in (4, 8):
        # float16 widens exactly; long double rounds to float64 as astropy's astype(float) does.
        arr = arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def sigma_clipped_median(
    stack: np.ndarray, params: ClipParams = ClipParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped median along the first axis of an (n, ny, nx) stack.

    Equal to ``np.ma.median(astropy.stats.sigma_clip(stack, sigma=..., maxiters=...,
    cenfunc='median', stdfunc='mad_std', axis=0), axis=0)`` (see the module docstring for the rules),
    computed in float64 and returned as float32.

    Parameters
    ----------
    stack : numpy.ndarray
        Frames along axis 0, any integer or real float dtype. Read as it is (each sample converted to
        float64 inside the kernel); copied only when not C-contiguous, not native-endian, float16 or
        long double.
    params : ClipParams
        Clipping parameters.

    Returns
    -------
    image : numpy.ndarray
        (ny, nx) float32 combined image; NaN where a pixel has no finite sample.
    rejected : numpy.ndarray
        (ny, nx) uint16 number of samples masked per pixel, non-finite ones included (``n`` minus the
        number of samples the median was taken of).

    Raises
    ------
    ccdcal.errors.UsageError
        If the stack is not 3-D numeric with 1 to 65535 frames.
    """
    image, rejected, _ = sigma_clipped_median_deviation(stack, params)
    return image, rejected


def sigma_clipped_median_deviation(
    stack: np.ndarray, params: ClipParams = ClipParams(), saturation: Sequence[float | None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sigma_clipped_median` and the combine's uncertainty, in one pass.

    Parameters
    ----------
    stack : numpy.ndarray
        Frames along axis 0, as for :func:`sigma_clipped_median`.
    params : ClipParams
        Clipping parameters.
    saturation : sequence of (float or None), optional
        Per frame, its saturation level: samples at or above it are left out (masked, as non-finite
        samples are); ``None``: none.

    Returns
    -------
    image, rejected : numpy.ndarray
        As :func:`sigma_clipped_median` returns them.
    uncertainty : numpy.ndarray
        (ny, nx) float32: ``1.482602218505602 × median(|x - median|) / √k`` of the ``k`` samples the
        median was taken of (``ccdproc.Combiner.median_combine``'s uncertainty), computed in float64;
        NaN where ``k`` is 0.

    Raises
    ------
    ccdcal.errors.UsageError
        If the stack is not 3-D numeric with 1 to 65535 frames.
    """
    # Imported here for start-up time: the numba kernel loads when a combine runs.
    from ccdcal.kernels.clipblock import Decoding, Transform

    arr = _native_stack(stack)
    n, ny, nx = arr.shape
    image = np.empty((ny, nx), np.float32)
    rejected = np.empty((ny, nx), np.uint16)
    nonfinite = np.empty((ny, nx), np.uint16)
    saturated = np.empty((ny, nx), np.uint16)
    uncertainty = np.empty((ny, nx), np.float32)
    if image.size:
        _run_kernel(
            arr,
            Decoding.identity(n).with_saturation(saturation),
            Transform.identity(n),
            slice(None),
            params,
            image,
            rejected,
            nonfinite,
            saturated,
            uncertainty,
        )
    return image, rejected, uncertainty


# --------------------------------------------------------------------------------------------------
# From files


def combine_files(
    paths: Sequence[Path],
    *,
    hdu: int = 0,
    params: ClipParams = ClipParams(),
    mem_limit: int = 2**30,
    scale: Sequence[float] | None = None,
    offset: Sequence[np.ndarray | float] | None = None,
    progress: Callable[[int, int], None] | None = None,
    rows: tuple[int, int] | None = None,
    saturation: Sequence[float | None] | None = None,
    measure: bool = False,
) -> CombineResult:
    """Sigma-clipped median of FITS images (or of a band of their rows), read in row blocks within a
    memory budget.

    Each file is read once, block by block; the kernel runs on each block while the next one is read
    (a background thread). Uncompressed image HDUs are read directly from the data unit (big-endian
    bits decoded, BSCALE/BZERO/BLANK applied in the kernel exactly as astropy would: the same float32
    or float64 arithmetic, BLANK → NaN, pseudo-unsigned integers exact); tile-compressed HDUs, gzipped
    files and unsigned 64-bit data go through astropy's ``section``. Either way the numbers clipped are
    those of ``astropy.io.fits.getdata``.

    Parameters
    ----------
    paths : sequence of path
        The FITS files, all with a 2-D image of the same shape in HDU ``hdu``.
    hdu : int
        HDU index of the image in every file.
    params : ClipParams
        Clipping parameters.
    mem_limit : int
        Bytes this call may hold at once: the result images (10 bytes a pixel: the combined image,
        its uncertainty and the rejected counts), the offset images it
        copies (none when a single C-contiguous offset image is shared), and the block buffers (two,
        for overlap, each ``n × rows × nx`` stored samples) — the block rows are chosen to fit.
        The interpreter and numba themselves are not counted.
    scale : sequence of float, optional
        Per-file factor.
    offset : sequence of (numpy.ndarray or float), optional
        Per-file offset: an image of the same shape or a number; with ``rows``, an image of the band's
        shape or of the whole image's (its band is used). Images given as the same object are held once.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` after each block (rows of the band with ``rows``).
    rows : tuple of int, optional
        Combine only the image rows ``rows[0]:rows[1]`` (a non-empty band). The result holds that band
        (``first_row`` = ``rows[0]``) and ``mem_limit`` counts its images only. Each pixel is combined on
        its own samples, so the band equals the same rows of the whole combine, bit for bit.
    saturation : sequence of (float or None), optional
        Per-file saturation level (:mod:`ccdcal.kernels.saturation`; ``None``: none): a sample whose value
        (as ``getdata`` returns it, before offset and scale) is at or above it is left out, as a
        non-finite sample is, and counted (``n_saturated``).
    measure : bool
        Also gather each file's grid samples and their differences from the combined image, block by
        block as they are read (the frame QA's statistics: ``samples``, :mod:`ccdcal.kernels.framestats`).

    Returns
    -------
    CombineResult
        The combined float32 image, its uncertainty and the rejected-count image, the total rejected
        fraction, n.

    Notes
    -----
    Each sample is ``(frame - offset) * scale``, evaluated in float64 (``frame`` being the value
    astropy's ``getdata`` returns), before clipping; a non-finite result counts as a rejected sample, as
    does a saturated sample. So the result equals the definition on the stack with the saturated samples
    masked (``np.ma.masked_where(frame >= level, ...)``: astropy's ``sigma_clip`` leaves masked samples
    out as it does non-finite ones).

    Raises
    ------
    ccdcal.errors.UsageError
        Bad parameters: no files, more than 65535, ``mem_limit`` too small for one row, bad
        ``scale``/``offset``, ``rows`` not a band of the images.
    ccdcal.errors.FitsFormatError
        A file that is unreadable, not a 2-D image, truncated, or whose shape differs from the first
        file's (the message names the file and both shapes).
    """
    # Imported here for start-up time: the numba kernel and astropy load when a combine runs.
    from ccdcal.kernels.clipblock import build_transform
    from ccdcal.kernels.fitsblocks import FitsStack, plan_rows
    from ccdcal.kernels.framestats import Decoded, FrameSamples

    paths = [Path(p) for p in paths]
    n = len(paths)
    if n == 0:
        raise UsageError("no files to combine")
    if n > MAX_FRAMES:
        raise UsageError(f"at most {MAX_FRAMES} files can be combined, not {n}")
    if isinstance(mem_limit, bool) or not isinstance(mem_limit, numbers.Integral) or mem_limit <= 0:
        raise UsageError(f"mem_limit must be a positive number of bytes, not {mem_limit!r}")
    if not isinstance(hdu, numbers.Integral) or isinstance(hdu, bool) or hdu < 0:
        raise UsageError(f"hdu must be a non-negative integer, not {hdu!r}")

    with FitsStack(paths, int(hdu)) as stack:
        full = stack.describe()
        first, stop = _band(rows, full[0])
        ny, nx = stop - first, full[1]  # the rows combined
        transform = build_transform(n, (ny, nx), scale, _band_offsets(offset, full, (first, stop)))
        decoding = stack.open_data().with_saturation(saturation)
        fixed = ny * nx * RESULT_BYTES + transform.copied_bytes  # the result images, the copied offsets
        block_rows = plan_rows(n, (ny, nx), stack.dtype.itemsize, mem_limit, fixed)
        nonfinite = np.empty((block_rows, nx), np.uint16)
        saturated = np.empty((block_rows, nx), np.uint16)
        image = np.empty((ny, nx), np.float32)
        rejected = np.empty((ny, nx), np.uint16)
        uncertainty = np.empty((ny, nx), np.float32)
        n_nonfinite = n_saturated = 0
        n_blocks = 0
        samples = FrameSamples.start(full, saturation, n) if measure else None
        decoded = Decoded(decoding.kind, decoding.bscale, decoding.bzero, decoding.blank, decoding.use_blank)
        with contextlib.closing(stack.blocks(block_rows, (first, stop))) as blocks:
            for start, block in blocks:
                r0, r1 = start - first, start - first + block.shape[1]  # rows of the band
                nf, ns = nonfinite[: r1 - r0], saturated[: r1 - r0]
                _run_kernel(
                    block,
                    decoding,
                    transform,
                    slice(r0, r1),
                    params,
                    image[r0:r1],
                    rejected[r0:r1],
                    nf,
                    ns,
                    uncertainty[r0:r1],
                )
                if samples is not None:
                    samples.add(start, block, decoded, *samples_of(transform, image, r0, r1))
                n_nonfinite += int(nf.sum(dtype=np.int64))
                n_saturated += int(ns.sum(dtype=np.int64))
                n_blocks += 1
                if progress is not None:
                    progress(r1, ny)
    return CombineResult(
        image=image,
        rejected=rejected,
        rejected_fraction=rejected_fraction(rejected, n),
        uncertainty=uncertainty,
        n_inputs=n,
        n_nonfinite=n_nonfinite,
        n_saturated=n_saturated,
        block_rows=block_rows,
        n_blocks=n_blocks,
        params=params,
        first_row=first,
        samples=samples,
    )


def samples_of(
    transform: Transform, image: np.ndarray, r0: int, r1: int
) -> tuple[np.ndarray, list[np.ndarray | float] | None, np.ndarray | None]:
    """The combined rows ``r0:r1`` of the band, each frame's offset of those rows and the factors, as
    :meth:`ccdcal.kernels.framestats.FrameSamples.add` takes them."""
    if not transform.active:
        return image[r0:r1], None, None
    offsets: list[np.ndarray | float] = [
        transform.off_img[r0:r1, int(j), :] if j >= 0 else float(transform.off_val[i])
        for i, j in enumerate(transform.off_idx)
    ]
    return image[r0:r1], offsets, transform.scale


def rejected_fraction(rejected: np.ndarray, n: int) -> float:
    """``rejected.sum() / (n * rejected.size)`` (0 for an empty image), summed exactly in int64."""
    total = n * rejected.size
    return float(rejected.sum(dtype=np.int64)) / total if total else 0.0


def _band(rows: tuple[int, int] | None, ny: int) -> tuple[int, int]:
    """``rows`` checked against the images' ``ny`` rows (all of them when ``None``)."""
    if rows is None:
        return 0, ny
    try:
        first, stop = (operator.index(r) for r in rows)
    except (TypeError, ValueError):
        raise UsageError(f"rows must be two integers (first, stop), not {rows!r}") from None
    if not 0 <= first < stop <= ny:
        raise UsageError(f"rows {first}:{stop} are not a band of the images' {ny} rows")
    return first, stop


def _band_offsets(
    offset: Sequence[np.ndarray | float] | None, shape: tuple[int, int], band: tuple[int, int]
) -> list[np.ndarray | float] | None:
    """The offsets of a band: whole-image offsets cut to its rows (views; a shared image stays shared)."""
    if offset is None or band == (0, shape[0]):
        return None if offset is None else list(offset)
    cut: dict[int, np.ndarray] = {}
    items: list[np.ndarray | float] = []
    for item in offset:
        if isinstance(item, np.ndarray) and item.shape == shape:
            if id(item) not in cut:
                cut[id(item)] = item[band[0] : band[1]]
            items.append(cut[id(item)])
        else:
            items.append(item)
    return items
