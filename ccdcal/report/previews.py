"""Zscale previews of FITS frames: read one image, shrink it, stretch it, encode it as an 8-bit PNG.

A preview is for looking, not for measuring: a frame larger than ``max_size`` pixels on its longest side
is averaged down to that size (so a 6000-pixel frame becomes a few hundred pixels across, the
noise averaged rather than aliased), non-finite pixels are shown at the median, and the grey scale is
astropy's :class:`~astropy.visualization.ZScaleInterval` of the shrunken image (IRAF's ``zscale``, as
DS9 shows frames). Row 0 of the FITS image is at the bottom, as in DS9. The PNG is one grey channel
(Pillow, which matplotlib depends on), so a preview of a noisy frame stays small.

:func:`preview_file` is ``ccdcal preview``: it writes the PNG in the current folder by default, never
beside the frame (raw folders are only read).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.visualization import ZScaleInterval
from PIL import Image

from ccdcal import limits
from ccdcal.errors import FitsFormatError, NotFoundError, UsageError
from ccdcal.files.fitsio import check_folder, check_writable, output_error, temporary_path

#: Longest side of a ``ccdcal preview`` PNG unless told otherwise (``0`` keeps every pixel).
PREVIEW_MAX_SIZE = 1024

_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_COMPRESSED_SUFFIXES = (".gz", ".fz", ".bz2")


@dataclass(frozen=True)
class Preview:
    """A frame rendered for the eye.

    Attributes
    ----------
    png : bytes
        The 8-bit grey PNG.
    width, height : int
        Its size in pixels.
    shape : tuple of int
        The size of the image it shows, (rows, columns).
    limits : tuple of float
        The zscale grey range (black, white) in the image's units.
    hdu : int
        The HDU shown.
    note : str or None
        What else was done (a cube's first plane shown, non-finite pixels).
    """

    png: bytes
    width: int
    height: int
    shape: tuple[int, int]
    limits: tuple[float, float]
    hdu: int
    note: str | None = None


@contextmanager
def quiet_fits() -> Iterator[None]:
    """Silence astropy's complaints about non-standard raw headers (the preview shows the pixels anyway).

    Warning filters are global to the process, and ``warnings.catch_warnings`` is not thread-safe: code
    that reads frames in threads enters this once around all of them and passes ``quiet=False``.
    """

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)
        yield


def read_frame(
    path: str | os.PathLike[str], hdu: int | None = None, *, quiet: bool = True
) -> tuple[np.ndarray, int, str | None]:
    """The pixels of a FITS image as float32: the given HDU, else the first HDU holding an image.

    With ``quiet`` (the default) astropy's warnings about the header are silenced (:func:`quiet_fits`).

    Returns
    -------
    image : ndarray
        2-D float32 (BZERO/BSCALE applied); of a cube, its first plane.
    hdu : int
        The HDU read.
    note : str or None
        ``first plane of a N-D cube`` when the HDU is a cube.

    Raises
    ------
    NotFoundError
        No such file.
    FitsFormatError
        Not a FITS file, no image HDU, or the HDU asked for is not an image.
    """

    name = os.fspath(path)
    try:
        os.stat(name)
    except FileNotFoundError:
        raise NotFoundError(f"{name}: no such file") from None
    except OSError as exc:  # a folder on the way that cannot be searched, a name too long ...
        raise FitsFormatError(f"cannot look at it: {exc.strerror or exc}", name) from None
    if os.path.isdir(name):
        raise FitsFormatError("a folder, not a FITS file", name)
    image_types = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    try:
        with quiet_fits() if quiet else nullcontext(), fits.open(name, memmap=False) as hdul:
            if hdu is None:
                found = [
                    i
                    for i, h in enumerate(hdul)
                    if isinstance(h, image_types) and h.header.get("NAXIS", 0) >= 2
                ]
                if not found:
                    raise FitsFormatError("no HDU holds an image of two or more axes", name)
                hdu = found[0]
            if not 0 <= hdu < len(hdul):
                raise FitsFormatError(f"no HDU {hdu}: the file has HDUs 0 to {len(hdul) - 1}", name)
            if not isinstance(hdul[hdu], image_types):
                raise FitsFormatError(f"HDU {hdu} is a table, not an image", name)
            data = hdul[hdu].data
            if data is None or data.ndim < 2:
                raise FitsFormatError(f"HDU {hdu} holds no image of two or more axes", name)
            if data.size == 0:
                shape = "x".join(str(n) for n in reversed(data.shape))
                raise FitsFormatError(
                    f"HDU {hdu} holds an empty image ({shape} pixels): nothing to show", name
                )
            note = None
            if data.ndim > 2:
                note = f"first plane of a {data.ndim}-D cube"
                data = data[(0,) * (data.ndim - 2)]
            return np.asarray(data, dtype=np.float32), hdu, note
    except FitsFormatError:
        raise
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise FitsFormatError(f"cannot read it as FITS: {exc}", name) from exc


def shrink(image: np.ndarray, max_size: int) -> np.ndarray:
    """``image`` averaged down (Pillow's BOX filter) so that its longest side is ``max_size`` pixels.

    Every output pixel is the mean of the input pixels that fall in it (whole pixels, with equal weights),
    so noise is averaged rather than aliased; for a whole ratio this is the block mean. An image already
    small enough, or ``max_size`` 0, is returned as is.
    """

    rows, cols = image.shape
    if max_size <= 0 or max(rows, cols) <= max_size:
        return image
    ratio = max_size / max(rows, cols)
    size = (max(1, round(cols * ratio)), max(1, round(rows * ratio)))
    floats = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(floats.resize(size, Image.Resampling.BOX), dtype=np.float32)


def zscale_limits(image: np.ndarray) -> tuple[float, float]:
    """The zscale range of the finite pixels of ``image`` (a range of width 1 for a flat image)."""

    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in ZScaleInterval().get_limits(finite))
    if not high > low:
        low, high = float(finite.min()), float(finite.max())
    if not high > low:
        high = low + 1.0
    return low, high


def render(image: np.ndarray, max_size: int, *, hdu: int = 0, note: str | None = None) -> Preview:
    """A zscale PNG of a 2-D image, averaged down to at most ``max_size`` pixels on its longest side."""

    notes = [note] if note else []
    finite = np.isfinite(image)
    if not finite.all():
        fill = float(np.median(image[finite])) if finite.any() else 0.0
        notes.append(f"{int((~finite).sum())} non-finite pixels shown at {fill:.6g}")
        image = np.where(finite, image, np.float32(fill))
    small = shrink(image, max_size)
    low, high = zscale_limits(small)
    scaled = (small.astype(np.float64) - low) * (255.0 / (high - low))
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)[::-1]  # FITS row 0 at the bottom
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey)).save(buffer, format="PNG")
    return Preview(
        png=buffer.getvalue(),
        width=int(grey.shape[1]),
        height=int(grey.shape[0]),
        shape=(int(image.shape[0]), int(image.shape[1])),
        limits=(low, high),
        hdu=hdu,
        note="; ".join(notes) or None,
    )


def preview(
    path: str | os.PathLike[str], max_size: int, hdu: int | None = None, *, quiet: bool = True
) -> Preview:
    """Read a FITS frame (:func:`read_frame`) and render it (:func:`render`)."""
    image, used, note = read_frame(path, hdu, quiet=quiet)
    return render(image, max_size, hdu=used, note=note)


def fits_stem(path: str | os.PathLike[str]) -> str:
    """A FITS file's name without FITS and compression suffixes (``Light_001.fits.fz`` → ``Light_001``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            name, lower = name[: -len(suffix)], lower[: -len(suffix)]
            break
    for suffix in _FITS_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


@dataclass(frozen=True)
class PreviewResult:
    """What :func:`preview_file` wrote."""

    source: Path
    output: Path
    preview: Preview

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        p = self.preview
        return {
            "source": str(self.source),
            "output": str(self.output),
            "hdu": p.hdu,
            "width": p.width,
            "height": p.height,
            "shape": list(p.shape),
            "zscale": list(p.limits),
            "note": p.note,
        }


def preview_file(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    hdu: int | None = None,
    max_size: int = PREVIEW_MAX_SIZE,
) -> PreviewResult:
    """Write a zscale PNG of a FITS frame (``ccdcal preview``).

    Parameters
    ----------
    path : path-like
        Any FITS image file (``.fits``, ``.fit``, ``.fts``, gzip- or tile-compressed).
    output : path-like, optional
        The PNG to write (replaced if it exists). Default: ``{stem}.png`` in the current folder — never
        beside the frame.
    hdu : int, optional
        The HDU to show (default: the first holding an image).
    max_size : int
        Longest side of the PNG; larger frames are averaged down. 0 keeps every pixel.

    Returns
    -------
    PreviewResult
        The source, the PNG written and what it shows.

    Raises
    ------
    NotFoundError, FitsFormatError
        The frame is missing or not a FITS image.
    UsageError
        ``max_size`` or ``hdu`` is outside its range (:mod:`ccdcal.limits`), the output is the frame
        itself, or its folder does not exist.
    """
    limits.MAX_SIZE.check(max_size)
    if hdu is not None:
        limits.HDU.check(hdu)
    source = Path(path).expanduser().resolve()
    target = Path(output) if output is not None else Path.cwd() / f"{fits_stem(source)}.png"
    target = target.expanduser().resolve()
    if target == source:
        raise UsageError(f"-o {target} is the frame itself; choose another file name for the PNG")
    check_output(target, "the PNG", f"{fits_stem(source)}.png")
    shown = preview(source, max_size, hdu)
    write_bytes_atomic(target, shown.png)
    return PreviewResult(source, target, shown)


def check_output(target: Path, what: str, example: str) -> None:
    """Check, before any work, that the file ``-o`` names (``target``, resolved) can be written.

    Raises
    ------
    UsageError
        ``target`` is a folder itself (``example``: a file name to suggest in it), or its folder does not
        exist.
    OutputError
        Its folder is a file, or files cannot be written in it (read-only, immutable, no permission): the
        folder and the fix (:func:`~ccdcal.files.fitsio.check_writable`, which leaves no file behind).
    """
    if target.is_dir():
        raise UsageError(
            f"-o {target} is a folder; give the file to write {what} to, e.g. -o {target / example}"
        )
    check_folder(target.parent)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: folder {target.parent} does not exist")
    check_writable(target.parent)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target`` and rename it over ``target``.

    Raises
    ------
    OutputError
        The file cannot be written (no permission, a full disk, a read-only file system), naming it.
    """
    temporary = temporary_path(target.parent)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, target)
    except OSError as exc:
        raise output_error(target, exc) from None
    finally:
        with contextlib.suppress(OSError):  # never there on a read-only disk, which refuses even that
            temporary.unlink(missing_ok=True)
