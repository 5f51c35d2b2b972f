"""``ccdcal reproduce FILE|calibration:N|master:N [--deep]``: make a result again from what the catalog
recorded, and say whether it is the same, bit for bit.

The order of work in :func:`reproduce`:

1. read the recipe of the target (:mod:`ccdcal.reproduction.recipes`) — with ``deep``, also of every
   master of its lineage, at any depth, each from its own raw frames — and the software versions of
   the runs that made them, in one reading session (nothing is written: a read-only catalog will do);
2. hash every input again (raw frames and masters) and every recorded file: an input whose sha256 is no
   longer the one recorded for its use stops that result (it would be made from other bytes), named with
   both sha256;
3. make each result again in a temporary folder, removed afterwards (:mod:`ccdcal.reproduction.remake`);
4. compare each with its recorded file, data unit by data unit (:mod:`ccdcal.reproduction.compare`).

The exit status is 0 when every result is reproduced bit for bit, 1 otherwise
(:attr:`Reproduction.exit_code`). The JSON form (:meth:`Reproduction.as_dict`) is stable: the keys of
:data:`RESULT_KEYS`, each product with those of :data:`PRODUCT_KEYS`, each input with :data:`INPUT_KEYS`,
each HDU with ``name``, ``recorded``, ``reproduced``, ``same``, ``difference``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ccdcal.catalog.db import Catalog, software_versions
from ccdcal.catalog.models import Calibration, Run
from ccdcal.catalog.targets import find_target
from ccdcal.errors import CcdcalError, UsageError
from ccdcal.files.hashing import DRIFT, MISSING, OK, hash_files
from ccdcal.reproduction.compare import UnitComparison, compare_files
from ccdcal.reproduction.recipes import STEP_LIBRARIES, STEP_WORDS, Input, Recipe, light_recipe, lineage
from ccdcal.reproduction.recipes import master_recipe as master_recipe_of
from ccdcal.reproduction.remake import Remade, remake

#: The keys of the JSON result, of each product, of each input.
RESULT_KEYS = ("target", "path", "deep", "outcome", "exit_code", "versions", "products")
PRODUCT_KEYS = (
    "ref",
    "kind",
    "path",
    "sha256",
    "file",
    "outcome",
    "reasons",
    "hdus",
    "inputs",
    "assumed",
    "depends_on",
    "run_id",
    "versions",
)
INPUT_KEYS = ("role", "ref", "path", "recorded", "sha256", "file")
#: The software whose versions are shown (the ``runs`` columns, ``*_version``).
SOFTWARE = ("ccdcal", "numpy", "astropy", "ccdproc", "python")

#: A product's outcome: made again bit for bit; made again and different; not made because an input is
#: no longer what was recorded; made again, but the recorded file is no longer what the catalog says;
#: could not be made (the reason says why).
REPRODUCED, DIFFERS, INPUT_CHANGED, FILE_CHANGED, FAILED = (
    "reproduced",
    "differs",
    "input_changed",
    "file_changed",
    "failed",
)

Progress = Callable[[str, int, int], None]
Versions = dict[str, str | None]

_ROLE_WORDS = {
    "light": "raw light",
    "input": "raw frame",
    "bias": "master bias",
    "dark": "master dark",
    "flat": "master flat",
    "bpm": "bad-pixel mask",
}


@dataclass
class InputState:
    """An input as found now: its recorded sha256 and the one its file has (``None``: not read)."""

    input: Input
    sha256: str | None
    file: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with exactly :data:`INPUT_KEYS`."""
        return {
            "role": self.input.role,
            "ref": self.input.ref,
            "path": self.input.path,
            "recorded": self.input.recorded,
            "sha256": self.sha256,
            "file": self.file,
        }

    def text(self) -> str:
        """The input that is not as recorded, and what to do."""
        item = self.input
        what = f"{_ROLE_WORDS.get(item.role, item.role)} {item.ref} {item.path}"
        if self.file == MISSING:
            state = f"is missing (recorded sha256 {item.recorded})"
        elif self.sha256 is None:
            state = f"cannot be read ({self.file}; recorded sha256 {item.recorded})"
        else:
            state = f"has sha256 {self.sha256}, recorded {item.recorded}"
        fix = (
            "restore it from a backup (`ccdcal audit --search DIR` finds a moved copy), or `ccdcal masters` "
            "and `ccdcal process` make new results from what it holds now"
            if item.role in ("light", "input")
            else "restore it from a backup, or build the masters again (`ccdcal masters`)"
        )
        return f"{what} {state}: {fix}"


