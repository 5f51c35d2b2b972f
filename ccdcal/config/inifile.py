"""The ``ccdcal run`` config file itself: its options, and reading their values with line numbers.

:data:`DEFAULT_CONFIG` (the commented file ``ccdcal run --write-config`` writes) declares every option;
:data:`KINDS` says how each value is read (:func:`convert`). :func:`read_file` parses a file with
:mod:`configparser` and finds the line of each section and option, so that every message names it.
:mod:`ccdcal.config.run` turns the values into a checked :class:`~ccdcal.config.run.SeedConfig` and runs it.
"""

from __future__ import annotations

import configparser
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdcal import limits
from ccdcal.errors import ConfigError, UsageError
from ccdcal.ingestion.normalise import normalise_imagetyp

#: The sections, in file order.
SECTIONS = ("GENERAL", "MASTERS", "CALIBRATION", "QA")

#: Default catalog file, beside the config.
DEFAULT_DATABASE = "ccdcal.db"

#: The fully commented default file (``ccdcal run --write-config``). It also declares every option: its
#: section, name, default and meaning (the comment above it; ``(ccdcal)`` marks one the seed did not have).
DEFAULT_CONFIG = """\
# ccdcal run configuration: the script pipeline's config.ini, with ccdcal's additions.
#
# Run it with:  ccdcal run config.ini    (the path of this file; ./config.ini when none is given)
# Relative paths are relative to the folder of this file. Yes/no values: yes or no (also true/false,
# on/off, 1/0). Any option may be left out: the value written here is its default.

[GENERAL]
# Print the details of every step: masters built, each light with its masters (the seed's verbose
# console logging; as ccdcal -v).
debug = no
# (ccdcal) The catalog: a file (SQLite) or a SQLAlchemy URL such as postgresql+psycopg://user@host/db.
# ccdcal --db and the CCDCAL_DB environment variable take precedence.
database = ccdcal.db
# (ccdcal) Worker processes reading headers and calibrating lights: auto, or a number.
jobs = auto
# (ccdcal) Raw samples at or above this many ADU are saturated: left out of masters and flagged in the
# calibrated frames' MASK. Empty: each frame's SATURATE, DATAMAX or MAXLIN card, else its data type's
# maximum (65535 for 16-bit cameras).
saturation =

[MASTERS]
# Folder of the raw frames (BIAS/ DARK/ FLAT/ LIGHT/ ...), catalogued recursively when a master is
# built; a folder name gives the frame type when a header has none.
raw_root = ../raw
# Folder the master frames are written to (created when absent).
master_output = masters
# Build master biases. no: use the catalog's current ones; lights are calibrated without a bias when
# none matches.
build_bias = yes
# Build master darks (one per exposure). no: use the catalog's current ones; lights are calibrated
# without a dark when none matches.
build_dark = yes
# Build master flats (one per filter). no: use the catalog's current ones; lights are calibrated
# without a flat when none matches.
build_flat = yes
# Flats: subtract the nearest dark (preferring a longer one) scaled to the flats' exposure, as
# --flat-dark-scale does. no: only a dark at the flats' own exposure, else the bias alone. Not with
# no_bias = yes.
dark_scale = no
# (ccdcal) Smallest group of raw frames combined into a master.
min_frames = 3
# (ccdcal) Sigma-clipping bounds, low and high, in robust standard deviations.
sigma = 3
# (ccdcal) Sigma-clipping iterations.
iterations = 5
# (ccdcal) Clipping dispersion: mad_std or std.
dispersion = mad_std
# (ccdcal) Memory the combine may use: 512M, 2G ...
mem_limit = 2G
# (ccdcal) |ΔT| in °C allowed between a master bias or dark and the frames it pre-calibrates.
temp_tolerance = 2
# (ccdcal) The largest time between a light's DATE-OBS and the frames of the master bias it is given:
# 30d, 12h, 2w. Empty: any age.
max_age_bias =
# (ccdcal) The same for master darks (empty: any age, so a dark library keeps serving).
max_age_dark =
# (ccdcal) The same for master flats (dust moves: observatories often use a week or less).
max_age_flat =

[CALIBRATION]
# Folder of the frames to calibrate, catalogued recursively (default: raw_root).
input_root = ../raw
# Folder of the calibrated frames, named {raw name}_cal.fits (created when absent).
output_dir = calibrated
# Folder the masters are read from. ccdcal finds them through its catalog, so this must be the folder
# of master_output (default: master_output).
master_files = masters
# Frame type calibrated (IMAGETYP, normalised: LIGHT, Light Frame, OBJECT, SCIENCE ...): ccdcal
# calibrates light frames.
file_type = LIGHT
# Subtract no bias: darks keep the bias (built _withbias) and are used at their own exposure only.
no_bias = no
# Use the dark of nearest exposure (preferring a longer one) scaled by t_light / t_dark; no: the dark
# of the light's exposure.
dark_scale = no
# (ccdcal) |ΔT| in °C allowed between a master and a light.
temp_tolerance = 2
# (ccdcal) Relative exposure difference allowed for an unscaled dark.
exptime_tolerance = 1e-6
# (ccdcal) Flat pixels below this are clamped and flagged in the output's MASK extension.
flat_min = 0.01
# (ccdcal) Flat pixels below this (a low response: vignetted) are flagged in the output's MASK
# extension; above flat_min, below 1.
flat_low = 0.5
# (ccdcal) Write the frames no calibration step applies to (no bias, dark, flat or overscan), their
# pixels the raw frame's; no: list them with the reason, unwritten.
write_uncalibrated = no

[QA]
# (ccdcal) Frame QA: set a bad bias, dark or flat aside, with the reason, before it is combined into a
# master. no: combine every usable frame (as --no-frame-qa).
frame_qa = yes
# (ccdcal) A bias or dark whose level, noise or gradient strays from its group's by more than this many
# robust standard deviations is set aside (as --qa-outlier-sigma).
outlier_sigma = 10
# (ccdcal) A dark or flat whose CCD temperature is further than this many °C from its group's set point
# (the median of its frames') is set aside (as --qa-temp-tolerance).
temp_tolerance = 2
# (ccdcal) A flat whose signal after the bias is below this many times its pixel-to-pixel noise is set
# aside (as --qa-flat-min-snr).
flat_min_snr = 5
# (ccdcal) A flat whose signal after the bias is below this share of its group's median signal is set
# aside (as --qa-flat-min-fraction).
flat_min_fraction = 0.1
# (ccdcal) A flat with more than this share of its pixels saturated is set aside (as
# --qa-flat-max-saturated).
flat_max_saturated = 0.05
# (ccdcal) A flat whose level is above this share of its saturation level (the non-linear range) is set
# aside (as --qa-flat-max-level).
flat_max_level = 0.9
# (ccdcal) A bias or dark with more than this share of its pixels ten times its noise above its group's
# median frame, and five times the group's share (stars: a light), is set aside (as --qa-tail-fraction).
tail_fraction = 0.01
"""

