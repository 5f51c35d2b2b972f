"""What a result was made from and how, read back from the catalog: the recipe ``ccdcal reproduce`` follows.

A calibrated light (:func:`light_recipe`) is rebuilt as the :class:`~ccdcal.lights.task.FrameTask` its
worker was given: the raw light (its sha256 as used, ``calibrations.raw_sha256``), the masters applied
(``calibrations.steps`` and ``calibration_masters``), the dark's scale (``dark_scale_factor``), the flat's
clamp (``steps.flat.flat_min``) and the optional steps as the worker recorded them (overscan and trim with
their sections, the gain and read noise of the uncertainty, the L.A.Cosmic parameters, the bad-pixel mask).
A master (:func:`master_recipe`) is rebuilt as the :class:`~ccdcal.masters.groups.GroupPlan` it was
combined from: its inputs (``master_inputs``, with the sha256 of each as combined), its calibrators
(``master_calibrators``) and ``masters.parameters`` (clipping, dark scales, overscan of the inputs); a
bad-pixel mask from its dark and flat and its thresholds.

Nothing is planned again: no matching, no option of today. What a row of an older ccdcal does not hold is
filled in with the value ccdcal used then, and said so (:attr:`Recipe.assumed`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from ccdcal.catalog.headers import header_values
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master, MasterCalibrator, MasterInput
from ccdcal.catalog.queries import GROUP_KEYS
from ccdcal.errors import UsageError
from ccdcal.kernels.bpm import BpmParams
from ccdcal.kernels.combine import ClipParams
from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.dark import dark_scale
from ccdcal.kernels.options import FLAT_LOW
from ccdcal.kernels.overscan import recorded_plan
from ccdcal.kernels.saturation import HEADER_KEYS as SATURATION_HEADER_KEYS
from ccdcal.kernels.saturation import Saturation, resolve_saturation
from ccdcal.kernels.uncertainty import NoiseModel
from ccdcal.lights.records import count_of, mask_of, number_of, step_records, text_of
from ccdcal.lights.steps import APPLIED, STEP_LABELS
from ccdcal.lights.task import FrameTask, MasterUse, OptionalSteps
from ccdcal.masters.groups import GroupPlan
from ccdcal.masters.optional import InputSteps

#: The libraries whose version a step's pixels depend on (beyond ccdcal, numpy and astropy): said in the
#: reason when such a result differs.
STEP_LIBRARIES: dict[str, tuple[str, ...]] = {
    "cosmic_rays": ("ccdproc", "astroscrappy"),
    "bpm_flat": ("ccdproc",),
    "overscan_fit": ("numpy",),
}
#: What each entry of :data:`STEP_LIBRARIES` is, in words.
STEP_WORDS = {
    "cosmic_rays": "the cosmic-ray step (L.A.Cosmic: ccdproc.cosmicray_lacosmic, astroscrappy)",
    "bpm_flat": "the flat's defects of the bad-pixel mask (ccdproc.ccdmask)",
    "overscan_fit": "the polynomial fitted to the overscan (numpy's least squares)",
}

#: The order masters are listed in: as they are applied.
_ROLE_ORDER = {"bias": 0, "dark": 1, "flat": 2, "bpm": 3}

#: The defaults of the values an older row may lack (what ccdcal used before recording them).
DEFAULT_FLAT_MIN = 0.01
#: ``--flat-low``'s default (bit 16 came with it: an older row's MASK has none).
DEFAULT_FLAT_LOW = FLAT_LOW


@dataclass(frozen=True)
class Input:
    """A file a result was made from, with the sha256 recorded for that use.

    ``role``: ``light`` (the raw light), ``bias``, ``dark``, ``flat``, ``bpm`` (a master applied or
    subtracted) or ``input`` (a raw frame combined); ``ref``: its catalog id (``frame:3``, ``master:2``).
    """

    role: str
    ref: str
    path: str
    recorded: str | None


@dataclass
class Recipe:
    """One result to make again: the row, its file, its inputs, and how it was made.

    Attributes
    ----------
    ref : str
        ``calibration:N`` or ``master:N``.
    kind : str
        ``light``, ``bias``, ``dark``, ``flat`` or ``bpm``.
    path, sha256 : str
        The file the catalog records, and its sha256.
    run_id : int or None
        The run that made it (its software versions).
    inputs : list of Input
        Every file it was made from.
    masters : list of int
        The masters it was made with (``--deep`` makes them again too).
    assumed : list of str
        What the row does not record, and the value used instead.
    depends_on : list of str
        Keys of :data:`STEP_LIBRARIES`: the steps whose result depends on a library's version.
    task : FrameTask or None
        A light: the worker's task (its ``output`` is set where it is made again).
    plan : GroupPlan or None
        A combined master: its group, inputs, calibrators and scales.
    clip : ClipParams
        A combined master: the clipping parameters.
    mem_limit : int
        A combined master: the memory its combine held (the pixels do not depend on it).
    recorded_levels : list of float or None
        A flat: the level each input was divided by, as recorded.
    mask_flagged : int or None
        A light: the pixels its MASK flags, as recorded (``None``: not recorded).
    bpm : tuple or None
        A bad-pixel mask: its dark, its flat, its camera keys and its thresholds.
    """

    ref: str
    kind: str
    path: str
    sha256: str
    run_id: int | None
    inputs: list[Input] = field(default_factory=list)
    masters: list[int] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    task: FrameTask | None = None
    plan: GroupPlan | None = None
    clip: ClipParams = field(default_factory=ClipParams)
    mem_limit: int = 2 << 30
    recorded_levels: list[float | None] | None = None
    mask_flagged: int | None = None
    bpm: tuple[Master | None, Master | None, dict[str, Any], BpmParams] | None = None

    @property
    def name(self) -> str:
        """The file name."""
        return Path(self.path).name


# -- a calibrated light ----------------------------------------------------------------------------------


def light_recipe(session: Session, calibration_id: int) -> Recipe:
    """The recipe of one calibration.

    Raises
    ------
    UsageError
        The calibration failed (it has no output), or its light is no longer in the catalog.
    """
    calibration = session.get(Calibration, calibration_id)
    assert calibration is not None
    ref = f"calibration:{calibration.id}"
    if calibration.status == "failed" or not calibration.path or not calibration.sha256:
        raise UsageError(
            f"{ref} failed ({calibration.error or 'no output'}): it has no output to reproduce; "
            "give a calibration that succeeded (`ccdcal provenance` of the light lists them)"
        )
    light = session.get(Frame, calibration.frame_id)
    if light is None:
        raise UsageError(f"{ref}: its light frame:{calibration.frame_id} is not in the catalog")
    recipe = Recipe(ref, "light", calibration.path, calibration.sha256, calibration.run_id)
    steps = calibration.steps if isinstance(calibration.steps, Mapping) else {}
    records = step_records(steps)
    counts = mask_of(steps)
    recipe.mask_flagged = counts["flagged"] if counts is not None else None
    recipe.inputs.append(Input("light", f"frame:{light.id}", light.path, calibration.raw_sha256))
    uses = _master_uses(session, calibration.id, records, recipe)
    scale = calibration.dark_scale_factor
    if uses.get("dark") is not None and scale is None:
        scale = number_of(records.get("dark", {}), "scale")
        if scale is None:
            scale = 1.0
            recipe.assumed.append("the dark's scale is not recorded: 1 (the light's own exposure) is used")
    flat_min = number_of(records.get("flat", {}), "flat_min")
    if uses.get("flat") is not None and flat_min is None:
        flat_min = DEFAULT_FLAT_MIN
        recipe.assumed.append(
            f"the flat's --flat-min is not recorded (a calibration of an older ccdcal): "
            f"{DEFAULT_FLAT_MIN:g}, the default, is used"
        )
    flat_low = number_of(records.get("flat", {}), "flat_low")
    if uses.get("flat") is not None and flat_low is None:
        recipe.assumed.append(
            f"the flat's --flat-low is not recorded (a calibration made before MASK bit 16): "
            f"{DEFAULT_FLAT_LOW:g}, the default, is used"
        )
    saturation = records.get("saturation")
    if saturation is None:
        recipe.assumed.append(
            "no saturation record (a calibration made before MASK bit 8): each frame's own level is used"
        )
    saturation_option = number_of(saturation, "option") if saturation is not None else None
    shape = (light.naxis2 or 0, light.naxis1 or 0)
    optional = _optional_steps(records, shape, uses.get("bpm"), recipe)
    notes = tuple(
        f"{role} not applied ({STEP_LABELS.get(str(record.get('status')), record.get('status'))}): "
        f"{text_of(record, 'reason') or ''}"
        for role, record in records.items()
        if role in ("bias", "dark", "flat") and record.get("status") != APPLIED
    )
    recipe.task = FrameTask(
        frame_id=light.id,
        path=light.path,
        hdu=light.hdu or 0,
        size=light.size,
        mtime=light.mtime,
        sha256=calibration.raw_sha256,
        output=calibration.path,
        bias=uses.get("bias"),
        dark=uses.get("dark"),
        dark_scale=float(scale) if uses.get("dark") is not None and scale is not None else 1.0,
        flat=uses.get("flat"),
        flat_min=float(flat_min) if flat_min is not None else DEFAULT_FLAT_MIN,
        flat_low=float(flat_low) if flat_low is not None else DEFAULT_FLAT_LOW,
        saturation=saturation_option,
        notes=notes,
        optional=optional,
    )
    return recipe


def _master_uses(
    session: Session, calibration_id: int, records: Mapping[str, Mapping[str, object]], recipe: Recipe
) -> dict[str, MasterUse]:
    """The masters applied, by role: the ``calibration_masters`` rows, with the sha256 recorded in the
    step (the master's own when the step does not hold one)."""
    query = (
        select(CalibrationMaster.role, Master)
        .join(Master, Master.id == CalibrationMaster.master_id)
        .where(CalibrationMaster.calibration_id == calibration_id)
        .order_by(case(_ROLE_ORDER, value=CalibrationMaster.role, else_=len(_ROLE_ORDER)))
    )
    uses: dict[str, MasterUse] = {}
    for role, master in session.execute(query).all():
        recorded = text_of(records.get(role, {}), "sha256") or master.sha256
        uses[role] = MasterUse(role, master.id, master.path, recorded)
        recipe.inputs.append(Input(role, f"master:{master.id}", master.path, recorded))
        recipe.masters.append(master.id)
    return uses


def _optional_steps(
    records: Mapping[str, Mapping[str, object]], shape: tuple[int, int], bpm: MasterUse | None, recipe: Recipe
) -> OptionalSteps | None:
    """The optional steps as the worker recorded them (``None``: the fused path was taken)."""
    overscan_plan, mode = None, "auto"
    record = _applied(records, "overscan")
    if record is not None:
        mode = text_of(record, "mode") or "auto"
        try:
            overscan_plan = recorded_plan(record, shape)
        except ValueError as exc:
            raise UsageError(f"{recipe.ref}: its recorded overscan step cannot be read: {exc}") from None
        if overscan_plan.degree is not None:
            recipe.depends_on.append("overscan_fit")
    noise = None
    record = _applied(records, "uncertainty")
    if record is not None:
        gain, readnoise = number_of(record, "gain"), number_of(record, "readnoise")
        if gain is None or readnoise is None:
            raise UsageError(f"{recipe.ref}: its uncertainty step records no gain or read noise")
        noise = NoiseModel(
            gain, text_of(record, "gain_source") or "", readnoise, text_of(record, "readnoise_source") or ""
        )
    cosmic, cosmic_noise = None, None
    record = _applied(records, "cosmic_rays")
    if record is not None:
        cosmic, cosmic_noise = _cosmic(record, recipe)
        recipe.depends_on.append("cosmic_rays")
    optional = OptionalSteps(
        overscan=overscan_plan if overscan_plan is not None and overscan_plan.applies else None,
        overscan_mode=mode,
        noise=noise,
        cosmic=cosmic,
        cosmic_noise=cosmic_noise,
        bpm=bpm,
    )
    return optional if optional.any else None


def _cosmic(
    record: Mapping[str, object], recipe: Recipe
) -> tuple[CosmicParams, tuple[float, float, str] | None]:
    defaults = CosmicParams()
    values: dict[str, Any] = {}
    for name in ("sigclip", "sigfrac", "objlim", "satlevel"):
        found = number_of(record, name)
        values[name] = found if found is not None else getattr(defaults, name)
        if found is None:
            recipe.assumed.append(f"L.A.Cosmic's {name} is not recorded: {values[name]:g}, the default")
    niter = count_of(record, "niter")
    values["niter"] = niter if niter is not None else defaults.niter
    values["cleantype"] = text_of(record, "cleantype") or defaults.cleantype
    try:
        params = CosmicParams(**values)
    except UsageError as exc:
        raise UsageError(f"{recipe.ref}: its recorded cosmic-ray step cannot be used: {exc}") from None
    gain, readnoise = number_of(record, "gain"), number_of(record, "readnoise")
    noise = None
    if gain is not None and readnoise is not None:
        noise = (gain, readnoise, text_of(record, "noise_source") or "")
    return params, noise


def _applied(records: Mapping[str, Mapping[str, object]], key: str) -> Mapping[str, object] | None:
    record = records.get(key)
    return record if record is not None and record.get("status") == APPLIED else None


# -- a master --------------------------------------------------------------------------------------------


def master_recipe(session: Session, master_id: int) -> Recipe:
    """The recipe of one master (combined, or a bad-pixel mask).

    Raises
    ------
    UsageError
        A master whose inputs are not in the catalog, or whose recorded parameters cannot be used.
    """
    master = session.get(Master, master_id)
    assert master is not None
    recipe = Recipe(f"master:{master.id}", master.kind, master.path, master.sha256, master.run_id)
    parameters: Mapping[str, Any] = master.parameters if isinstance(master.parameters, Mapping) else {}
    calibrators = {
        role: session.get(Master, calibrator_id)
        for role, calibrator_id in session.execute(
            select(MasterCalibrator.role, MasterCalibrator.calibrator_id)
            .where(MasterCalibrator.master_id == master.id)
            .order_by(case(_ROLE_ORDER, value=MasterCalibrator.role, else_=len(_ROLE_ORDER)))
        ).all()
    }
    for role, calibrator in calibrators.items():
        if calibrator is not None:
            recipe.inputs.append(Input(role, f"master:{calibrator.id}", calibrator.path, calibrator.sha256))
            recipe.masters.append(calibrator.id)
    if master.kind == "bpm":
        recipe.bpm = (
            calibrators.get("dark"),
            calibrators.get("flat"),
            {key: getattr(master, key) for key in GROUP_KEYS["bpm"]},
            _bpm_params(parameters, recipe),
        )
        if calibrators.get("flat") is not None:
            recipe.depends_on.append("bpm_flat")
        return recipe
    frames = _inputs(session, master, parameters, recipe)
    plan = GroupPlan(
        master.kind,
        {key: getattr(master, key) for key in GROUP_KEYS[master.kind]},
        frames,
        bias=calibrators.get("bias"),
        dark=calibrators.get("dark"),
        includes_bias=master.includes_bias,
    )
    plan.dark_scales = _dark_scales(plan, parameters, recipe)
    plan.input_steps = _input_steps(frames, parameters, recipe)
    plan.saturation = _saturation_levels(session, frames, parameters, recipe)
    recipe.plan = plan
    recipe.clip = _clip(parameters, recipe)
    limit = parameters.get("mem_limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        recipe.mem_limit = limit
    if master.kind == "flat":
        levels = parameters.get("flat_levels")
        if isinstance(levels, list):
            recipe.recorded_levels = [number_of({"v": v}, "v") for v in levels]
    return recipe


def _saturation_levels(
    session: Session, frames: list[dict[str, Any]], parameters: Mapping[str, Any], recipe: Recipe
) -> list[Saturation]:
    """Each input's saturation level, found as the build found it: ``--saturation`` as recorded, else
    the input's header cards in the catalog (fixed by its sha256), else its data type's maximum."""
    steps = parameters.get("steps")
    record = steps.get("saturation") if isinstance(steps, Mapping) else None
    if not isinstance(record, Mapping):
        recipe.assumed.append(
            "no saturation record (a master built before saturated samples were left out): each input's "
            "own level is used"
        )
        record = {}
    option = number_of(record, "option")
    ids = [f["id"] for f in frames]
    cards = header_values(session, SATURATION_HEADER_KEYS, frame_ids=ids)
    return [resolve_saturation(cards.get(i, {}), option) for i in ids]


def _inputs(
    session: Session, master: Master, parameters: Mapping[str, Any], recipe: Recipe
) -> list[dict[str, Any]]:
    """The raw frames combined, as :func:`~ccdcal.catalog.queries.grouped_frames` gives a group's (the
    sha256 each had when combined), in the order combined."""
    query = (
        select(
            Frame.id,
            Frame.path,
            Frame.hdu,
            MasterInput.sha256,
            Frame.exptime,
            Frame.ccd_temp,
            Frame.date_obs,
            Frame.naxis1,
            Frame.naxis2,
        )
        .join(MasterInput, MasterInput.frame_id == Frame.id)
        .where(MasterInput.master_id == master.id)
        .order_by(Frame.date_obs, Frame.path)  # the order of a group when ``input_ids`` is not recorded
    )
    frames = [dict(row._mapping) for row in session.execute(query)]
    if not frames:
        raise UsageError(f"{recipe.ref}: no input frame of it is recorded: it cannot be made again")
    order = parameters.get("input_ids")
    by_id = {f["id"]: f for f in frames}
    if isinstance(order, list) and sorted(map(str, order)) == sorted(map(str, by_id)):
        frames = [by_id[int(i)] for i in order]
    elif isinstance(order, list):
        recipe.assumed.append(
            "the recorded order of its inputs does not list exactly its master_inputs: they are combined "
            "in the order of their group (DATE-OBS, then path)"
        )
    for frame in frames:
        recipe.inputs.append(Input("input", f"frame:{frame['id']}", frame["path"], frame["sha256"]))
    return frames


def _dark_scales(plan: GroupPlan, parameters: Mapping[str, Any], recipe: Recipe) -> list[float]:
    if plan.dark is None:
        return []
    recorded = parameters.get("dark_scales")
    scales = [number_of({"v": v}, "v") for v in recorded] if isinstance(recorded, list) else []
    if len(scales) == len(plan.frames) and all(s is not None for s in scales):
        if len(set(scales)) > 1 and "input_ids" not in parameters:
            recipe.assumed.append(
                "the order of its inputs is not recorded (a master of an older ccdcal): each input's dark "
                "scale is paired with the inputs in the order of their group (DATE-OBS, then path)"
            )
        return [float(s) for s in scales if s is not None]
    exptime = plan.dark.exptime
    recipe.assumed.append(
        "its inputs' dark scales are not recorded: t_input / t_dark from the catalog's exposures"
    )
    try:
        return [dark_scale(f["exptime"] or 0.0, exptime or 0.0) for f in plan.frames]
    except UsageError as exc:
        raise UsageError(f"{recipe.ref}: {exc}") from None


def _input_steps(
    frames: list[dict[str, Any]], parameters: Mapping[str, Any], recipe: Recipe
) -> InputSteps | None:
    steps = parameters.get("steps")
    if not isinstance(steps, Mapping):
        recipe.assumed.append("its inputs' optional steps are not recorded: no overscan, no trim")
        return None
    record = steps.get("overscan")
    if not isinstance(record, Mapping):
        return None
    shape = (frames[0]["naxis2"] or 0, frames[0]["naxis1"] or 0)
    try:
        plan = recorded_plan(record, shape)
    except ValueError as exc:
        raise UsageError(f"{recipe.ref}: its recorded overscan step cannot be read: {exc}") from None
    if plan.degree is not None:
        recipe.depends_on.append("overscan_fit")
    return InputSteps(str(record.get("mode") or "auto"), plan) if plan.applies else None


def _clip(parameters: Mapping[str, Any], recipe: Recipe) -> ClipParams:
    defaults = ClipParams()
    values: dict[str, Any] = {}
    for name in ("sigma_lower", "sigma_upper", "maxiters", "cenfunc", "stdfunc"):
        value = parameters.get(name)
        if value is None or isinstance(value, bool):
            value = getattr(defaults, name)
            recipe.assumed.append(f"its clipping {name} is not recorded: {value}, the default")
        values[name] = value
    try:
        return ClipParams(**values)
    except (UsageError, TypeError, ValueError) as exc:
        raise UsageError(f"{recipe.ref}: its recorded clipping parameters cannot be used: {exc}") from None


def _bpm_params(parameters: Mapping[str, Any], recipe: Recipe) -> BpmParams:
    defaults = BpmParams()
    names = [f.name for f in fields(BpmParams)]
    values = {name: parameters.get(name, getattr(defaults, name)) for name in names}
    missing = [name for name in names if name not in parameters]
    if missing:
        recipe.assumed.append(f"its thresholds {', '.join(missing)} are not recorded: the defaults are used")
    try:
        return BpmParams(**values)
    except (UsageError, TypeError) as exc:
        raise UsageError(f"{recipe.ref}: its recorded thresholds cannot be used: {exc}") from None


# -- the lineage ------------------------------------------------------------------------------------------


def lineage(session: Session, recipe: Recipe) -> list[Recipe]:
    """The recipes of every master ``recipe`` was made with, at any depth, each once, each before its
    own calibrators (the bias, dark and flat of a light, then the calibrators of each)."""
    found: dict[int, Recipe] = {}

    def visit(master_ids: list[int]) -> None:
        for master_id in master_ids:
            if master_id not in found:
                found[master_id] = master_recipe(session, master_id)
                visit(found[master_id].masters)

    visit(recipe.masters)
    return list(found.values())


def with_output(recipe: Recipe, folder: Path) -> FrameTask:
    """A light's task writing into ``folder`` (under the name of the recorded output), for its raw file
    as it is now: the worker checks the bytes it reads against the sha256 recorded for this calibration,
    not against the size and modification time catalogued since (a copy restored from a backup has
    another mtime)."""
    assert recipe.task is not None
    stat = os.stat(recipe.task.path)
    return replace(
        recipe.task, output=str(folder / Path(recipe.path).name), size=stat.st_size, mtime=stat.st_mtime
    )