@dataclass
class Product:
    """One result made again: the target, or (``--deep``) a master of its lineage."""

    recipe: Recipe
    file: str = OK
    found: str | None = None
    outcome: str = FAILED
    reasons: list[str] = field(default_factory=list)
    units: list[UnitComparison] = field(default_factory=list)
    inputs: list[InputState] = field(default_factory=list)
    versions: Versions = field(default_factory=dict)

    @property
    def changed_inputs(self) -> list[InputState]:
        """The inputs that are not as recorded."""
        return [state for state in self.inputs if state.file in DRIFT]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with exactly :data:`PRODUCT_KEYS`."""
        recipe = self.recipe
        return {
            "ref": recipe.ref,
            "kind": recipe.kind,
            "path": recipe.path,
            "sha256": recipe.sha256,
            "file": self.file,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "hdus": [unit.as_dict() for unit in self.units],
            "inputs": [state.as_dict() for state in self.inputs],
            "assumed": list(recipe.assumed),
            "depends_on": {step: list(STEP_LIBRARIES[step]) for step in recipe.depends_on},
            "run_id": recipe.run_id,
            "versions": dict(self.versions),
        }

    def line(self) -> str:
        """The product in one line: its id, its file, and its outcome."""
        what = f"{self.recipe.ref} {self.recipe.name}"
        if self.outcome == REPRODUCED:
            return f"{what}: reproduced bit for bit ({', '.join(u.name for u in self.units)})"
        if self.outcome == INPUT_CHANGED:
            return f"{what}: not reproduced: an input is no longer what was recorded"
        if self.outcome == FILE_CHANGED:
            return f"{what}: not reproduced: the file is no longer what the catalog recorded"
        if self.outcome == DIFFERS:
            return f"{what}: not reproduced: it differs from the recorded file"
        return f"{what}: not reproduced: it could not be made again"


@dataclass
class Reproduction:
    """What :func:`reproduce` found: the target and each result made again (the target first)."""

    target: str
    path: str
    deep: bool
    products: list[Product]
    now: Versions

    @property
    def exit_code(self) -> int:
        """0 when every result is reproduced bit for bit, else 1."""
        return 0 if all(p.outcome == REPRODUCED for p in self.products) else 1

    @property
    def outcome(self) -> str:
        """``reproduced`` or ``differs``."""
        return REPRODUCED if self.exit_code == 0 else DIFFERS

    def lines(self) -> list[str]:
        """The target's line first (``reproduced bit for bit`` or what went wrong) with its reasons, then
        (``--deep``) each master of its lineage with its own."""
        lines = []
        for depth, product in enumerate(self.products):
            indent = "  " if depth else ""
            lines.append(indent + product.line())
            lines += [f"{indent}  {reason}" for reason in product.reasons]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with exactly :data:`RESULT_KEYS`."""
        target = self.products[0]
        return {
            "target": self.target,
            "path": self.path,
            "deep": self.deep,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "versions": {"then": dict(target.versions), "now": dict(self.now)},
            "products": [p.as_dict() for p in self.products],
        }