#: How each option's value is read (see :func:`convert`): ``folder_in`` must exist, ``folder_out`` is
#: created; ``count`` is a whole number ≥ 1, ``number`` ≥ 0, ``positive`` > 0; ``saturation`` a number, or
#: empty for none.
KINDS = {
    **dict.fromkeys(
        (
            "debug",
            "build_bias",
            "build_dark",
            "build_flat",
            "dark_scale",
            "no_bias",
            "write_uncalibrated",
            "frame_qa",
        ),
        "bool",
    ),
    **dict.fromkeys(("raw_root", "input_root"), "folder_in"),
    **dict.fromkeys(("master_output", "output_dir", "master_files"), "folder_out"),
    **dict.fromkeys(("min_frames", "iterations"), "count"),
    **dict.fromkeys(("temp_tolerance", "exptime_tolerance", "flat_min_snr"), "number"),
    **dict.fromkeys(("flat_min_fraction", "flat_max_saturated"), "number"),
    **dict.fromkeys(("sigma", "flat_min", "flat_low", "outlier_sigma"), "positive"),
    **dict.fromkeys(("flat_max_level", "tail_fraction"), "positive"),
    **{"database": "database", "jobs": "jobs", "dispersion": "dispersion", "mem_limit": "size"},
    "saturation": "saturation",
    "file_type": "frame_type",
    **dict.fromkeys(("max_age_bias", "max_age_dark", "max_age_flat"), "age"),
}


