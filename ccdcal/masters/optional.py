"""The optional step of a master's inputs: overscan subtracted and image trimmed before the combine
(``--overscan`` on ``ccdcal masters`` and ``ccdcal process``), the one optional step that changes a master's
pixels (:data:`ccdcal.kernels.options.MASTER_STEP_FIELDS`).

Each frame's sections are read from its ``header_cards`` rows (no file is opened to plan). What a plan
does is recorded in ``masters.parameters`` and the master's header (OVSCMETH/OVSCSEC/TRIMSECT); without
it a master's identity is what it was before the optional steps existed. Every master carries its
combine's uncertainty (``UNCERT``) whatever the options: that is no step of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.headers import header_values
from ccdcal.catalog.models import Frame, Master, MasterInput
from ccdcal.kernels.options import StepOptions
from ccdcal.kernels.overscan import SECTION_KEYS, OverscanPlan, machine_cards, resolve, shown


@dataclass(frozen=True)
class InputSteps:
    """The optional step of one master's inputs: the overscan subtracted and the image trimmed.

    ``None`` stands for a master without it (its identity and file are then as before the optional steps).
    """

    mode: str
    overscan: OverscanPlan

    def identity(self) -> dict[str, Any]:
        """What enters the master's identity: the overscan plan. The ``uncertainty`` key (always false)
        is kept so that masters keep the identity they were built with before every master carried its
        uncertainty (:func:`ccdcal.masters.calibrators.master_identities`)."""
        return {"overscan": self.overscan.signature(), "uncertainty": False}

    def cards(self) -> list[tuple[str, Any, str]]:
        """Header cards: how the inputs were prepared (OVSCMETH ...)."""
        return machine_cards(self.overscan)

    def history(self, levels: Sequence[float | None]) -> list[str]:
        """HISTORY lines."""
        lines = []
        plan = self.overscan
        if plan.biassec is not None:
            shown = [f"{x:.6g}" for x in levels if x is not None]
            lines.append(
                f"each input: overscan {plan.method} of {plan.biassec.text} subtracted "
                f"(levels {', '.join(shown[:8])}{' ...' if len(shown) > 8 else ''})"
            )
        if plan.trim is not None:
            lines.append(f"each input trimmed to {plan.trim.text}")
        return lines

    def parameters(self, frames: Sequence[dict[str, Any]], levels: Sequence[float | None]) -> dict[str, Any]:
        """The ``overscan`` record of ``masters.parameters.steps``: the option, what was done, and each
        input's overscan level."""
        return {
            "mode": self.mode,
            **self.overscan.signature(),
            "axis": self.overscan.axis,
            "inputs": [
                {"frame_id": f["id"], "level": level} for f, level in zip(frames, levels, strict=False)
            ],
        }


def plan_input_steps(
    session: Session,
    frames: Sequence[dict[str, Any]],
    options: StepOptions,
    values: dict[int, dict[str, Any]] | None = None,
) -> tuple[InputSteps | None, str | None]:
    """The optional step of a group's inputs under ``options`` (its ``overscan``; the other fields act on
    lights only: :data:`~ccdcal.kernels.options.LIGHT_STEP_FIELDS`).

    ``values``: the frames' section cards (:func:`~ccdcal.catalog.headers.header_values` of
    :data:`~ccdcal.kernels.overscan.SECTION_KEYS`), when the caller has read them for many groups at once;
    else they are read here.

    Returns
    -------
    steps : InputSteps or None
        ``None`` when the overscan does not apply.
    reason : str or None
        Why the group cannot be prepared (a section that cannot be read, frames with different
        sections), naming the frame.
    """
    mode = options.overscan
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
    if chosen is None or not chosen.applies:
        return None, None
    return InputSteps(mode.text, chosen), None


def preparation_mismatch(session: Session, master: Master, options: StepOptions) -> str | None:
    """Why ``master``'s inputs were not prepared (overscan, trim) as ``options`` would prepare them now:
    its recorded plan against the plan ``options.overscan`` gives those same frames (their section cards
    read from the catalog). ``None`` when they agree, or when that cannot be told (no inputs recorded,
    sections that do not resolve: the worker checks the master's cards against each light).
    """
    record = ((master.parameters or {}).get("steps") or {}).get("overscan")
    was = {k: record.get(k) for k in ("method", "biassec", "trimsec")} if isinstance(record, dict) else None
    query = (
        select(Frame.id, Frame.path, Frame.naxis1, Frame.naxis2)
        .join(MasterInput, MasterInput.frame_id == Frame.id)
        .where(MasterInput.master_id == master.id)
    )
    frames = [dict(row._mapping) for row in session.execute(query)]
    if not frames:
        return None
    steps, reason = plan_input_steps(session, frames, StepOptions(overscan=options.overscan))
    if reason is not None:
        return None
    now = steps.overscan.signature() if steps is not None else None
    if shown(was) == shown(now):
        return None
    built_with = f"--overscan {record.get('mode')}" if isinstance(record, dict) else "--overscan off"
    return (
        f"was built from frames prepared with overscan {shown(was)}, and --overscan "
        f"{options.overscan.text} prepares them with {shown(now)}: pass {built_with}, or pin a master "
        f"built with --overscan {options.overscan.text}"
    )
