"""The optional steps as a user asks for them: one typed, frozen value shared by masters and lights.

``ccdcal masters`` and ``ccdcal process`` (and ``ccdcal run``) take, besides bias, dark and flat:
``--overscan auto|off|median|poly:N``, ``--uncertainty`` with ``--gain``/``--readnoise``, and (lights only)
``--cosmic-rays`` with ``--cr-sigclip``/``--cr-objlim``. :meth:`StepOptions.parse` checks the values once,
where they are given, and turns the overscan text into its :class:`~ccdcal.kernels.overscan.OverscanMode`;
every later stage reads the typed fields. :meth:`StepOptions.arguments` is the flat record kept in
``runs.arguments`` (the keys the command-line options have had from the start), and
:meth:`StepOptions.from_arguments` reads it back (``ccdcal status`` plans with the last run's options).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.overscan import OverscanMode, parse_mode
from ccdcal.limits import GAIN, READNOISE


@dataclass(frozen=True)
class StepOptions:
    """The optional steps asked for (see the module docstring).

    Attributes
    ----------
    overscan : OverscanMode
        ``--overscan``: subtract the overscan strip and trim, on every frame (``auto``: when the header
        has the sections).
    uncertainty : bool
        ``--uncertainty``: masters keep their combine's uncertainty, lights get an UNCERT extension.
    gain, readnoise : float or None
        ``--gain`` (e-/ADU) and ``--readnoise`` (e-), instead of the header's EGAIN, RDNOISE ...
    cosmic : CosmicParams or None
        ``--cosmic-rays`` (with ``--cr-sigclip``, ``--cr-objlim``): L.A.Cosmic on calibrated lights;
        ``None``: off.

    Raises
    ------
    UsageError
        When ``gain`` or ``readnoise`` is outside its range (:data:`ccdcal.limits.GAIN`,
        :data:`ccdcal.limits.READNOISE`), naming the option.
    """

    overscan: OverscanMode = OverscanMode()
    uncertainty: bool = False
    gain: float | None = None
    readnoise: float | None = None
    cosmic: CosmicParams | None = None

    def __post_init__(self) -> None:
        if self.gain is not None:
            GAIN.check(self.gain)
        if self.readnoise is not None:
            READNOISE.check(self.readnoise)

    @classmethod
    def parse(
        cls,
        *,
        overscan: str = "auto",
        uncertainty: bool = False,
        gain: float | None = None,
        readnoise: float | None = None,
        cosmic_rays: bool = False,
        cr_sigclip: float = CosmicParams.sigclip,
        cr_objlim: float = CosmicParams.objlim,
    ) -> StepOptions:
        """The options as the command line gives them, checked.

        Raises
        ------
        UsageError
            Naming the option: an unknown overscan mode, a gain, read noise or cosmic-ray parameter
            outside its range (:mod:`ccdcal.limits`).
        """
        cosmic = CosmicParams(sigclip=float(cr_sigclip), objlim=float(cr_objlim)) if cosmic_rays else None
        return cls(parse_mode(overscan), bool(uncertainty), gain, readnoise, cosmic)

    def arguments(self) -> dict[str, Any]:
        """The flat, JSON-ready record of ``runs.arguments``: the command-line options' names and values."""
        cosmic = self.cosmic or CosmicParams()
        return {
            "overscan": self.overscan.text,
            "uncertainty": self.uncertainty,
            "gain": self.gain,
            "readnoise": self.readnoise,
            "cosmic_rays": self.cosmic is not None,
            "cr_sigclip": cosmic.sigclip,
            "cr_objlim": cosmic.objlim,
        }

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> StepOptions:
        """The options recorded by :meth:`arguments` (absent keys take their defaults)."""
        names = ("overscan", "uncertainty", "gain", "readnoise", "cosmic_rays", "cr_sigclip", "cr_objlim")
        return cls.parse(**{name: arguments[name] for name in names if name in arguments})