def reproduce(
    catalog: Catalog, target: str, *, deep: bool = False, progress: Progress | None = None
) -> Reproduction:
    """Make a calibrated file or a master again from what the catalog recorded, and compare.

    Parameters
    ----------
    catalog : Catalog
        The open catalog (only read).
    target : str
        A calibrated file or a master (its path), ``calibration:N`` or ``master:N``.
    deep : bool
        Also make every master of its lineage again from its raw frames, each compared with its file.
    progress : callable, optional
        Called as ``progress("reproduce", done, total)``.

    Raises
    ------
    NotFoundError
        Nothing in the catalog has that path or id.
    UsageError
        A raw frame (ccdcal did not make it), a failed calibration (no output), or a row whose record
        cannot be used.
    """
    with catalog.reading() as session:
        found = find_target(session, target)
        if found.kind == "frame":
            raise UsageError(
                f"{target}: a raw frame ({found.path}), which ccdcal did not make; give a calibrated file "
                "or a master, or calibration:N or master:N (`ccdcal impact` lists what the frame made)"
            )
        if found.kind == "calibration":
            recipe = light_recipe(session, found.id)
        else:
            recipe = master_recipe_of(session, found.id)
        recipes = [recipe, *lineage(session, recipe)] if deep else [recipe]
        run_ids = {r.run_id for r in recipes if r.run_id is not None}
        runs = {run.id: run for run in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
        versions = {run_id: _versions_of(run) for run_id, run in runs.items()}
        replaced_by = _replacing(session, recipe)
    installed = software_versions()
    now = {name: installed.get(f"{name}_version") for name in SOFTWARE}
    products = [Product(r, versions=versions.get(r.run_id or 0, {})) for r in recipes]
    hashed = hash_files([i.path for r in recipes for i in r.inputs] + [r.path for r in recipes])
    with tempfile.TemporaryDirectory(prefix="ccdcal-reproduce-") as folder:
        for done, product in enumerate(products):
            if progress:
                progress("reproduce", done, len(products))
            _one(product, hashed, Path(folder), now, replaced_by if product.recipe is recipe else None)
    if progress:
        progress("reproduce", len(products), len(products))
    return Reproduction(recipe.ref, recipe.path, deep, products, now)


def _versions_of(run: Run) -> Versions:
    return {name: getattr(run, f"{name}_version") for name in SOFTWARE}


def _replacing(session: Any, recipe: Recipe) -> str | None:
    """For a superseded calibration: the calibration whose output replaced its file (same path)."""
    if not recipe.ref.startswith("calibration:"):
        return None
    own = int(recipe.ref.split(":")[1])
    newer = session.scalars(
        select(Calibration.id)
        .where(Calibration.path == recipe.path, Calibration.id > own, Calibration.sha256.is_not(None))
        .order_by(Calibration.id.desc())
        .limit(1)
    ).first()
    return f"calibration:{newer}" if newer is not None else None


def _one(product: Product, hashed: dict[str, Any], folder: Path, now: Versions, replaced: str | None) -> None:
    """Check, make again and compare one product (its outcome and reasons set)."""
    recipe = product.recipe
    for item in recipe.inputs:
        got = hashed[item.path]
        product.inputs.append(InputState(item, got.sha256, got.state(item.recorded)))
    own = hashed[recipe.path]
    product.file, product.found = own.state(recipe.sha256), own.sha256
    if product.changed_inputs:
        product.outcome = INPUT_CHANGED
        product.reasons += [state.text() for state in product.changed_inputs]
        return
    try:
        remade = remake(recipe, folder)
    except CcdcalError as exc:
        remade = Remade(None, str(exc))
    if remade.path is None:
        product.outcome = FAILED
        product.reasons.append(f"it could not be made again: {remade.error}")
        product.reasons += _assumed(recipe)
        return
    if product.file == MISSING:
        product.outcome = FILE_CHANGED
        product.reasons.append(_file_text(product, replaced))
        return
    product.units = compare_files(Path(recipe.path), remade.path)
    remade.path.unlink(missing_ok=True)
    same = bool(product.units) and all(unit.same for unit in product.units)
    if product.file in DRIFT:
        product.outcome = FILE_CHANGED
        product.reasons.append(_file_text(product, replaced))
        if same:
            product.reasons.append(
                "its data units are as made again, bit for bit: the change is outside them (in a header)"
            )
        else:
            product.reasons += [unit.text() for unit in product.units if not unit.same]
        return
    if same:
        product.outcome = REPRODUCED
        return
    product.outcome = DIFFERS
    product.reasons += [unit.text() for unit in product.units if not unit.same]
    product.reasons += _recorded_details(recipe, remade)
    product.reasons += _why(product, now)


def _file_text(product: Product, replaced: str | None) -> str:
    recipe = product.recipe
    what = "calibrated file" if recipe.kind == "light" else f"{recipe.kind} master"
    if product.file == MISSING:
        state = f"is missing (recorded sha256 {recipe.sha256}): nothing to compare with"
    else:
        state = f"has sha256 {product.found}, recorded {recipe.sha256}"
    if replaced is not None:
        return f"the {what} {recipe.path} {state}: {replaced} of the same light has written it since"
    fix = (
        "`ccdcal process --redo` calibrates the light again"
        if recipe.kind == "light"
        else "restore it from a backup, or build the masters again (`ccdcal masters`)"
    )
    return f"the {what} {recipe.path} {state}: it was changed after ccdcal wrote it; {fix}"


def _recorded_details(recipe: Recipe, remade: Remade) -> list[str]:
    """What the making found that differs from what the catalog records of it (MASK counts, the flat
    levels of a master flat)."""
    lines = []
    if recipe.kind == "light" and remade.details.get("mask") is not None:
        recorded = recipe.mask_flagged
        flagged = remade.details["mask"].get("flagged")
        if recorded is not None and recorded != flagged:
            lines.append(f"MASK: {recorded:,} pixels flagged when it was made, {flagged:,} now")
    levels = recipe.recorded_levels
    if levels is not None and remade.flat_levels and levels != [float(x) for x in remade.flat_levels]:
        lines.append("the flats' levels (each input's median) differ from those recorded")
    return lines


def _assumed(recipe: Recipe) -> list[str]:
    return [f"not recorded: {text}" for text in recipe.assumed]


def _why(product: Product, now: Versions) -> list[str]:
    """Why it may differ: what was not recorded, the steps whose result depends on a library's version,
    and the versions then and now (or, when every input and version is the same, the record)."""
    recipe = product.recipe
    lines = _assumed(recipe)
    then = product.versions
    shown = ", ".join(f"{name} {then.get(name) or 'not recorded'}" for name in SOFTWARE)
    if all(then.get(name) == now.get(name) for name in SOFTWARE):
        lines.append(f"made by run {recipe.run_id} with {shown}: the same versions now")
    else:
        lines.append(
            f"made by run {recipe.run_id} with {shown}; now "
            + ", ".join(f"{name} {now.get(name) or 'not installed'}" for name in SOFTWARE)
        )
    for step in recipe.depends_on:
        libraries = STEP_LIBRARIES[step]
        versions = "; ".join(
            f"{name} {then.get(name) or 'not recorded'} then, {now.get(name) or 'not recorded'} now"
            if name in SOFTWARE
            else f"{name}'s version is not recorded"
            for name in libraries
        )
        lines.append(f"{STEP_WORDS[step]} depends on the version of {' and '.join(libraries)} ({versions})")
    changed = [n for n in SOFTWARE if then.get(n) and then.get(n) != now.get(n)]
    if changed:
        lines.append(f"the software changed since: {', '.join(changed)}; a result may differ for it")
    elif not recipe.assumed and not recipe.depends_on:
        record = "calibrations.steps" if recipe.kind == "light" else "masters.parameters"
        lines.append(
            f"every input has its recorded sha256 and the software is the same: the record of how it was "
            f"made ({record}) does not make this file; that record was probably edited after the file "
            "was written"
        )
    return lines
