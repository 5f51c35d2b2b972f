"""The optional steps of a reduction, on the catalog side: options, plans from header cards, records.

``ccdcal masters`` and ``ccdcal process`` take, besides bias, dark and flat:

- ``--overscan auto|off|median|poly:N``: the overscan strip (BIASSEC) subtracted and the image trimmed
  (TRIMSEC, else DATASEC) on every frame of the reduction — bias, dark, flat and light — so that masters
  are combined from prepared frames; ``auto`` (the default) does it when the header has the sections;
- ``--uncertainty`` with ``--gain``/``--readnoise`` (else the header's EGAIN, RDNOISE ...): masters carry
  their combine's uncertainty and calibrated lights an UNCERT extension;
- ``--cosmic-rays``: L.A.Cosmic on calibrated lights;
- the bad-pixel mask (``ccdcal masters --bpm``, :mod:`ccdcal.badpixels`), ORed into each light's MASK
  unless ``--no-bpm``.

Each frame's sections and noise keywords are read from its ``header_cards`` rows (no file is opened to
plan). What a plan does is recorded: a master's in ``masters.parameters`` and its header
(OVSCMETH/OVSCSEC/TRIMSECT), a light's in ``calibrations.steps`` and its header. Without any of these
steps a light takes the fused fast path of :mod:`ccdcal.calibrate`, and a master's identity is what it
was before they existed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ccdcal.calibrate import LightSteps, MasterUse
from ccdcal.catalog.models import Frame, HeaderCard, Master
from ccdcal.catalog.queries import usable
from ccdcal.errors import UsageError
from ccdcal.steps.cosmic import DEFAULT_GAIN, DEFAULT_READNOISE, CosmicParams
from ccdcal.steps.overscan import (
    SECTION_KEYS,
    OverscanMode,
    OverscanPlan,
    machine_cards,
    parse_mode,
    resolve,
    shown,
)
from ccdcal.steps.uncertainty import GAIN_KEYS, READNOISE_KEYS, noise_model

#: ``calibrations.steps`` keys of the optional steps.
STEP_KEYS = ("overscan", "uncertainty", "cosmic_rays", "bpm")


def check_step_options(options: Any) -> None:
    """Raise :class:`UsageError` naming the option when an optional step's option is invalid."""
    parse_mode(getattr(options, "overscan", "auto"))
    gain = getattr(options, "gain", None)
    if gain is not None and not (math.isfinite(gain) and gain > 0):
        raise UsageError(f"--gain must be a positive number of e-/ADU, not {gain:g}")
    readnoise = getattr(options, "readnoise", None)
    if readnoise is not None and not (math.isfinite(readnoise) and readnoise >= 0):
        raise UsageError(f"--readnoise must be zero or a positive number of e-, not {readnoise:g}")
    if getattr(options, "cosmic_rays", False):
        cosmic_params(options)


def cosmic_params(options: Any) -> CosmicParams:
    """The L.A.Cosmic parameters of ``--cr-sigclip`` and ``--cr-objlim``."""
    return CosmicParams(
        sigclip=float(getattr(options, "cr_sigclip", 4.5)), objlim=float(getattr(options, "cr_objlim", 5.0))
    )


def header_values(
    session: Session, keys: Iterable[str], *, frame_ids: Sequence[int] | None = None, kind: str | None = None
) -> dict[int, dict[str, Any]]:
    """Header values of some keywords, per frame, from ``header_cards`` (the frame's image HDU).

    Parameters
    ----------
    session : Session
        An open catalog session.
    keys : iterable of str
        Keywords wanted.
    frame_ids : sequence of int, optional
        These frames ...
    kind : str, optional
        ... or every usable frame of this kind.

    Returns
    -------
    dict
        frame id → {keyword: value}: the number when the card holds one, else its text; the first card of
        a keyword counts.
    """
    query = (
        select(HeaderCard.frame_id, HeaderCard.keyword, HeaderCard.value, HeaderCard.value_num)
        .join(Frame, Frame.id == HeaderCard.frame_id)
        .where(HeaderCard.keyword.in_(sorted(set(keys))), HeaderCard.hdu == func.coalesce(Frame.hdu, 0))
        .order_by(HeaderCard.frame_id, HeaderCard.position)
    )
    if frame_ids is not None:
        query = query.where(HeaderCard.frame_id.in_(list(frame_ids)))
    if kind is not None:
        query = query.where(usable(kind))
    values: dict[int, dict[str, Any]] = {}
    for frame_id, keyword, text, number in session.execute(query):
        cards = values.setdefault(frame_id, {})
        if keyword not in cards:
            cards[keyword] = number if number is not None else text
    return values