@dataclass(frozen=True)
class Option:
    """One option: ``[section]`` then ``name = value``; its default and meaning as in
    :data:`DEFAULT_CONFIG`, its kind from :data:`KINDS`, the ``field`` of
    :class:`~ccdcal.config.run.SeedConfig` it sets, and whether the seed pipeline had it."""

    section: str
    name: str
    kind: str
    default: str
    help: str
    field: str
    seed: bool


def _options() -> tuple[Option, ...]:
    """The options declared by :data:`DEFAULT_CONFIG`, in its order."""
    options: list[Option] = []
    section, comment = "", list[str]()
    for line in DEFAULT_CONFIG.splitlines():
        if not line or line.startswith("["):
            section, comment = line.strip("[]") or section, []
        elif line.startswith("#"):
            comment.append(line[1:].strip())
        else:
            name, default = (part.strip() for part in line.split("=", 1))
            text = " ".join(comment)
            field_ = _field(section, name)
            seed = not text.startswith("(ccdcal)")
            options.append(
                Option(section, name, KINDS[name], default, text.removeprefix("(ccdcal) "), field_, seed)
            )
            comment = []
    return tuple(options)


def _field(section: str, name: str) -> str:
    """The field of :class:`~ccdcal.config.run.SeedConfig` an option sets: its name, but for the names
    another section has too (``masters_dark_scale``, ``masters_temp_tolerance``) and the thresholds of
    ``[QA]`` (``qa_outlier_sigma`` ...: the options ``--qa-...``)."""
    if section == "MASTERS" and name in ("dark_scale", "temp_tolerance"):
        return f"masters_{name}"
    if section == "QA" and name != "frame_qa":
        return f"qa_{name}"
    return name


#: Every option, in the order of the default file.
OPTIONS = _options()
BY_SECTION: dict[str, dict[str, Option]] = {
    s: {o.name: o for o in OPTIONS if o.section == s} for s in SECTIONS
}

#: Options whose default, when absent from the file, is another option's value.
DERIVED = {"input_root": "raw_root", "master_files": "master_output"}


#: The range of each numeric option, by the field it sets (:attr:`Option.field`; :mod:`ccdcal.limits`):
#: the command line's and the API's.
RANGES = {
    "min_frames": limits.MIN_FRAMES,
    "iterations": limits.ITERATIONS,
    "sigma": limits.SIGMA,
    "masters_temp_tolerance": limits.TEMP_TOLERANCE,
    "temp_tolerance": limits.TEMP_TOLERANCE,
    "exptime_tolerance": limits.EXPTIME_TOLERANCE,
    "flat_min": limits.FLAT_MIN,
    "flat_low": limits.FLAT_LOW,
    "saturation": limits.SATURATION,
    "jobs": limits.JOBS,
    "mem_limit": limits.MEM_LIMIT,
    "qa_outlier_sigma": limits.QA_OUTLIER_SIGMA,
    "qa_temp_tolerance": limits.QA_TEMP_TOLERANCE,
    "qa_flat_min_snr": limits.QA_FLAT_MIN_SNR,
    "qa_flat_min_fraction": limits.QA_FLAT_MIN_FRACTION,
    "qa_flat_max_saturated": limits.QA_FLAT_MAX_SATURATED,
    "qa_flat_max_level": limits.QA_FLAT_MAX_LEVEL,
    "qa_tail_fraction": limits.QA_TAIL_FRACTION,
}


class BadValue(Exception):
    """A value that cannot be used; the message says why and what to write."""


_BOOLEANS = configparser.ConfigParser.BOOLEAN_STATES
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int | None:
    """``512M``, ``2G``, ``1.5GiB``, ``1500000`` → bytes; ``None`` when ``text`` is not a positive size."""
    found = _SIZE.match(text)
    if found is None:
        return None
    size = int(float(found[1]) * _SIZE_UNITS[found[2].upper()])
    return size if size > 0 else None


