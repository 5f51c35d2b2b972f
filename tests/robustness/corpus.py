"""A corpus of hostile inputs for ``ccdcal ingest`` and ``ccdcal process`` (issue 7), built on demand.

:func:`build` writes a small simulated night (the good frames: masters can be built and lights
calibrated) and, beside it, one folder per :class:`Case` holding a hostile file: empty, not FITS,
truncated, a cube, nonsense header values, odd pixels, flats no master can be made of, lights no master
matches, awkward file names, header values aimed at paths and SQL, an unreadable file, link loops.
:func:`run` ingests and processes the whole tree through the CLI (in this process, so that the
unreadable file can be simulated when running as root, who reads any file) and returns what was
recorded for each case: its outcome and the message a person reads.

``docs/hostile-inputs.md`` is the table :func:`markdown` makes of those results; a test checks that the
file is up to date. Regenerate it with ``python -m tests.robustness.corpus docs/hostile-inputs.md``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from tests.conftest import unreadable
from tests.robustness import situations

#: Shape of every frame of the corpus (rows, columns).
SHAPE = (48, 64)
#: Folder of the good night, and of the hostile cases, under the corpus root.
NIGHT, CASES_FOLDER = "night", "cases"

#: Outcomes, as the table shows them.
REJECTED = "rejected at ingest"
UNCLASSIFIED = "catalogued, unclassified"
NOT_CALIBRATED = "not calibrated"
FAILED = "failed"
CALIBRATED = "calibrated"
SKIPPED_SILENTLY = "not a file to catalogue"
NOT_READ = "not read at ingest"
SKIPPED_OUTPUT = "skipped: written by ccdcal"


@dataclass
class Templates:
    """The good frames hostile files are made from: a light (R, 60 s) and a flat (R, 2 s)."""

    light: Path
    flat: Path

    def light_hdu(self) -> tuple[fits.Header, np.ndarray]:
        """The template light's header and pixels (uint16)."""
        with fits.open(self.light) as hdul:
            return hdul[0].header.copy(), np.asarray(hdul[0].data)

    def flat_hdu(self) -> tuple[fits.Header, np.ndarray]:
        """The template flat's header and pixels (uint16)."""
        with fits.open(self.flat) as hdul:
            return hdul[0].header.copy(), np.asarray(hdul[0].data)


Build = Callable[[Path, Templates], None]


@dataclass(frozen=True)
class Case:
    """One hostile input: how to make it, and what ccdcal must record for it.

    Attributes
    ----------
    name : str
        Short name; also the case's folder (``cases/{name}/``).
    what : str
        The input, in words (the table's second column).
    outcome : str
        What happens to the subject: :data:`REJECTED`, :data:`UNCLASSIFIED`, :data:`NOT_CALIBRATED`,
        :data:`FAILED`, :data:`CALIBRATED`, :data:`SKIPPED_SILENTLY`, :data:`NOT_READ` or
        :data:`SKIPPED_OUTPUT`.
    message : str
        A part of the message recorded for the subject (empty for a calibrated light).
    subject : str
        The file whose outcome is checked, relative to the case folder.
    build : callable
        Writes the case's files into its folder.
    after_ingest : callable, optional
        Changes the case's folder between ingest and process (a raw file edited or deleted).
    master_message : str
        A part of the reason a master group of this case is skipped with (empty: none is).
    locked : tuple of (str, str), optional
        A folder of the case (relative to its folder) without permissions while the corpus is ingested,
        and how: ``"---"`` it cannot be listed, ``"r--"`` it can be listed but what is in it cannot be
        looked at (:func:`tests.conftest.unreadable`).
    """

    name: str
    what: str
    outcome: str
    message: str
    subject: str
    build: Build
    after_ingest: Callable[[Path], None] | None = None
    master_message: str = ""
    locked: tuple[str, str] | None = None


@dataclass
class Result:
    """What a corpus run recorded for one case."""

    case: Case
    outcome: str
    message: str
    output: str | None = None
    flat: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class CorpusRun:
    """A corpus run: the exit statuses, the summaries, and one result per case."""

    root: Path
    ingest_exit: int
    process_exit: int
    ingest: dict[str, Any]
    process: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    ingest_stderr: str = ""
    process_stderr: str = ""


# -- writing FITS files ------------------------------------------------------------------------------


def _write(path: Path, header: fits.Header, data: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header).writeto(path)


def _light(path: Path, t: Templates, cards: dict[str, Any] | None = None, data: Any = None) -> None:
    header, pixels = t.light_hdu()
    for key, value in (cards or {}).items():
        header[key] = value
    _write(path, header, pixels if data is None else data)


def _flats(
    folder: Path, t: Templates, name: str, data: Callable[[np.ndarray], np.ndarray], **cards: Any
) -> None:
    """Three flats and one light of a filter of their own, the flats' pixels made by ``data``."""
    for index in range(1, 4):
        header, pixels = t.flat_hdu()
        for key, value in cards.items():
            header[key] = value
        header["DATE-OBS"] = f"2026-03-14T17:5{index}:00"
        out = data(pixels.astype(np.float64))
        if out.dtype == np.float64:
            out = out.astype(np.float32)
            header.remove("BZERO", ignore_missing=True)
        _write(folder / f"{name}_flat_{index}.fits", header, out)
    _light(folder / f"{name}_light.fits", t, cards)


def _bytes_of(t: Templates) -> bytes:
    return t.light.read_bytes()


def _header_end(raw: bytes) -> int:
    """Byte offset just after the header's END card (block-aligned)."""
    for offset in range(0, len(raw), 80):
        if raw[offset : offset + 8] == b"END     ":
            return offset + 80 + (-(offset + 80) % 2880)
    raise ValueError("no END card")