# -- masters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterSteps:
    """The optional steps of one master's inputs: overscan and trim, and whether its uncertainty is kept.

    ``None`` stands for a master without any (its identity and file are then as before these steps).
    """

    mode: str
    overscan: OverscanPlan | None
    uncertainty: bool

    def identity(self) -> dict[str, Any]:
        """What enters the master's identity."""
        return {
            "overscan": self.overscan.signature() if self.overscan else None,
            "uncertainty": self.uncertainty,
        }

    def cards(self) -> list[tuple[str, Any, str]]:
        """Header cards: how the inputs were prepared (OVSCMETH ...), and the UNCERT extension."""
        cards = machine_cards(self.overscan) if self.overscan else []
        if self.uncertainty:
            cards.append(("UNCERTEX", "UNCERT", "extension with the combine uncertainty (std dev)"))
        return cards

    def history(self, levels: Sequence[float | None]) -> list[str]:
        """HISTORY lines."""
        lines = []
        plan = self.overscan
        if plan is not None and plan.biassec is not None:
            shown = [f"{x:.6g}" for x in levels if x is not None]
            lines.append(
                f"each input: overscan {plan.method} of {plan.biassec.text} subtracted "
                f"(levels {', '.join(shown[:8])}{' ...' if len(shown) > 8 else ''})"
            )
        if plan is not None and plan.trim is not None:
            lines.append(f"each input trimmed to {plan.trim.text}")
        if self.uncertainty:
            lines.append(
                "UNCERT: combine uncertainty as ccdproc Combiner.median_combine: 1.4826 x MAD of the "
                "samples kept by the clipping / sqrt(their number)"
            )
        return lines

    def parameters(self, frames: Sequence[dict[str, Any]], levels: Sequence[float | None]) -> dict[str, Any]:
        """The ``masters.parameters`` record: the option, what was done, and each input's overscan level."""
        record: dict[str, Any] = {"uncertainty": self.uncertainty}
        if self.overscan is not None:
            record["overscan"] = {
                "mode": self.mode,
                **self.overscan.signature(),
                "axis": self.overscan.axis,
                "inputs": [
                    {"frame_id": f["id"], "level": level} for f, level in zip(frames, levels, strict=False)
                ],
            }
        return record


def plan_master_steps(
    session: Session,
    frames: Sequence[dict[str, Any]],
    options: Any,
    values: dict[int, dict[str, Any]] | None = None,
) -> tuple[MasterSteps | None, str | None]:
    """The optional steps of a group's inputs under ``options`` (``overscan``, ``uncertainty``).

    ``values``: the frames' section cards (:func:`header_values` of :data:`SECTION_KEYS`), when the caller
    has read them for many groups at once; else they are read here.

    Returns
    -------
    steps : MasterSteps or None
        ``None`` when no step applies.
    reason : str or None
        Why the group cannot be prepared (a section that cannot be read, frames with different
        sections), naming the frame.
    """
    mode = parse_mode(getattr(options, "overscan", "auto"))
    uncertainty = bool(getattr(options, "uncertainty", False))
    plans: dict[Any, str] = {}
    chosen: OverscanPlan | None = None
    if mode.name != "off":
        if values is None:
            values = header_values(session, SECTION_KEYS, frame_ids=[f["id"] for f in frames])
        resolved: dict[Any, tuple[OverscanPlan, Any] | ValueError] = {}  # frames alike resolve alike
        for frame in frames:
            shape = (frame["naxis2"] or 0, frame["naxis1"] or 0)
            cards = values.get(frame["id"], {})
            key = (shape, tuple(sorted(cards.items())))
            if key not in resolved:
                try:
                    plan = resolve(mode, cards, shape)
                    resolved[key] = (plan, tuple(sorted(plan.signature().items())))
                except ValueError as exc:
                    resolved[key] = exc
            found = resolved[key]
            if isinstance(found, ValueError):
                return None, f"{frame['path']}: {found}"
            chosen, signature = found
            plans.setdefault(signature, frame["path"])
        if len(plans) > 1:
            first, second = list(plans.values())[:2]
            return None, f"{first} and {second} have different overscan or trim sections"
    if chosen is not None and not chosen.applies:
        chosen = None
    if chosen is None and not uncertainty:
        return None, None
    return MasterSteps(mode.text, chosen, uncertainty), None


