"""The optional steps as a user asks for them: one typed, frozen value shared by masters and lights.

``ccdcal masters`` and ``ccdcal process`` (and ``ccdcal run``) take, besides bias, dark and flat:
``--overscan auto|off|median|poly:N``, ``--saturation ADU`` (the level of every frame instead of its
header's: :mod:`ccdcal.kernels.saturation`), ``--uncertainty`` with ``--gain``/``--readnoise``, and
(lights only) ``--cosmic-rays`` with ``--cr-sigclip``/``--cr-objlim``. :meth:`StepOptions.parse` checks
the values once,
where they are given, and turns the overscan text into its :class:`~ccdcal.kernels.overscan.OverscanMode`;
every later stage reads the typed fields. :meth:`StepOptions.arguments` is the flat record kept in
``runs.arguments`` (the keys the command-line options have had from the start), and
:meth:`StepOptions.from_arguments` reads it back (``ccdcal status`` plans with the last run's options).

Which options may change a master is declared once, as data: :data:`MASTER_STEP_FIELDS` prepare the
frames a master is combined from (its pixels, hence its identity: a change builds a new version), and
:data:`LIGHT_STEP_FIELDS` act on lights only and never version a master (every master carries its
combine's uncertainty, whatever ``--uncertainty`` says). :meth:`StepOptions.for_masters` keeps the former.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.overscan import OverscanMode, parse_mode
from ccdcal.limits import GAIN, READNOISE, SATURATION

#: Flat pixels below this never divide (ccdproc ``flat_correct(min_value=...)``): the default of
#: ``--flat-min``, here rather than beside the light's numba kernels so that options load without them.
FLAT_MIN = 0.01
#: Flat pixels below this get less than half the light of the median pixel: flagged as a low response
#: (vignetted), MASK bit 16 (``--flat-low``; why 0.5: docs/design.md, Science).
FLAT_LOW = 0.5

#: The fields of :class:`StepOptions` that prepare a master's inputs, hence change its pixels: they enter
#: its identity (:func:`ccdcal.masters.calibrators.master_identity`; ``saturation`` when given: a level
#: from the inputs' own headers is fixed by their sha256).
MASTER_STEP_FIELDS = ("overscan", "saturation")
#: The fields of :class:`StepOptions` that act on lights only: no value of them versions a master.
LIGHT_STEP_FIELDS = ("uncertainty", "gain", "readnoise", "cosmic")


@dataclass(frozen=True)
class StepOptions:
    """The optional steps asked for (see the module docstring).

    Attributes
    ----------
    overscan : OverscanMode
        ``--overscan``: subtract the overscan strip and trim, on every frame (``auto``: when the header
        has the sections).
    saturation : float or None
        ``--saturation``: raw samples at or above it are saturated, in every frame (``None``: each frame's
        level from its header, else its data type: :func:`ccdcal.kernels.saturation.resolve_saturation`).
        Saturated samples are left out of masters and flagged in lights' MASK (bit 8).
    uncertainty : bool
        ``--uncertainty``: lights get an UNCERT extension (every master has one); on ``ccdcal masters``,
        a master written without one by an earlier ccdcal is built again with it.
    gain, readnoise : float or None
        ``--gain`` (e-/ADU) and ``--readnoise`` (e-), instead of the header's EGAIN, RDNOISE ...
    cosmic : CosmicParams or None
        ``--cosmic-rays`` (with ``--cr-sigclip``, ``--cr-objlim``): L.A.Cosmic on calibrated lights;
        ``None``: off.

    Raises
    ------
    UsageError
        When ``saturation``, ``gain`` or ``readnoise`` is outside its range
        (:data:`ccdcal.limits.SATURATION`, :data:`ccdcal.limits.GAIN`, :data:`ccdcal.limits.READNOISE`),
        naming the option.
    """

    overscan: OverscanMode = OverscanMode()
    saturation: float | None = None
    uncertainty: bool = False
    gain: float | None = None
    readnoise: float | None = None
    cosmic: CosmicParams | None = None

    def __post_init__(self) -> None:
        if self.saturation is not None:
            SATURATION.check(self.saturation)
        if self.gain is not None:
            GAIN.check(self.gain)
        if self.readnoise is not None:
            READNOISE.check(self.readnoise)

    def for_masters(self) -> StepOptions:
        """These options as a master build takes them from ``ccdcal process``: the
        :data:`MASTER_STEP_FIELDS` kept, the :data:`LIGHT_STEP_FIELDS` at their defaults."""
        return StepOptions(**{name: getattr(self, name) for name in MASTER_STEP_FIELDS})

    @classmethod
    def parse(
        cls,
        *,
        overscan: str = "auto",
        saturation: float | None = None,
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
            Naming the option: an unknown overscan mode, a saturation level, gain, read noise or
            cosmic-ray parameter outside its range (:mod:`ccdcal.limits`).
        """
        cosmic = CosmicParams(sigclip=float(cr_sigclip), objlim=float(cr_objlim)) if cosmic_rays else None
        return cls(parse_mode(overscan), saturation, bool(uncertainty), gain, readnoise, cosmic)

    def arguments(self) -> dict[str, Any]:
        """The flat, JSON-ready record of ``runs.arguments``: the command-line options' names and values."""
        cosmic = self.cosmic or CosmicParams()
        return {
            "overscan": self.overscan.text,
            "saturation": self.saturation,
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
        names = (
            "overscan",
            "saturation",
            "uncertainty",
            "gain",
            "readnoise",
            "cosmic_rays",
            "cr_sigclip",
            "cr_objlim",
        )
        return cls.parse(**{name: arguments[name] for name in names if name in arguments})