def convert(option: Option, raw: str, folder: Path) -> Any:
    """The value of ``option`` written as ``raw``; raises :class:`BadValue` with the problem and the fix
    (a number outside its range, :data:`RANGES`, included)."""
    value = _convert(option, raw, folder)
    limit = RANGES.get(option.field)
    if limit is not None and value is not None and not limit.contains(value):
        example = {"auto": "4", "": "65535"}.get(option.default, option.default)  # jobs, saturation
        raise BadValue(
            f"{option.name} = {raw} is out of range: use {limit.text}; write e.g. {option.name} = {example}"
        )
    return value


def _convert(option: Option, raw: str, folder: Path) -> Any:
    name, kind = option.name, option.kind
    if kind == "age":
        try:
            return limits.parse_age(raw, f"{name} = ") if raw else None
        except UsageError as exc:
            raise BadValue(f"{exc}; write e.g. {name} = 7d, or leave it empty (any age)") from None
    if not raw and kind not in ("folder_in", "folder_out", "database", "jobs", "saturation"):
        example = f"{name} = yes or {name} = no" if kind == "bool" else f"e.g. {name} = {option.default}"
        raise BadValue(f"{name} has no value; write {example}")
    if kind == "bool":
        if raw.lower() not in _BOOLEANS:
            raise BadValue(f"{name} = {raw} is not yes or no; write {name} = yes or {name} = no")
        return _BOOLEANS[raw.lower()]
    if kind in ("count", "jobs"):
        if kind == "jobs" and raw.lower() in ("auto", ""):
            return None
        if not re.fullmatch(r"\+?\d+", raw) or int(raw) < 1:
            example = "jobs = auto or e.g. jobs = 4" if kind == "jobs" else f"e.g. {name} = {option.default}"
            raise BadValue(f"{name} = {raw} is not a whole number of at least 1; write {example}")
        return int(raw)
    if kind == "saturation":
        if not raw:
            return None
        try:
            level = float(raw)
        except ValueError:
            level = math.nan
        if not math.isfinite(level):
            raise BadValue(
                f"{name} = {raw} is not a number of ADU; write e.g. {name} = 65535, or leave it empty (the "
                "header's level)"
            )
        return level
    if kind in ("number", "positive"):
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0 or (kind == "positive" and number == 0):
            least = "above 0" if kind == "positive" else "of 0 or more"
            raise BadValue(f"{name} = {raw} is not a number {least}; write e.g. {name} = {option.default}")
        return number
    if kind == "dispersion":
        if raw not in ("mad_std", "std"):
            raise BadValue(f"{name} = {raw} is not mad_std or std; write {name} = mad_std or {name} = std")
        return raw
    if kind == "size":
        size = parse_size(raw)
        if size is None:
            raise BadValue(
                f"{name} = {raw} is not a size such as 512M or 2G; write e.g. {name} = {option.default}"
            )
        return size
    if kind == "frame_type":
        found = normalise_imagetyp(raw)
        if found is None:
            raise BadValue(f"{name} = {raw} is not a frame type; write {name} = LIGHT")
        if found != "light":
            raise BadValue(
                f"{name} = {raw} names {found} frames: ccdcal calibrates light frames; write {name} = LIGHT"
            )
        return found
    if kind == "database":
        return _database(raw, folder)
    return _folder(option, raw, folder)


def _folder(option: Option, raw: str, folder: Path) -> Path:
    name = option.name
    if not raw:
        raise BadValue(f"{name} is empty; write {name} = FOLDER (relative to the config file's folder)")
    path = (folder / Path(raw).expanduser()).resolve()
    if path.exists() and not path.is_dir():
        raise BadValue(f"{name} = {raw}: {path} is a file, not a folder; give a folder")
    if option.kind == "folder_in" and not path.exists():
        raise BadValue(f"{name} = {raw}: folder {path} does not exist; create it or correct the path")
    return path