def _replace_card(raw: bytes, keyword: str, image: str) -> bytes:
    """``raw`` with the card of ``keyword`` replaced by ``image`` (80 characters)."""
    for offset in range(0, _header_end(raw), 80):
        if raw[offset : offset + 8] == keyword.encode().ljust(8):
            return raw[:offset] + image.encode("latin-1").ljust(80)[:80] + raw[offset + 80 :]
    raise ValueError(f"no {keyword} card")


def _with_cards(raw: bytes, images: list[str]) -> bytes:
    """``raw`` with the card ``images`` written as they are: each replaces the card of its keyword, or is
    inserted before END."""
    end = _header_end(raw)
    cards = [raw[offset : offset + 80] for offset in range(0, end, 80)]
    cards = cards[: next(i for i, card in enumerate(cards) if card.startswith(b"END     "))]
    for image in images:
        card = image.encode("latin-1").ljust(80)[:80]
        same = [i for i, old in enumerate(cards) if old[:8] == card[:8] and card[8:10] == b"= "]
        if same:
            cards[same[0]] = card
        else:
            cards.append(card)
    header = b"".join(cards) + b"END".ljust(80)
    return header + b" " * (-len(header) % 2880) + raw[end:]


def _raw_cards(file_name: str, *images: str) -> Build:
    """A light whose header holds ``images`` as written (cards astropy would not write)."""

    def build(folder: Path, t: Templates) -> None:
        (folder / file_name).write_bytes(_with_cards(_bytes_of(t), list(images)))

    return build


def _gzipped(file_name: str, *images: str) -> Build:
    """A gzipped light whose header holds ``images``."""

    def build(folder: Path, t: Templates) -> None:
        (folder / file_name).write_bytes(gzip.compress(_with_cards(_bytes_of(t), list(images))))

    return build


# -- the cases --------------------------------------------------------------------------------------


def _zero_bytes(folder: Path, t: Templates) -> None:
    (folder / "empty.fits").write_bytes(b"")


def _not_fits(folder: Path, t: Templates) -> None:
    (folder / "photo.fits").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)


def _header_truncated(folder: Path, t: Templates) -> None:
    (folder / "cut_header.fits").write_bytes(_bytes_of(t)[:1000])


def _data_truncated(folder: Path, t: Templates) -> None:
    raw = _bytes_of(t)
    (folder / "cut_data.fits").write_bytes(raw[: _header_end(raw) + 1000])


def _missing_end(folder: Path, t: Templates) -> None:
    raw = _bytes_of(t)
    end = _header_end(raw)
    header = raw[:end].replace(b"END" + b" " * 77, b" " * 80)
    (folder / "no_end.fits").write_bytes(header + raw[end:])


