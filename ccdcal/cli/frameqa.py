"""The frame-QA options of ``ccdcal masters`` and ``ccdcal process``: ``--no-frame-qa`` and the thresholds
of the rules that set a bad bias, dark or flat aside before it is combined (``--qa-...``), made into the
:class:`~ccdcal.masters.frameqa.QaOptions` of the master build by :func:`qa_options`.

The defaults are :class:`~ccdcal.masters.frameqa.QaOptions`'s (tests/config/test_inifile.py holds the
commands' defaults to the library's); each range is :mod:`ccdcal.limits`'s, checked by ``QaOptions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ccdcal import limits

if TYPE_CHECKING:
    from ccdcal.masters.frameqa import QaOptions

NoFrameQaOption = Annotated[
    bool,
    typer.Option(
        "--no-frame-qa",
        help="Combine every usable bias, dark and flat: no frame-QA rule sets one aside.",
    ),
]
QaOutlierSigmaOption = Annotated[
    float,
    typer.Option(
        "--qa-outlier-sigma",
        metavar="SIGMA",
        help="Set aside a bias or dark whose level, noise or gradient strays from its group's by more "
        f"than this many robust standard deviations ({limits.QA_OUTLIER_SIGMA.text}).",
    ),
]
QaTempToleranceOption = Annotated[
    float,
    typer.Option(
        "--qa-temp-tolerance",
        metavar="CELSIUS",
        help="Set aside a dark or flat whose CCD temperature is further than this from its group's set "
        f"point, the median of its frames' ({limits.QA_TEMP_TOLERANCE.text}).",
    ),
]
QaFlatMinSnrOption = Annotated[
    float,
    typer.Option(
        "--qa-flat-min-snr",
        metavar="RATIO",
        help="Set aside a flat whose signal after the bias is below this many times its pixel-to-pixel noise "
        f"({limits.QA_FLAT_MIN_SNR.text}).",
    ),
]
QaFlatMinFractionOption = Annotated[
    float,
    typer.Option(
        "--qa-flat-min-fraction",
        metavar="FRACTION",
        help="Set aside a flat whose signal after the bias is below this share of its group's median "
        f"signal ({limits.QA_FLAT_MIN_FRACTION.text}).",
    ),
]
QaFlatMaxSaturatedOption = Annotated[
    float,
    typer.Option(
        "--qa-flat-max-saturated",
        metavar="FRACTION",
        help="Set aside a flat with more than this share of its pixels saturated "
        f"({limits.QA_FLAT_MAX_SATURATED.text}).",
    ),
]
QaFlatMaxLevelOption = Annotated[
    float,
    typer.Option(
        "--qa-flat-max-level",
        metavar="FRACTION",
        help="Set aside a flat whose level is above this share of its saturation level: the non-linear "
        f"range ({limits.QA_FLAT_MAX_LEVEL.text}).",
    ),
]
QaTailFractionOption = Annotated[
    float,
    typer.Option(
        "--qa-tail-fraction",
        metavar="FRACTION",
        help="Set aside, as the wrong type, a bias or dark with more than this share of its pixels ten "
        f"times its noise above its group's median frame, and five times the group's share: stars "
        f"({limits.QA_TAIL_FRACTION.text}).",
    ),
]


def qa_options(
    *,
    no_frame_qa: bool,
    outlier_sigma: float,
    temp_tolerance: float,
    flat_min_snr: float,
    flat_min_fraction: float,
    flat_max_saturated: float,
    flat_max_level: float,
    tail_fraction: float,
) -> QaOptions:
    """The frame-QA options of a command's ``--no-frame-qa`` and ``--qa-...``.

    Raises
    ------
    UsageError
        A threshold outside its range, naming the option (``--qa-outlier-sigma 0 is out of range: use
        1 <= x <= 1000000 sigma``).
    """
    # Imported here to keep start-up fast: `ccdcal --help` loads no master-building module.
    from ccdcal.masters.frameqa import QaOptions

    return QaOptions(
        enabled=not no_frame_qa,
        outlier_sigma=outlier_sigma,
        temp_tolerance=temp_tolerance,
        flat_min_snr=flat_min_snr,
        flat_min_fraction=flat_min_fraction,
        flat_max_saturated=flat_max_saturated,
        flat_max_level=flat_max_level,
        tail_fraction=tail_fraction,
    )
