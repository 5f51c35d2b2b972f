"""The optional steps of ``ccdcal process`` for each light, planned from the catalog, and compared with what
a light's last calibration did.

- ``--overscan auto|off|median|poly:N``: the overscan strip (BIASSEC) subtracted and the image trimmed
  (TRIMSEC, else DATASEC), as on the masters' inputs (:mod:`ccdcal.masters.optional`);
- ``--uncertainty`` with ``--gain``/``--readnoise`` (else the header's EGAIN, RDNOISE ...): an UNCERT
  extension;
- ``--cosmic-rays``: L.A.Cosmic on the calibrated light;
- the bad-pixel mask of the light's camera set-up (``ccdcal masters --bpm``), ORed into MASK unless
  ``--no-bpm``: a step with its own ``calibration_masters`` row.

A light's sections and noise keywords are read from its ``header_cards`` rows (no file is opened to plan);
what is planned is recorded in ``calibrations.steps`` and the output's header. Without any of these steps
a light takes the fused fast path of :mod:`ccdcal.lights.worker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.headers import header_values
from ccdcal.catalog.models import Master
from ccdcal.kernels.cosmic import DEFAULT_GAIN, DEFAULT_READNOISE
from ccdcal.kernels.options import StepOptions
from ccdcal.kernels.overscan import SECTION_KEYS, resolve, shown
from ccdcal.kernels.uncertainty import NOISE_KEYS, noise_model
from ccdcal.lights.matching import LightMatch
from ccdcal.lights.steps import APPLIED, MasterInfo, Step
from ccdcal.lights.task import MasterUse, OptionalSteps
from ccdcal.masters.bpm import select_bpm


@dataclass
class OptionalContext:
    """What planning every light's optional steps needs, read once per plan: the options, the lights'
    header values, and whether a bad-pixel mask is to be applied."""

    options: StepOptions
    values: dict[int, dict[str, Any]]
    use_bpm: bool

    @classmethod
    def load(cls, session: Session, options: StepOptions, *, apply_bpm: bool = True) -> OptionalContext:
        """Read the lights' sections (and noise keywords when needed) and whether any bpm is current
        (``apply_bpm`` False: ``--no-bpm``, none is looked for)."""
        keys: list[str] = [] if options.overscan.name == "off" else list(SECTION_KEYS)
        if options.uncertainty or options.cosmic is not None:
            keys += list(NOISE_KEYS)
        values = header_values(session, keys, kind="light") if keys else {}
        use_bpm = False
        if apply_bpm:
            query = select(Master.id).where(Master.kind == "bpm", Master.status == "current").limit(1)
            use_bpm = session.execute(query).first() is not None
        return cls(options, values, use_bpm)


def plan_optional_steps(
    session: Session, context: OptionalContext, light: Mapping[str, Any], match: LightMatch
) -> tuple[OptionalSteps | None, str | None]:
    """A light's optional steps (``light``: its catalog values, ``id``, ``naxis1``, ``naxis2`` and the
    match keys); the bad-pixel mask becomes a step of ``match`` (it gets a ``calibration_masters`` row).

    Returns
    -------
    optional : OptionalSteps or None
        ``None`` when none applies (the fused path).
    reason : str or None
        Why the light cannot be calibrated as asked (bad sections, unknown gain or read noise).
    """
    options = context.options
    values = context.values.get(light["id"], {})
    try:
        plan = resolve(options.overscan, values, (light["naxis2"] or 0, light["naxis1"] or 0))
    except ValueError as exc:
        return None, str(exc)
    noise = None
    if options.uncertainty:
        noise, reason = noise_model(values, options.gain, options.readnoise)
        if noise is None:
            return None, reason
    cosmic_noise = None
    if options.cosmic is not None:
        known, _ = noise_model(values, options.gain, options.readnoise)
        cosmic_noise = (
            (known.gain, known.readnoise, f"{known.gain_source}, {known.readnoise_source}")
            if known is not None
            else (DEFAULT_GAIN, DEFAULT_READNOISE, "ccdproc defaults: gain and read noise unknown")
        )
    bpm = _bpm_step(session, light, match) if context.use_bpm else None
    optional = OptionalSteps(
        overscan=plan if plan.applies else None,
        overscan_mode=options.overscan.text,
        noise=noise,
        cosmic=options.cosmic,
        cosmic_noise=cosmic_noise,
        bpm=bpm,
    )
    return (optional if optional.any else None), None


def _bpm_step(session: Session, light: Mapping[str, Any], match: LightMatch) -> MasterUse | None:
    master = select_bpm(session, light)
    if master is None:
        return None
    info = MasterInfo.of(master)
    match.steps["bpm"] = Step("bpm", APPLIED, "bad-pixel mask of this camera set-up", info)
    return MasterUse("bpm", info.id, info.path, info.sha256)


#: The records of ``calibrations.steps`` that :func:`optional_changes` compares: what planning reads of a
#: previous calibration's optional steps.
COMPARED_RECORDS = ("overscan", "uncertainty", "cosmic_rays")


def optional_changes(before: dict[str, Any], used: dict[str, int], steps: OptionalSteps | None) -> list[str]:
    """What differs, in the optional steps, between a light's latest calibration (its ``steps``, or their
    :data:`COMPARED_RECORDS`; its masters by role: ``used``) and the plan."""
    now = steps or OptionalSteps()
    changes = []
    was = _applied(before, "overscan")
    was_plan = {k: was.get(k) for k in ("method", "biassec", "trimsec")} if was else None
    plan = now.overscan.signature() if now.overscan is not None else None
    if was_plan != plan:
        changes.append(f"overscan/trim: {shown(was_plan)} → {shown(plan)}")
    was = _applied(before, "uncertainty")
    noise = now.noise.as_json() if now.noise is not None else None
    was_noise = (was.get("gain"), was.get("readnoise")) if was is not None else None
    if (was is None) != (noise is None):
        changes.append("--uncertainty " + ("on" if noise is not None else "off"))
    elif noise is not None and was_noise != (noise["gain"], noise["readnoise"]):
        changes.append("gain or read noise changed")
    was = _applied(before, "cosmic_rays")
    cosmic = now.cosmic.as_json() if now.cosmic is not None else None
    if (was is None) != (cosmic is None):
        changes.append("--cosmic-rays " + ("on" if cosmic is not None else "off"))
    elif was is not None and cosmic is not None:
        kept = {k: was.get(k) for k in cosmic}
        noise_now = now.cosmic_noise[:2] if now.cosmic_noise else None
        if kept != cosmic or (was.get("gain"), was.get("readnoise")) != tuple(noise_now or (None, None)):
            changes.append("cosmic-ray parameters changed")
    bpm_now = now.bpm.id if now.bpm is not None else None
    if used.get("bpm") != bpm_now:
        changes.append("bad-pixel mask " + ("changed" if bpm_now is not None else "no longer applied"))
    return changes


def _applied(steps: dict[str, Any], key: str) -> dict[str, Any] | None:
    record = steps.get(key)  # "planned": what a failed calibration was attempted with
    return record if isinstance(record, dict) and record.get("status") in ("applied", "planned") else None