def _table_only(folder: Path, t: Templates) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(5.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(folder / "table.fits")


def _cube(folder: Path, t: Templates) -> None:
    header, pixels = t.light_hdu()
    cube = np.stack([pixels, pixels, pixels])
    header.remove("BZERO", ignore_missing=True)
    _write(folder / "cube.fits", header, cube.astype(np.int32))


def _empty_primary(folder: Path, t: Templates) -> None:
    header, _ = t.light_hdu()
    for key in ("NAXIS1", "NAXIS2", "BZERO"):
        header.remove(key, ignore_missing=True)
    _write(folder / "no_image.fits", header, None)


def _bad_gzip(folder: Path, t: Templates) -> None:
    packed = gzip.compress(_bytes_of(t))
    (folder / "broken.fits.gz").write_bytes(packed[: len(packed) // 2] + b"\x00" * 64)


def _bitpix_12(folder: Path, t: Templates) -> None:
    raw = _replace_card(_bytes_of(t), "BITPIX", "BITPIX  =                   12")
    (folder / "bitpix12.fits").write_bytes(raw)


def _huge_naxis(folder: Path, t: Templates) -> None:
    raw = _replace_card(_bytes_of(t), "NAXIS1", "NAXIS1  =               100000")
    raw = _replace_card(raw, "NAXIS2", "NAXIS2  =               100000")
    (folder / "huge.fits").write_bytes(raw)


def _unreadable(folder: Path, t: Templates) -> None:
    path = folder / "secret.fits"
    shutil.copyfile(t.light, path)
    path.chmod(0)


def _fifo(folder: Path, t: Templates) -> None:
    os.mkfifo(folder / "pipe.fits")


def _dangling_link(folder: Path, t: Templates) -> None:
    (folder / "gone.fits").symlink_to(folder / "deleted-long-ago.fits")


def _file_link_loop(folder: Path, t: Templates) -> None:
    (folder / "a.fits").symlink_to(folder / "b.fits")
    (folder / "b.fits").symlink_to(folder / "a.fits")


def _folder_link_loop(folder: Path, t: Templates) -> None:
    _light(folder / "inner" / "looped.fits", t)
    (folder / "inner" / "back").symlink_to(folder, target_is_directory=True)


def _exptime_abc(folder: Path, t: Templates) -> None:
    raw = _replace_card(_bytes_of(t), "EXPTIME", "EXPTIME = 'abc     '           / [s] Exposure duration")
    raw = _replace_card(raw, "EXPOSURE", "EXPOSURE= 'abc     '           / [s] Exposure duration")
    (folder / "exptime_abc.fits").write_bytes(raw)


def _exptime_negative(folder: Path, t: Templates) -> None:
    _light(folder / "exptime_negative.fits", t, {"EXPTIME": -60.0, "EXPOSURE": -60.0})


def _ccd_temp_nan(folder: Path, t: Templates) -> None:
    raw = _replace_card(_bytes_of(t), "CCD-TEMP", "CCD-TEMP=                  NaN / [degC] CCD temperature")
    (folder / "temp_nan.fits").write_bytes(raw)


def _no_temperature(folder: Path, t: Templates) -> None:
    raw = _replace_card(_bytes_of(t), "CCD-TEMP", "CCD-TEMP=                  NaN / [degC] CCD temperature")
    raw = _replace_card(raw, "SET-TEMP", "COMMENT no set point")
    (folder / "no_temp.fits").write_bytes(raw)


def _gain_text(folder: Path, t: Templates) -> None:
    _light(folder / "gain_high.fits", t, {"GAIN": "high"})


def _non_ascii(folder: Path, t: Templates) -> None:
    raw = _replace_card(
        _bytes_of(t), "OBJECT", "OBJECT  = 'M 51 caf\xe9 \xff'      / name with bytes outside ASCII"
    )
    (folder / "non_ascii.fits").write_bytes(raw)


def _duplicate_keywords(folder: Path, t: Templates) -> None:
    raw = _replace_card(_bytes_of(t), "EQUINOX", "EXPTIME =                300.0 / a second EXPTIME card")
    (folder / "duplicate_exptime.fits").write_bytes(raw)


def _nan_pixels(folder: Path, t: Templates) -> None:
    header, pixels = t.light_hdu()
    data = pixels.astype(np.float32)
    data[0, :5] = np.nan
    data[1, :5] = np.inf
    data[2, :5] = -np.inf
    header.remove("BZERO", ignore_missing=True)
    _write(folder / "nan_pixels.fits", header, data)


def _flat_zero(folder: Path, t: Templates) -> None:
    _flats(folder, t, "zero", lambda p: np.zeros_like(p), FILTER="Zero")


def _flat_negative(folder: Path, t: Templates) -> None:
    _flats(folder, t, "negative", lambda p: -p, FILTER="Neg")


def _flat_saturated(folder: Path, t: Templates) -> None:
    _flats(folder, t, "saturated", lambda p: np.full_like(p, 65535.0).astype(np.uint16), FILTER="Sat")


def _shape_differs(folder: Path, t: Templates) -> None:
    header, pixels = t.light_hdu()
    _write(folder / "small_light.fits", header, pixels[:40, :56])


def _bias_shape_differs(folder: Path, t: Templates) -> None:
    """Three biases of a camera of their own, one of them smaller: the group is split by size."""
    with fits.open(t.flat) as hdul:
        pixels = np.asarray(hdul[0].data)
    for index, rows in enumerate((48, 48, 40), 1):
        header, _ = t.light_hdu()
        header["IMAGETYP"] = "BIAS"
        header["EXPTIME"] = header["EXPOSURE"] = 0.0
        header["INSTRUME"] = "Odd Camera"
        _write(folder / f"odd_bias_{index}.fits", header, pixels[:rows] // 20)
    _light(folder / "odd_light.fits", t, {"INSTRUME": "Odd Camera"})


def _binning(folder: Path, t: Templates) -> None:
    _light(folder / "binned_3x3.fits", t, {"XBINNING": 3, "YBINNING": 3})


def _name(file_name: str) -> Build:
    def build(folder: Path, t: Templates) -> None:
        _light(folder / file_name, t)

    return build


#: Long file names (docs/design.md, Files): 200 characters, whose output name is allowed; 80 characters of
#: 3 bytes each (the limit is 255 bytes, not characters); 253 bytes, whose output name would be 257.
LONG_NAME = "M51_" + "long" * 47 + "_01.fits"
LONG_UNICODE_NAME = "星" * 80 + ".fits"
TOO_LONG_NAME = "M51_" + "x" * 244 + ".fits"


def _filter(value: str, stem: str) -> Build:
    def build(folder: Path, t: Templates) -> None:
        _flats(folder, t, stem, lambda p: p, FILTER=value)

    return build


def _unknown_type(folder: Path, t: Templates) -> None:
    _light(folder / "tricolor.fits", t, {"IMAGETYP": "Tricolor Image"})


def _date_garbage(folder: Path, t: Templates) -> None:
    _light(folder / "date_yesterday.fits", t, {"DATE-OBS": "yesterday", "DATE-LOC": "tomorrow"})


def _wcs_string(folder: Path, t: Templates) -> None:
    _light(folder / "wcs_text.fits", t, {"CRVAL1": "abc", "EQUINOX": "J2000"})


def _float64(folder: Path, t: Templates) -> None:
    header, pixels = t.light_hdu()
    header.remove("BZERO", ignore_missing=True)
    _write(folder / "float64.fits", header, pixels.astype(np.float64))


def _odd_bzero(folder: Path, t: Templates) -> None:
    header, pixels = t.light_hdu()
    hdu = fits.PrimaryHDU(pixels.astype(np.float64) - 1000.0, header)
    hdu.scale("int16", bzero=31768)
    hdu.writeto(folder / "bzero31768.fits")


def _compressed(folder: Path, t: Templates) -> None:
    header, pixels = t.light_hdu()
    header.remove("BZERO", ignore_missing=True)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(pixels, header)]).writeto(folder / "packed.fits.fz")


def _locked_light(folder: Path, t: Templates) -> None:
    _light(folder / "locked" / "inside.fits", t)


def _zero_size_image(folder: Path, t: Templates) -> None:
    header, _ = t.light_hdu()
    header["NAXIS1"] = 0
    header.remove("BZERO", ignore_missing=True)
    (folder / "zero_width.fits").write_bytes(header.tostring().encode("ascii"))


def _already_subtracted(folder: Path, t: Templates) -> None:
    """A light from which a capture program subtracted a dark already (CCDSoft's auto-dark)."""
    header, pixels = t.light_hdu()
    header.remove("BZERO", ignore_missing=True)
    level = float(np.median(pixels))
    _write(folder / "auto_dark.fits", header, np.clip(pixels.astype(np.float32) - (level - 100), 0, None))


def _nan_rows(rows: int) -> Callable[[np.ndarray], np.ndarray]:
    """Pixels as float32 with their first ``rows`` rows NaN (all of them: every row)."""

    def make(pixels: np.ndarray) -> np.ndarray:
        out = pixels.astype(np.float32)
        out[:rows] = np.nan
        return out

    return make


def _nan_biases(binning: int, rows: int) -> Build:
    """Three biases and a light of a binning of their own, the biases NaN in their first ``rows`` rows:
    the master bias is finite on (48 - rows) / 48 of its pixels."""

    def build(folder: Path, t: Templates) -> None:
        for index in range(1, 4):
            header, pixels = t.light_hdu()
            header["IMAGETYP"] = "BIAS"
            header["EXPTIME"] = header["EXPOSURE"] = 0.0
            header["XBINNING"] = header["YBINNING"] = binning
            header.remove("BZERO", ignore_missing=True)
            _write(folder / f"nan_bias_{index}.fits", header, _nan_rows(rows)(pixels // 20 + index))
        _light(folder / f"nan_light_b{binning}.fits", t, {"XBINNING": binning, "YBINNING": binning})

    return build


def _nan_darks(folder: Path, t: Templates) -> None:
    """Three all-NaN darks of 77 s (the good camera: its master bias is subtracted) and a 77 s light."""
    for index in range(1, 4):
        header, pixels = t.light_hdu()
        header["IMAGETYP"] = "DARK"
        header["EXPTIME"] = header["EXPOSURE"] = 77.0
        header.remove("BZERO", ignore_missing=True)
        _write(folder / f"nan_dark_{index}.fits", header, _nan_rows(SHAPE[0])(pixels))
    _light(folder / "dark77_light.fits", t, {"EXPTIME": 77.0, "EXPOSURE": 77.0})


def _rewritten_after_ingest(folder: Path) -> None:
    """``cp -p`` of another version: new pixels, the same size and mtime."""
    path = folder / "rewritten.fits"
    stat = path.stat()
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data)
        header = hdul[0].header.copy()
    fits.PrimaryHDU((data // 2).astype(np.uint16), header).writeto(path, overwrite=True)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _edited_after_ingest(folder: Path) -> None:
    path = folder / "edited.fits"
    with open(path, "r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        handle.write(b"\x01" * 10)
    os.utime(path, (1_000_000_000, 1_000_000_000))


def _deleted_after_ingest(folder: Path) -> None:
    (folder / "deleted.fits").unlink()


CASES: tuple[Case, ...] = (
    # Files that are not usable FITS images: rejected at ingest, with the reason.
    Case("zero-bytes", "a zero-byte file", REJECTED, "empty file (0 bytes)", "empty.fits", _zero_bytes),
    Case("not-fits", "a PNG named `.fits`", REJECTED, "not a FITS file", "photo.fits", _not_fits),
    Case(
        "header-truncated",
        "the first 1000 bytes of a frame (header cut)",
        REJECTED,
        "truncated",
        "cut_header.fits",
        _header_truncated,
    ),
    Case(
        "data-truncated",
        "a frame cut 1000 bytes into its pixels",
        REJECTED,
        "truncated data",
        "cut_data.fits",
        _data_truncated,
    ),
    Case("missing-end", "a header without its END card", REJECTED, "END", "no_end.fits", _missing_end),
    Case(
        "table-only",
        "a FITS file holding only a binary table",
        REJECTED,
        "no image HDU",
        "table.fits",
        _table_only,
    ),
    Case("cube", "a 3-D cube (3 planes)", REJECTED, "3-D cube", "cube.fits", _cube),
    Case(
        "empty-primary",
        "an empty primary HDU and no extension",
        REJECTED,
        "no image HDU",
        "no_image.fits",
        _empty_primary,
    ),
    Case(
        "bad-gzip", "a `.fits.gz` whose gzip stream is corrupt", REJECTED, "gzip", "broken.fits.gz", _bad_gzip
    ),
    Case("bitpix-12", "BITPIX = 12", REJECTED, "BITPIX", "bitpix12.fits", _bitpix_12),
    Case(
        "huge-naxis",
        "NAXIS1 = NAXIS2 = 100000 in a small file",
        REJECTED,
        "truncated data",
        "huge.fits",
        _huge_naxis,
    ),
    Case(
        "unreadable",
        "a file that cannot be read (mode 000)",
        REJECTED,
        "Permission denied",
        "secret.fits",
        _unreadable,
    ),
    Case("fifo", "a named pipe called `.fits`", REJECTED, "not a regular file", "pipe.fits", _fifo),
    Case(
        "dangling-link",
        "a symbolic link to a deleted file",
        REJECTED,
        "broken symbolic link",
        "gone.fits",
        _dangling_link,
    ),
    Case(
        "file-link-loop",
        "two symbolic links pointing at each other",
        REJECTED,
        "symbolic link loop",
        "a.fits",
        _file_link_loop,
    ),
    # Header values that cannot be used: catalogued, the light is not calibrated, the reason names the key.
    Case("exptime-abc", "EXPTIME = 'abc'", NOT_CALIBRATED, "exposure", "exptime_abc.fits", _exptime_abc),
    Case(
        "exptime-negative",
        "EXPTIME = -60",
        NOT_CALIBRATED,
        "exposure",
        "exptime_negative.fits",
        _exptime_negative,
    ),
    Case(
        "ccd-temp-nan",
        "CCD-TEMP = NaN (SET-TEMP present)",
        NOT_CALIBRATED,
        "unknown temperature",
        "temp_nan.fits",
        _ccd_temp_nan,
    ),
    Case(
        "no-temperature",
        "CCD-TEMP = NaN and no SET-TEMP",
        NOT_CALIBRATED,
        "temperature",
        "no_temp.fits",
        _no_temperature,
    ),
    Case("gain-text", "GAIN = 'high'", NOT_CALIBRATED, "gain", "gain_high.fits", _gain_text),
    Case(
        "binning",
        "a light binned 3x3 (every master is 2x2)",
        NOT_CALIBRATED,
        "3x3",
        "binned_3x3.fits",
        _binning,
    ),
    Case(
        "light-shape",
        "a light of 56x40 pixels (the masters are 64x48)",
        NOT_CALIBRATED,
        "56x40",
        "small_light.fits",
        _shape_differs,
    ),
    Case(
        "group-shape",
        "three biases of one camera, one of another size",
        NOT_CALIBRATED,
        "bias",
        "odd_light.fits",
        _bias_shape_differs,
        master_message="1 bias frame in group Odd Camera b2x2 g120 C-10: fewer than --min-frames 3",
    ),
    Case(
        "unknown-type",
        "IMAGETYP = 'Tricolor Image' outside any typed folder",
        UNCLASSIFIED,
        "",
        "tricolor.fits",
        _unknown_type,
    ),
    Case(
        "edited",
        "a light whose pixels change after ingest",
        NOT_CALIBRATED,
        "changed since it was catalogued",
        "edited.fits",
        _name("edited.fits"),
        after_ingest=_edited_after_ingest,
    ),
    Case(
        "deleted",
        "a light deleted after ingest",
        NOT_CALIBRATED,
        "missing",
        "deleted.fits",
        _name("deleted.fits"),
        after_ingest=_deleted_after_ingest,
    ),
    # Flats no master can be made of: the group is skipped with the reason, its lights are not calibrated.
    Case(
        "flat-zero",
        "three all-zero flats (filter Zero) and a light",
        NOT_CALIBRATED,
        "flat",
        "zero_light.fits",
        _flat_zero,
        master_message="filter Zero are left after the frame QA",
    ),
    Case(
        "flat-negative",
        "three negative flats (filter Neg) and a light",
        NOT_CALIBRATED,
        "flat",
        "negative_light.fits",
        _flat_negative,
        master_message="filter Neg are left after the frame QA",
    ),
    Case(
        "flat-saturated",
        "three saturated flats (filter Sat) and a light",
        NOT_CALIBRATED,
        "flat",
        "saturated_light.fits",
        _flat_saturated,
        master_message="filter Sat are left after the frame QA",
    ),
    # Odd but usable: calibrated.
    Case("non-ascii", "bytes outside ASCII in a header value", CALIBRATED, "", "non_ascii.fits", _non_ascii),
    Case(
        "duplicate-keyword",
        "EXPTIME twice (60, then 300): the first counts, as in astropy",
        CALIBRATED,
        "",
        "duplicate_exptime.fits",
        _duplicate_keywords,
    ),
    Case(
        "nan-pixels",
        "NaN, +inf and -inf pixels in a float light",
        CALIBRATED,
        "",
        "nan_pixels.fits",
        _nan_pixels,
    ),
    Case("date-garbage", "DATE-OBS = 'yesterday'", CALIBRATED, "", "date_yesterday.fits", _date_garbage),
    Case("wcs-string", "CRVAL1 = 'abc', EQUINOX = 'J2000'", CALIBRATED, "", "wcs_text.fits", _wcs_string),
    Case("float64", "a light stored as 64-bit floats", CALIBRATED, "", "float64.fits", _float64),
    Case("odd-bzero", "16-bit pixels with BZERO = 31768", CALIBRATED, "", "bzero31768.fits", _odd_bzero),
    Case(
        "tile-compressed", "a tile-compressed `.fits.fz` light", CALIBRATED, "", "packed.fits.fz", _compressed
    ),
    Case(
        "name-spaces",
        "a file name with spaces",
        CALIBRATED,
        "",
        "M 51 light 1.fits",
        _name("M 51 light 1.fits"),
    ),
    Case(
        "name-quotes",
        "a file name with quotes",
        CALIBRATED,
        "",
        'it\'s a "light".fits',
        _name('it\'s a "light".fits'),
    ),
    Case(
        "name-unicode",
        "a file name in Unicode",
        CALIBRATED,
        "",
        "Lumière_星雲_Ω.fits",
        _name("Lumière_星雲_Ω.fits"),
    ),
    Case(
        "name-semicolon",
        "a file name with `;` and `$( )`",
        CALIBRATED,
        "",
        "light;rm -rf x;$(id).fits",
        _name("light;rm -rf x;$(id).fits"),
    ),
    Case(
        "filter-traversal",
        "FILTER = '../../x' (flats and a light)",
        CALIBRATED,
        "",
        "escape_light.fits",
        _filter("../../x", "escape"),
    ),
    Case(
        "filter-sql",
        'FILTER = "\'; DROP TABLE frames; --" (flats and a light)',
        CALIBRATED,
        "",
        "sql_light.fits",
        _filter("'; DROP TABLE frames; --", "sql"),
    ),
    Case(
        "folder-link-loop",
        "a folder holding a symbolic link to itself",
        CALIBRATED,
        "",
        "inner/looped.fits",
        _folder_link_loop,
    ),
    # Added by the reliability issue's second round: what ingest cannot look at, images without pixels,
    # a light already bias-subtracted.
    Case(
        "unreadable-folder",
        "a folder that cannot be read (mode 000) holding a light",
        NOT_READ,
        "cannot read the folder: Permission denied",
        "locked/inside.fits",
        _locked_light,
        locked=("locked", "---"),
    ),
    Case(
        "unsearchable-folder",
        "a folder that can be listed but not searched (mode r--) holding a light",
        NOT_READ,
        "cannot be looked at: Permission denied",
        "locked/inside.fits",
        _locked_light,
        locked=("locked", "r--"),
    ),
    Case(
        "zero-size-image",
        "NAXIS1 = 0 (an image without pixels)",
        REJECTED,
        "no image HDU",
        "zero_width.fits",
        _zero_size_image,
    ),
    Case(
        "already-subtracted",
        "a light whose dark was subtracted by the capture program (its level below the bias)",
        CALIBRATED,
        "",
        "auto_dark.fits",
        _already_subtracted,
    ),
    # Raw cards fitsverify rejects: converted or left out in the output, which passes fitsverify.
    Case(
        "date-impossible",
        "DATE-OBS = '2026-02-30T25:61:61', DATE-END = '2026-13-01', DATEREF = '1900-02-29'",
        CALIBRATED,
        "",
        "date_impossible.fits",
        _raw_cards(
            "date_impossible.fits",
            "DATE-OBS= '2026-02-30T25:61:61' / Time of observation (UTC)",
            "DATE-END= '2026-13-01T00:00:00'",
            "DATEREF = '1900-02-29'",
            "DATE-AVG= '2026-03-14T19:20:00+02:00'",
        ),
    ),
    Case(
        "date-forms",
        "DATE-OBS = '2026-03-14 19:20:00', DATE-END = '2026-03-14T19:21Z', DATE = ' 2026-03-15'",
        CALIBRATED,
        "",
        "date_forms.fits",
        _raw_cards(
            "date_forms.fits",
            "DATE-OBS= '2026-03-14 19:20:00' / Time of observation (UTC)",
            "DATE-END= '2026-03-14T19:21Z'",
            "DATE    = ' 2026-03-15'",
            "DATE-BEG=",
        ),
    ),
    Case(
        "number-forms",
        "FOCUSPOS = 1.5e3 (a lower-case exponent), AIRMASS = NaN, SKYTEMP = -inf, MJD-OBS = '61113.8'",
        CALIBRATED,
        "",
        "number_forms.fits",
        _raw_cards(
            "number_forms.fits",
            "FOCUSPOS=                1.5e3 / [step] focuser position",
            "AIRMASS =                  NaN",
            "SKYTEMP =                 -inf / [degC]",
            "MJD-OBS = '61113.8'",
        ),
    ),
    Case(
        "control-characters",
        "a tab in a COMMENT and in a string value, a byte outside ASCII in a comment",
        CALIBRATED,
        "",
        "control_chars.fits",
        _raw_cards(
            "control_chars.fits",
            "COMMENT written\tby a tab",
            "OBSNOTE = 'tab\there'",
            "FOCTEMP =                  4.5 / [\xb0C] focuser temperature",
        ),
    ),
    Case(
        "card-layout",
        "a keyword not left-justified, text after a string value, a DATE... keyword holding a number",
        CALIBRATED,
        "",
        "card_layout.fits",
        _raw_cards(
            "card_layout.fits", "   FOO  =                    1", "BAR     = 'a'b'", "DATE-LOC=   20260314"
        ),
    ),
    # File names: one that is not UTF-8 is rejected alone (the catalog stores paths as text); the others
    # are calibrated and traced back from their headers.
    Case(
        "name-latin1",
        "a file name in latin-1 (`Caf\\xe9.fits`: not valid UTF-8)",
        REJECTED,
        "the file name Caf\\xe9.fits is not valid UTF-8 (byte \\xe9, perhaps latin-1)",
        os.fsdecode(b"Caf\xe9.fits"),
        _name(os.fsdecode(b"Caf\xe9.fits")),
    ),
    Case(
        "name-undecodable",
        "a file name of bytes no text encodes to (`\\xff\\xfe\\xc3(`)",
        REJECTED,
        "rename the file",
        os.fsdecode(b"\xff\xfe\xc3(.fits"),
        _name(os.fsdecode(b"\xff\xfe\xc3(.fits")),
    ),
    Case(
        "folder-latin1",
        "a light in a folder whose name is latin-1",
        REJECTED,
        "the folder name Nuit_d\\xe9but is not valid UTF-8",
        os.fsdecode(b"Nuit_d\xe9but/light.fits"),
        _name(os.fsdecode(b"Nuit_d\xe9but/light.fits")),
    ),
    Case(
        "name-newline",
        "a file name with a newline",
        CALIBRATED,
        "",
        "new\nline.fits",
        _name("new\nline.fits"),
    ),
    Case("name-dash", "a file name starting with `-`", CALIBRATED, "", "-light.fits", _name("-light.fits")),
    Case(
        "name-long",
        "a file name longer than a HISTORY card, with `%` and a backslash",
        CALIBRATED,
        "",
        "a 100% light \\ " + "very " * 20 + "long.fits",
        _name("a 100% light \\ " + "very " * 20 + "long.fits"),
    ),
    # Files ccdcal wrote, found in a raw tree: never catalogued as raw frames (nothing calibrated twice).
    Case(
        "ccdcal-output",
        "a calibrated light ccdcal wrote (CCDCALV, BIASCOR ...), in the raw tree",
        SKIPPED_OUTPUT,
        "a calibrated frame written by ccdcal 0.1.0 (its CCDCALV card), not a raw frame",
        "Light_001_cal.fits",
        _raw_cards(
            "Light_001_cal.fits",
            "BIASCOR = 'master_bias_b2x2_g120_sNA_C-10.fits' / master bias subtracted",
            "CCDCALV = '0.1.0   '           / ccdcal version that wrote this file",
        ),
    ),
    Case(
        "ccdcal-master",
        "a master bias ccdcal wrote (IMAGETYP = 'MASTER BIAS', CCDCALV)",
        SKIPPED_OUTPUT,
        "a master bias written by ccdcal 0.1.0 (its CCDCALV card), not a raw frame",
        "master_bias_b2x2_g120_sNA_C-10.fits",
        _raw_cards(
            "master_bias_b2x2_g120_sNA_C-10.fits",
            "IMAGETYP= 'MASTER BIAS'        / ccdcal master calibration frame",
            "CCDCALV = '0.1.0   '           / ccdcal version that wrote this file",
        ),
    ),
    Case(
        "ccdcal-output-gzip",
        "a calibrated light ccdcal wrote, gzipped",
        SKIPPED_OUTPUT,
        "a calibrated frame written by ccdcal 0.1.0 (its CCDCALV card), not a raw frame",
        "Light_001_cal.fits.gz",
        _gzipped(
            "Light_001_cal.fits.gz", "CCDCALV = '0.1.0   '           / ccdcal version that wrote this file"
        ),
    ),
    Case(
        "iraf-calibrated",
        "a light with IRAF's BIASCOR, DARKCOR and FLATCOR cards (written by other software: no CCDCALV)",
        CALIBRATED,
        "",
        "iraf_light.fits",
        _raw_cards(
            "iraf_light.fits",
            "BIASCOR = 'Zero.fits'",
            "DARKCOR = 'Dark.fits'",
            "FLATCOR = 'Flat.fits'",
        ),
    ),
    # A filter whose name reduces as another's: its master flat is told apart, not given _v2.
    Case(
        "filter-alike",
        "FILTER = 'R!' (flats and a light), which reduces to the night's R in a file name",
        CALIBRATED,
        "",
        "alike_light.fits",
        _filter("R!", "alike"),
    ),
    # Masters without valid pixels are not built (at least half the pixels must be finite).
    Case(
        "all-nan-biases",
        "three all-NaN biases of their own set-up (and a light)",
        NOT_CALIBRATED,
        "no bias",
        "nan_light_b5.fits",
        _nan_biases(5, SHAPE[0]),
        master_message="b5x5 g120 C-10: only 0.0% of its pixels have a value",
    ),
    Case(
        "all-nan-darks",
        "three all-NaN 77 s darks (and a 77 s light)",
        NOT_CALIBRATED,
        "no dark at 77 s",
        "dark77_light.fits",
        _nan_darks,
        master_message="cannot build the dark master of group",
    ),
    Case(
        "all-nan-flats",
        "three all-NaN flats of a filter (and a light)",
        NOT_CALIBRATED,
        "no flat in filter AllNaN",
        "allnan_light.fits",
        lambda folder, t: _flats(folder, t, "allnan", _nan_rows(SHAPE[0]), FILTER="AllNaN"),
        master_message="filter AllNaN: allnan_flat_1.fits",
    ),
    Case(
        "mostly-nan-flats",
        "flats NaN on 25 of 48 rows: a master finite on 47.9% (below half)",
        NOT_CALIBRATED,
        "no flat in filter HalfNaN",
        "halfnan_light.fits",
        lambda folder, t: _flats(folder, t, "halfnan", _nan_rows(25), FILTER="HalfNaN"),
        master_message="filter HalfNaN: only 47.9% of its pixels have a value",
    ),
    Case(
        "mostly-nan-biases-below",
        "biases NaN on 25 of 48 rows: a master finite on 47.9% (below half)",
        NOT_CALIBRATED,
        "no bias",
        "nan_light_b4.fits",
        _nan_biases(4, 25),
        master_message="b4x4 g120 C-10: only 47.9% of its pixels have a value",
    ),
    Case(
        "mostly-nan-biases-above",
        "biases NaN on 23 of 48 rows: a master finite on 52.1% (above half)",
        CALIBRATED,
        "",
        "nan_light_b1.fits",
        _nan_biases(1, 23),
    ),
    # Provenance from the bytes read.
    Case(
        "rewritten-size-mtime-kept",
        "a light rewritten after ingest with its size and mtime kept (`cp -p` of another version)",
        FAILED,
        "raw file changed since it was catalogued (its sha256 differs); run `ccdcal ingest` on it again",
        "rewritten.fits",
        _name("rewritten.fits"),
        after_ingest=_rewritten_after_ingest,
    ),
    Case(
        "name-200-characters",
        "a file name of 200 characters (its temporary name must fit too)",
        CALIBRATED,
        "",
        LONG_NAME,
        _name(LONG_NAME),
    ),
    Case(
        "name-245-bytes-unicode",
        "a file name of 80 CJK characters, 245 bytes",
        CALIBRATED,
        "",
        LONG_UNICODE_NAME,
        _name(LONG_UNICODE_NAME),
    ),
    Case(
        "name-output-too-long",
        "a file name of 253 bytes, whose `_cal.fits` name would pass 255",
        NOT_CALIBRATED,
        "longer than the 255 the file system",
        TOO_LONG_NAME,
        _name(TOO_LONG_NAME),
    ),
)


# -- building and running ---------------------------------------------------------------------------


def build(root: Path) -> Path:
    """Write the good night and every case under ``root``; return ``root``."""
    from ccdcal.simulate import simulate_night

    night = simulate_night(root / NIGHT, seed=7, shape=SHAPE, n_bias=3, n_dark=3, n_flat=3, n_light=2)
    templates = Templates(light=night.files["light"][0], flat=night.files["flat"][-1])
    assert fits.getheader(templates.flat)["FILTER"] == "R"
    for case in CASES:
        folder = root / case_folder(case)
        folder.mkdir(parents=True)
        case.build(folder, templates)
    return root


def case_folder(case: Case) -> Path:
    """The case's folder, relative to the corpus root."""
    return Path(CASES_FOLDER) / case.name


@contextmanager
def unreadable_as_root(root: Path) -> Iterator[None]:
    """Make the unreadable case unreadable for root too (root reads mode-000 files): its open fails
    with EACCES, as it does for anybody else."""
    if os.geteuid() != 0:
        yield
        return
    import builtins

    from ccdcal.ingestion import reader

    target = str((root / CASES_FOLDER / "unreadable" / "secret.fits").resolve())
    real_open = builtins.open

    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(file) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(file, *args, **kwargs)

    reader.open = guarded  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del reader.open  # type: ignore[attr-defined]


def run(root: Path) -> CorpusRun:
    """Ingest and process the corpus under ``root`` with the CLI; the results of every case."""
    from typer.testing import CliRunner

    from ccdcal.cli import app

    runner = CliRunner()
    db = ["--db", str(root / "corpus.db")]
    with unreadable_as_root(root), ExitStack() as locks:
        for case in CASES:
            if case.locked is not None:
                folder, mode = case.locked
                locks.enter_context(unreadable(root / case_folder(case) / folder, listable=mode == "r--"))
        ingested = runner.invoke(app, [*db, "ingest", "--json", "--jobs", "1", str(root)])
    for case in CASES:
        if case.after_ingest is not None:
            case.after_ingest(root / case_folder(case))
    folders = ["--masters-dir", str(root / "masters"), "--output-dir", str(root / "calibrated")]
    processed = runner.invoke(app, [*db, "process", "--json", "--jobs", "1", *folders])
    if ingested.exception and not isinstance(ingested.exception, SystemExit):
        raise ingested.exception
    if processed.exception and not isinstance(processed.exception, SystemExit):
        raise processed.exception
    corpus = CorpusRun(
        root=root,
        ingest_exit=ingested.exit_code,
        process_exit=processed.exit_code,
        ingest=json.loads(ingested.stdout),
        process=json.loads(processed.stdout),
        ingest_stderr=ingested.stderr,
        process_stderr=processed.stderr,
    )
    corpus.results = [_result(corpus, case) for case in CASES]
    return corpus


def _result(corpus: CorpusRun, case: Case) -> Result:
    from ccdcal.runtime.pathtext import shown as text_of

    folder = corpus.root / case_folder(case)
    subject = os.path.abspath(folder / case.subject)
    resolved = str(Path(subject).resolve()) if not Path(subject).is_symlink() else subject
    for path, reason in ((r["path"], r["reason"]) for r in corpus.ingest["rejected"]):
        if path in (subject, resolved, text_of(resolved)):
            return Result(case, REJECTED, reason)
    for path, reason in ((r["path"], r["reason"]) for r in corpus.ingest["not_read"]):
        if path in (subject, resolved) or subject.startswith(path + os.sep):
            return Result(case, NOT_READ, f"{path}: {reason}")
    for path, note in ((r["path"], r["note"]) for r in corpus.ingest["skipped"]):
        if path in (subject, resolved):
            return Result(case, SKIPPED_OUTPUT, note)
    if resolved in corpus.ingest["unclassified"]:
        return Result(case, UNCLASSIFIED, "no type in the header or folder name: listed as unclassified")
    for light in corpus.process["lights"]:
        if light["path"] in (subject, resolved):
            outcome = {"calibrated": CALIBRATED, "cannot": NOT_CALIBRATED, "failed": FAILED}[light["outcome"]]
            result = Result(case, outcome, light["reason"] if outcome != CALIBRATED else "", light["output"])
            result.flat = (light["steps"].get("flat") or {}).get("path")
            result.warnings = list(light["warnings"])
            return result
    return Result(case, SKIPPED_SILENTLY, "")


def master_reasons(corpus: CorpusRun) -> list[str]:
    """The reasons of the master groups the process run skipped."""
    return [m["reason"] for m in corpus.process["masters"] if m["outcome"] == "skipped"]


def shown(corpus: CorpusRun, text: str) -> str:
    """A message as the table shows it: the corpus folder written as ``…``."""
    root = str(corpus.root.resolve())
    return text.replace(root, "…").replace(str(corpus.root), "…")


def markdown(corpus: CorpusRun) -> str:
    """``docs/hostile-inputs.md``: the cases, what ccdcal does with each, and the message it records."""
    lines = [
        "# Hostile inputs",
        "",
        "What `ccdcal ingest` and `ccdcal process` do with broken, odd or malicious files. Every case is",
        "built by `tests/robustness/corpus.py` beside a good simulated night and run through both commands",
        "by `tests/robustness/test_corpus.py`: each run finishes, every good frame is calibrated, each bad",
        "item is recorded with the message below (`…` is the corpus folder), and the exit status is 1: some",
        "frames rejected, not read or not calibrated (docs/design.md, Commands and exit codes).",
        f"{len(CASES)} cases.",
        "This file is generated: `python -m tests.robustness.corpus docs/hostile-inputs.md` (a test fails",
        "when it is out of date).",
        "",
        "| case | input | outcome | message |",
        "|---|---|---|---|",
    ]
    for result in corpus.results:
        message = shown(corpus, result.message)
        if result.case.master_message:
            reasons = [r for r in master_reasons(corpus) if result.case.master_message in r]
            if reasons:
                message += f" (master group skipped: {shown(corpus, reasons[0])})"
        if result.outcome == CALIBRATED and result.output:
            message = f"output `{Path(result.output).name}`"
            if result.case.name.startswith("filter-") and result.flat:
                message += f", master flat `{Path(result.flat).name}`"
            message += "".join(f"; warning: {shown(corpus, w)}" for w in result.warnings)
        message = message.replace("|", "\\|").replace("\n", "\\n")
        cells = [f"`{result.case.name}`", result.case.what, result.outcome, message]
        lines.append("| " + " | ".join(cells) + " |")
    lines += situations.markdown()
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else None
    with tempfile.TemporaryDirectory() as tmp:
        corpus = run(build(Path(tmp)))
        text = markdown(corpus)
    if target is None:
        sys.stdout.write(text)
    else:
        target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


__all__ = ["CASES", "Case", "CorpusRun", "Result", "build", "markdown", "run"]