# -- lights -------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """What the planning of every light needs, read once per plan: options, header values, bpm use."""

    options: Any
    mode: OverscanMode
    values: dict[int, dict[str, Any]]
    use_bpm: bool

    @classmethod
    def load(cls, session: Session, options: Any) -> StepContext:
        """Read the lights' sections (and noise keywords when needed) and whether any bpm is current."""
        mode = parse_mode(getattr(options, "overscan", "auto"))
        keys: list[str] = [] if mode.name == "off" else list(SECTION_KEYS)
        if getattr(options, "uncertainty", False) or getattr(options, "cosmic_rays", False):
            keys += [*GAIN_KEYS, *READNOISE_KEYS]
        values = header_values(session, keys, kind="light") if keys else {}
        use_bpm = False
        if not getattr(options, "no_bpm", False):
            query = select(Master.id).where(Master.kind == "bpm", Master.status == "current").limit(1)
            use_bpm = session.execute(query).first() is not None
        return cls(options, mode, values, use_bpm)


def plan_light_steps(
    session: Session, context: StepContext, light: Frame, match: Any
) -> tuple[LightSteps | None, str | None]:
    """A light's optional steps; the bpm becomes a step of ``match`` (a ``calibration_masters`` row).

    Returns
    -------
    steps : LightSteps or None
        ``None`` when none applies (the fused path).
    reason : str or None
        Why the light cannot be calibrated as asked (bad sections, unknown gain or read noise).
    """
    options = context.options
    values = context.values.get(light.id, {})
    try:
        plan = resolve(context.mode, values, (light.naxis2 or 0, light.naxis1 or 0))
    except ValueError as exc:
        return None, str(exc)
    noise = None
    if getattr(options, "uncertainty", False):
        gain, readnoise = getattr(options, "gain", None), getattr(options, "readnoise", None)
        noise, reason = noise_model(values, gain, readnoise)
        if noise is None:
            return None, reason
    cosmic, cosmic_noise = None, None
    if getattr(options, "cosmic_rays", False):
        cosmic = cosmic_params(options)
        known, _ = noise_model(values, getattr(options, "gain", None), getattr(options, "readnoise", None))
        cosmic_noise = (
            (known.gain, known.readnoise, f"{known.gain_source}, {known.readnoise_source}")
            if known is not None
            else (DEFAULT_GAIN, DEFAULT_READNOISE, "ccdproc defaults: gain and read noise unknown")
        )
    bpm = _bpm_step(session, light, match) if context.use_bpm else None
    steps = LightSteps(
        overscan=plan if plan.applies else None,
        overscan_mode=context.mode.text,
        noise=noise,
        cosmic=cosmic,
        cosmic_noise=cosmic_noise,
        bpm=bpm,
    )
    return (steps if steps.any else None), None


def _bpm_step(session: Session, light: Frame, match: Any) -> MasterUse | None:
    from ccdcal.badpixels import select_bpm
    from ccdcal.matching import APPLIED, MasterInfo, Step

    master = select_bpm(session, light)
    if master is None:
        return None
    info = MasterInfo.of(master)
    match.steps["bpm"] = Step("bpm", APPLIED, "bad-pixel mask of this camera set-up", info)
    return MasterUse("bpm", info.id, info.path, info.sha256)


#: The records of ``calibrations.steps`` that :func:`step_changes` compares: what planning reads of a
#: previous calibration's optional steps.
COMPARED_RECORDS = ("overscan", "uncertainty", "cosmic_rays")


def step_changes(before: dict[str, Any], used: dict[str, int], steps: LightSteps | None) -> list[str]:
    """What differs, in the optional steps, between a light's latest calibration (its ``steps``, or their
    :data:`COMPARED_RECORDS`; its masters by role: ``used``) and the plan."""
    now = steps or LightSteps()
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
