"""The sane range of every numeric option: one table, checked where each value is parsed.

Each :class:`Range` names its option as the command line spells it and says what a value must be. The
option objects check their fields against it in their constructors (``ProcessOptions``, ``MasterOptions``,
``StepOptions``, ``ClipParams``, ``CosmicParams``, ``MatchRules``), so the command line, ``ccdcal run``'s
``config.ini`` and the Python API refuse the same values with the same one-line message; the commands'
``--help`` shows each range (:attr:`Range.text`). A value outside its range is a usage error (exit 2):
``--flat-min 1e30`` would clamp every flat pixel, ``--temp-tolerance nan`` would match nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass

from ccdcal.errors import UsageError


@dataclass(frozen=True)
class Range:
    """The values an option may take.

    Attributes
    ----------
    option : str
        The option as the command line spells it (``--flat-min``).
    low, high : float
        The bounds.
    low_open, high_open : bool
        Whether a bound itself is excluded.
    integer : bool
        Whole numbers only.
    unit : str
        The unit shown after the range (``°C``, ``e-/ADU`` ...).
    shown : str
        The range as written, when the bounds alone do not read well.
    """

    option: str
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    unit: str = ""
    #: The range as shown, when the bounds alone do not read well (``16M <= x <= 64T``).
    shown: str = ""

    @property
    def text(self) -> str:
        """The range as written in messages and ``--help``: ``0 < x < 1``, ``1 <= x <= 1024``."""
        if self.shown:
            return self.shown
        low = "<" if self.low_open else "<="
        high = "<" if self.high_open else "<="
        unit = f" {self.unit}" if self.unit else ""
        kind = "a whole number " if self.integer else ""
        return f"{kind}{_number(self.low)} {low} x {high} {_number(self.high)}{unit}"

    def contains(self, value: object) -> bool:
        """Whether ``value`` is a number (whole when :attr:`integer`) within the range."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        number = float(value)
        if not math.isfinite(number) or (self.integer and not number.is_integer()):
            return False
        above = number > self.low if self.low_open else number >= self.low
        below = number < self.high if self.high_open else number <= self.high
        return above and below

    def check(self, value: object) -> None:
        """Raise :class:`UsageError` naming the option and its range when ``value`` is outside it."""
        if not self.contains(value):
            shown = _number(value) if isinstance(value, numbers.Real) else repr(value)
            raise UsageError(f"{self.option} {shown} is out of range: use {self.text}")


