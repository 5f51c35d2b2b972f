"""A group's calibrators, scales and identity: what a master would be made from, before anything is read.

:func:`plan_group` chooses, with :func:`~ccdcal.catalog.selection.select_master`'s rules, the master bias
for darks (unless ``no_bias``, or the camera set-up has no bias frames: the dark then keeps the bias,
``_withbias``), and the master bias and a dark for flats (a bias-subtracted dark at the flats' own
exposure, or with ``flat_dark_scale`` the nearest one scaled to each flat's exposure; else a
bias-including dark at the flats' own exposure, which replaces the bias; else the bias alone); then
:func:`master_identity` hashes everything that makes the master's pixels what they are (see docs/design.md,
Catalog, ``identity``), and :func:`master_identities` adds the identities an earlier ccdcal gave a master
of the same pixels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.headers import header_values
from ccdcal.catalog.models import Frame
from ccdcal.catalog.queries import MATCH_KEYS, MatchRules, usable
from ccdcal.catalog.selection import select_master
from ccdcal.files.naming import number_text
from ccdcal.kernels.combine import ClipParams
from ccdcal.kernels.dark import dark_scale
from ccdcal.kernels.overscan import SECTION_KEYS
from ccdcal.kernels.saturation import HEADER_KEYS as SATURATION_HEADER_KEYS
from ccdcal.kernels.saturation import resolve_saturation
from ccdcal.masters.groups import GroupPlan, MasterOptions, describe_keys
from ccdcal.masters.optional import plan_input_steps


def plan_group(
    session: Session,
    kind: str,
    keys: dict[str, Any],
    frames: list[dict[str, Any]],
    options: MasterOptions,
    cards: dict[int, dict[str, Any]] | None = None,
) -> tuple[GroupPlan, str | None]:
    """Choose a group's calibrators and scales, each input's saturation level, and compute its identity.

    ``cards``: the header values of the kind's frames (:func:`group_cards`'s keywords), when the caller
    has read them for every group; else the group's are read here.

    Returns
    -------
    plan : GroupPlan
        The plan (its identity set when it can be built).
    reason : str or None
        Why the group cannot be built (no matching master bias), else ``None``.
    """
    plan = GroupPlan(kind, keys, frames)
    if kind in ("dark", "flat") and not options.no_bias and _setup_has_bias(session, keys):
        plan.bias = select_master(session, "bias", plan.target, options.rules.for_masters())
        if plan.bias is None:
            return plan, (
                f"no master bias matches the {kind} group {describe_keys(keys)} (±"
                f"{number_text(options.rules.temp_tolerance)} °C): build the bias first or pass --no-bias"
            )
    if kind == "dark":
        plan.includes_bias = plan.bias is None
    if kind == "flat":
        _choose_flat_dark(session, plan, options.rules.for_masters(), scale=options.flat_dark_scale)
    if cards is None:
        cards = header_values(session, group_cards(options), frame_ids=[f["id"] for f in frames])
    option = options.optional.saturation
    plan.saturation = [resolve_saturation(cards.get(f["id"], {}), option) for f in frames]
    plan.input_steps, reason = plan_input_steps(session, frames, options.optional, cards)
    if reason:
        return plan, f"cannot prepare the {kind} frames of group {describe_keys(keys)}: {reason}"
    plan.identities = master_identities(plan, options.params)
    return plan, None


def group_cards(options: MasterOptions) -> tuple[str, ...]:
    """The header keywords planning a group reads: its inputs' saturation level, and their overscan and
    trim sections unless ``--overscan off``."""
    sections = SECTION_KEYS if options.optional.overscan.name != "off" else ()
    return (*SATURATION_HEADER_KEYS, *sections)


def _setup_has_bias(session: Session, keys: dict[str, Any]) -> bool:
    """Whether the catalog holds usable bias frames of this camera set-up (match keys, any temperature)."""
    query = select(Frame.id).where(
        usable("bias"), *(getattr(Frame, k).is_not_distinct_from(keys.get(k)) for k in MATCH_KEYS)
    )
    return session.execute(query.limit(1)).first() is not None


def _choose_flat_dark(session: Session, plan: GroupPlan, rules: MatchRules, *, scale: bool) -> None:
    """The dark subtracted from a group of flats, and its scale for each flat (docs/design.md, Science).

    With a master bias: a bias-subtracted dark at the flats' own exposure (a dark flat), unscaled; with
    ``scale`` (``--flat-dark-scale``, ``[MASTERS] dark_scale = yes``) the nearest bias-subtracted dark
    instead, preferring one at least as long as the longest flat, scaled to each flat's exposure. Failing
    that (or without a master bias), a dark that still holds the bias at the flats' own exposure,
    unscaled: it replaces the bias. No dark when nothing matches (the flats are only bias-subtracted),
    when a flat's exposure is unknown or zero, and without ``scale`` when the group's flats have several
    exposures (no one dark is at their own exposure; each would need its own dark).
    """
    exposures = [f["exptime"] for f in plan.frames]
    if any(t is None or t <= 0 for t in exposures):
        return
    exact = replace(rules, dark_scale=False)
    one_exposure = len(set(exposures)) == 1
    if plan.bias is not None and (scale or one_exposure):
        target = {**plan.target, "exptime": max(exposures)}
        chosen = replace(rules, dark_scale=True) if scale else exact
        dark = select_master(session, "dark", target, chosen, exclude_with_bias=True)
        if dark is not None and dark.exptime:
            plan.dark, plan.dark_scales = dark, [dark_scale(t, dark.exptime) for t in exposures]
            return
    if one_exposure:
        target = {**plan.target, "exptime": exposures[0]}
        dark = select_master(session, "dark", target, exact, only_with_bias=True)
        if dark is not None:
            plan.bias, plan.dark, plan.dark_scales = None, dark, [1.0] * len(exposures)


def master_identity(plan: GroupPlan, params: ClipParams, *, uncertainty: bool = False) -> str:
    """What makes a master's pixels what they are, as a sha256: inputs as used, calibrators, scales,
    clipping parameters, the preparation of the inputs (overscan and trim) and the saturation levels not
    read from the inputs themselves.

    A change of any input file (its sha256), of the input set, of a calibrator (a new version of the
    bias has a new sha256) or of the parameters gives a new identity, hence a new master version. A
    saturation level from an input's header or data type is fixed by its sha256; one given by
    ``--saturation`` (or measured) enters as such (absent otherwise: masters keep the identity they had
    before saturated samples were left out). No option that acts on lights only enters it
    (:data:`~ccdcal.kernels.options.LIGHT_STEP_FIELDS`).

    ``uncertainty`` True gives the identity a ccdcal before every master carried its uncertainty gave a
    master built with ``--uncertainty`` (the same pixels: :func:`master_identities`).
    """
    payload = {
        "kind": plan.kind,
        "inputs": sorted((f["id"], f["sha256"]) for f in plan.frames),
        "bias": plan.bias.sha256 if plan.bias else None,
        "dark": plan.dark.sha256 if plan.dark else None,
        "dark_scales": [round(s, 12) for s in plan.dark_scales],
        "includes_bias": plan.includes_bias,
        "params": params.as_dict(),
    }
    levels = zip(plan.frames, plan.saturation, strict=False)  # none before the plan resolves them
    external = sorted((f["id"], found.level) for f, found in levels if found.external)
    if external:
        payload["saturation"] = external
    if uncertainty:  # the key masters built with --uncertainty were identified by
        overscan = plan.input_steps.overscan.signature() if plan.input_steps is not None else None
        payload["steps"] = {"overscan": overscan, "uncertainty": True}
    elif plan.input_steps is not None:  # overscan: absent from masters built without it
        payload["steps"] = plan.input_steps.identity()  # the key masters have been identified by
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def master_identities(plan: GroupPlan, params: ClipParams) -> tuple[str, str]:
    """The plan's identity (:func:`master_identity`), then the one an earlier ccdcal gave a master of the
    same pixels built with ``--uncertainty``: a master of either identity is the one to build."""
    return master_identity(plan, params), master_identity(plan, params, uncertainty=True)