def _database(raw: str, folder: Path) -> str | None:
    if not raw:
        return None
    if "://" in raw:
        # Imported here to keep start-up fast: SQLAlchemy loads only for a database URL.
        from sqlalchemy.engine import make_url

        try:
            make_url(raw)
        except Exception as exc:  # SQLAlchemy raises ArgumentError and ValueError subclasses here
            raise BadValue(
                f"database = {raw} is not a database URL ({exc}); write a file name such as ccdcal.db "
                "or a URL such as postgresql+psycopg://user@host/db"
            ) from None
        return raw
    path = (folder / Path(raw).expanduser()).resolve()
    if path.is_dir():
        raise BadValue(
            f"database = {raw}: {path} is a folder; give a file name such as {raw.rstrip('/')}/ccdcal.db"
        )
    if not path.parent.is_dir():
        raise BadValue(
            f"database = {raw}: folder {path.parent} does not exist; create it or correct the path"
        )
    return str(path)


def _locate(text: str) -> dict[tuple[str, str | None], int]:
    """Line numbers of the section headers ``(section, None)`` and options ``(section, option)`` in
    ``text``, read as :mod:`configparser` reads them (first occurrence of each)."""
    found: dict[tuple[str, str | None], int] = {}
    section: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = re.match(r"\[(.+)\]", stripped)
        if header:
            section = header[1]
            found.setdefault((section, None), number)
        elif section is not None and (key := re.match(r"([^=:]*?)\s*[=:]", stripped)):
            found.setdefault((section, key[1].lower()), number)
    return found


def _read(path: Path, shown: str) -> str:
    if path.is_dir():
        raise ConfigError(f"{shown} is a folder, not a config file; give the path of your config.ini")
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            f"{shown}: no such file; give the path of your config.ini, or write a commented default with "
            f"`ccdcal run --write-config {shown}`"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown} is not a UTF-8 text file; save it as UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{shown} cannot be read: {exc.strerror or exc}") from None


def _parse(text: str, shown: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        default_section="\x00no default section",  # [DEFAULT] is an ordinary (unknown) section
        inline_comment_prefixes=("#", ";"),
        strict=True,
    )
    try:
        parser.read_string(text, source=shown)
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(
            f"{shown}, line {exc.lineno}: {exc.line.strip()!r} comes before any section; put it under "
            "[GENERAL], [MASTERS], [CALIBRATION] or [QA]"
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(
            f"{shown}, line {exc.lineno}: section [{exc.section}] appears a second time; merge the two"
        ) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"{shown}, line {exc.lineno}: {exc.option} appears a second time in [{exc.section}]; keep one"
        ) from None
    except configparser.ParsingError as exc:
        number = exc.errors[0][0]  # (line number, repr of the line)
        line = text.splitlines()[number - 1].strip()
        raise ConfigError(f"{shown}, line {number}: {line!r} is not an option; write name = value") from None
    return parser


def unknown_section(section: str) -> str:
    """The message for an unknown section: the closest known one, and the list."""
    close = difflib.get_close_matches(section.strip().upper(), SECTIONS, n=1, cutoff=0.6)
    hint = f"did you mean [{close[0]}]? " if close else ""
    return f"unknown section [{section}]; {hint}the sections are [GENERAL], [MASTERS], [CALIBRATION] and [QA]"


def unknown_option(section: str, name: str) -> str:
    """The message for an unknown option: the section it belongs in, else the closest one, else the list."""
    elsewhere = [s for s in SECTIONS if name in BY_SECTION[s]]
    if elsewhere:
        return f"{name} is not an option of [{section}]; move it to [{elsewhere[0]}]"
    close = difflib.get_close_matches(name, list(BY_SECTION[section]), n=1, cutoff=0.6)
    if close:
        return f"unknown option {name} in [{section}]; did you mean {close[0]}?"
    return f"unknown option {name} in [{section}]; its options are {', '.join(BY_SECTION[section])}"


def read_file(path: Path, shown: str) -> tuple[configparser.ConfigParser, dict[tuple[str, str | None], int]]:
    """Parse a config file; raise :class:`ConfigError` (file and line) when it cannot be read or parsed.

    Returns
    -------
    parser : ConfigParser
        The sections and options, in file order.
    lines : dict
        The line number of each section header ``(section, None)`` and option ``(section, option)``.
    """
    text = _read(path, shown)
    return _parse(text, shown), _locate(text)