def _number(value: object) -> str:
    """A bound or a value as written in messages: ``1``, ``0.01``, ``1e+30``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return repr(value)


MIB, TIB = 1 << 20, 1 << 40

#: ``process --flat-min``: a master flat's pixels are near 1 (median 1); 1 or more would clamp them all.
FLAT_MIN = Range("--flat-min", 0.0, 1.0, low_open=True, high_open=True)
#: ``process --flat-low``: flat pixels below it are flagged as low response (vignetted); it must also be
#: above ``--flat-min`` (:func:`check_flat_low`).
FLAT_LOW = Range("--flat-low", 0.0, 1.0, low_open=True, high_open=True)
#: ``--saturation`` (masters, process): raw samples at or above it are saturated, in the raw frame's ADU.
SATURATION = Range("--saturation", 0.0, 1e20, low_open=True, unit="ADU")
#: ``--temp-tolerance`` (masters, process): |ΔT| allowed between a master and its frames.
TEMP_TOLERANCE = Range("--temp-tolerance", 0.0, 100.0, unit="°C")
#: ``process --exptime-tolerance``: relative exposure difference of a dark used unscaled.
EXPTIME_TOLERANCE = Range("--exptime-tolerance", 0.0, 0.5)
#: ``masters --sigma``: the clipping bounds, in standard deviations.
SIGMA = Range("--sigma", 0.5, 100.0)
#: ``masters --iterations``: clipping passes.
ITERATIONS = Range("--iterations", 1, 100, integer=True)
#: ``--min-frames``: the smallest group combined (a master counts its samples in 16 bits).
MIN_FRAMES = Range("--min-frames", 1, 65535, integer=True)
#: ``--mem-limit``: the memory one combine may hold.
MEM_LIMIT = Range("--mem-limit", 16 * MIB, 64 * TIB, integer=True, shown="16M <= x <= 64T")
#: ``--jobs`` (ingest, process, audit; ``jobs`` of config.ini).
JOBS = Range("--jobs", 1, 1024, integer=True)
#: ``process --gain``: electrons per ADU.
GAIN = Range("--gain", 0.001, 1000.0, unit="e-/ADU")
#: ``process --readnoise``: electrons.
READNOISE = Range("--readnoise", 0.0, 1000.0, unit="e-")
#: ``process --cr-sigclip``: L.A.Cosmic's detection limit.
CR_SIGCLIP = Range("--cr-sigclip", 0.0, 100.0, low_open=True)
#: ``process --cr-objlim``: L.A.Cosmic's contrast limit.
CR_OBJLIM = Range("--cr-objlim", 0.0, 100.0, low_open=True)
#: ``--max-age`` (process; ``max_age_bias`` ... of config.ini): the largest time between a light and the
#: frames of the master it is given, in days.
MAX_AGE = Range("--max-age", 0.0, 36525.0, low_open=True, unit="days")
#: ``preview --max-size``: the longest side in pixels (0: every pixel).
MAX_SIZE = Range("--max-size", 0, 65536, integer=True, unit="pixels")
#: ``preview --hdu``: the HDU shown.
HDU = Range("--hdu", 0, 9999, integer=True)
#: ``simulate --seed``: NumPy's seeds are non-negative.
SEED = Range("--seed", 0, 2**63 - 1, integer=True, shown="a whole number x >= 0")
#: ``report --run``: a run id.
RUN_ID = Range("--run", 1, 2**63 - 1, integer=True, shown="a whole number x >= 1")

#: Frame QA (``ccdcal masters``, ``process``, ``[QA]``): how far a frame may stray from its group.
QA_OUTLIER_SIGMA = Range("--qa-outlier-sigma", 1.0, 1e6, unit="sigma")
QA_TEMP_TOLERANCE = Range("--qa-temp-tolerance", 0.0, 100.0, low_open=True, unit="°C")
QA_FLAT_MIN_SNR = Range("--qa-flat-min-snr", 0.0, 1e6)
QA_FLAT_MIN_FRACTION = Range("--qa-flat-min-fraction", 0.0, 1.0, high_open=True)
QA_FLAT_MAX_SATURATED = Range("--qa-flat-max-saturated", 0.0, 1.0)
QA_FLAT_MAX_LEVEL = Range("--qa-flat-max-level", 0.0, 1.0, low_open=True)
QA_TAIL_FRACTION = Range("--qa-tail-fraction", 0.0, 1.0, low_open=True)

#: Every range, by option (``--help`` and the README's table show them).
RANGES = {
    r.option: r
    for r in (
        FLAT_MIN,
        FLAT_LOW,
        SATURATION,
        QA_OUTLIER_SIGMA,
        QA_TEMP_TOLERANCE,
        QA_FLAT_MIN_SNR,
        QA_FLAT_MIN_FRACTION,
        QA_FLAT_MAX_SATURATED,
        QA_FLAT_MAX_LEVEL,
        QA_TAIL_FRACTION,
        TEMP_TOLERANCE,
        EXPTIME_TOLERANCE,
        SIGMA,
        ITERATIONS,
        MIN_FRAMES,
        MEM_LIMIT,
        JOBS,
        GAIN,
        READNOISE,
        CR_SIGCLIP,
        CR_OBJLIM,
        MAX_AGE,
        MAX_SIZE,
        HDU,
        SEED,
        RUN_ID,
    )
}


def check_flat_low(flat_low: object, flat_min: float) -> None:
    """Raise :class:`UsageError` unless ``flat_low`` is within :data:`FLAT_LOW` and above ``flat_min``
    (a low-response threshold at or below the clamp would flag nothing the clamp does not)."""
    FLAT_LOW.check(flat_low)
    assert isinstance(flat_low, numbers.Real)
    if not float(flat_low) > flat_min:
        raise UsageError(
            f"--flat-low {_number(flat_low)} is out of range: use {_number(flat_min)} < x < 1 "
            "(above --flat-min)"
        )


def parse_utc(text: str, option: str) -> dt.datetime:
    """An ISO date or date-time (``2026-03-14``, ``2026-03-14T18:00``, ``...+01:00``) as naive UTC, for
    ``option`` (``--since``, ``--as-of``, ``--from``, ``--to``). A value without an offset is UTC.

    Raises
    ------
    UsageError
        The text is not an ISO date, or is outside the years 1 to 9999 in UTC.
    """
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date: give an ISO date such as 2026-03-14 or 2026-03-14T18:00 "
            "(UTC unless an offset such as +01:00 is given)"
        ) from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+01:00 in UTC is before the first date there is
            raise UsageError(
                f"{option} {text!r}: in UTC that is outside the years 1 to 9999; give another date"
            ) from None
    return value


#: The units of an age (``--max-age``, ``max_age_*`` of config.ini), in seconds: days, hours, weeks.
AGE_UNITS = {"d": 86400.0, "h": 3600.0, "w": 7 * 86400.0}


def parse_age(value: str, option: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w`` (a bare number is days) as a time span within :data:`MAX_AGE`.

    Raises
    ------
    UsageError
        Not an age, or out of range (naming ``option``, written before the value: ``--max-age flat=``).
    """
    text = value.strip()
    unit = text[-1:].lower()
    number = text[:-1] if unit in AGE_UNITS else text
    try:
        days = float(number) * AGE_UNITS.get(unit, 86400.0) / 86400.0
    except ValueError:
        raise UsageError(f"{option}{value} is not an age: write it as 30d, 12h or 2w") from None
    if not MAX_AGE.contains(days):
        raise UsageError(f"{option}{value} is out of range: use {MAX_AGE.text}")
    return dt.timedelta(days=days)
