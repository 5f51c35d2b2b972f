"""``ccdcal provenance``: the tree of what made a calibrated file or a master, checked against the disk.

A calibrated file's tree (:func:`provenance`)::

    calibration:7  Light_001_cal.fits
    ├── light   frame:21   Light_001.fits            (the raw light, sha256 as used)
    ├── bias    master:1   master_bias_...fits       ΔT, Δt (the match details)
    │   └── input frame:1 ... Bias_001.fits ...      (the raw frames combined)
    ├── dark    master:4   master_dark_..._60s...    ΔT, Δt, scale
    │   ├── bias master:1 ...                        (its calibrator master, with its own inputs)
    │   └── input ... Dark_60s_001.fits ...
    └── flat    master:6   ...

Every node carries its path and recorded sha256, and ``file``: whether the file on disk still has that
sha256 (``ok``, ``changed``, ``missing``, ``unreadable``; ``unchecked`` when nothing was recorded). The
tree is also read from FITS headers alone, without the catalog (:mod:`ccdcal.trace.headertrace`). The JSON
form (:meth:`Provenance.as_dict`) is stable: every node has exactly the keys of :data:`NODE_KEYS`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master, MasterCalibrator, MasterInput
from ccdcal.catalog.targets import Target, find_target
from ccdcal.files.hashing import DRIFT, hash_files

#: The keys of every node of the JSON tree, in order.
NODE_KEYS = (
    "node",
    "id",
    "kind",
    "role",
    "name",
    "path",
    "sha256",
    "file",
    "status",
    "is_bad",
    "bad_reason",
    "superseded_reason",
    "match",
    "run_id",
    "created_at",
    "children",
)
#: The ``file`` of a superseded calibration whose output a newer calibration replaced (by design: not drift).
REPLACED = "replaced"

#: The keys of a node's ``match`` (the numbers behind a master's choice; ``None`` for other nodes).
MATCH_KEYS = ("delta_temp", "delta_time", "scale", "pinned")

_ROLE_ORDER = case({"bias": 0, "dark": 1, "flat": 2}, value=CalibrationMaster.role, else_=3)


@dataclass
class Node:
    """One file of a provenance tree: a calibrated output, a master or a raw frame.

    Attributes
    ----------
    node : str
        ``calibration``, ``master`` or ``frame``.
    id : int or None
        The catalog id (``None`` when read from headers).
    kind : str or None
        ``light``, ``bias``, ``dark``, ``flat`` (a calibration's kind is ``light``).
    role : str or None
        How the parent used it: ``light`` (the raw light of a calibration), ``bias``/``dark``/``flat`` (a
        master applied), ``input`` (a raw frame combined into a master); ``None`` for the root.
    name, path : str
        File name and absolute path (``path`` is ``None`` when a header names a file not found).
    sha256 : str or None
        The sha256 recorded for this use (a raw frame: as it was when used).
    file : str
        ``ok``, ``changed``, ``missing``, ``unreadable``, ``unchecked`` (see :mod:`ccdcal.files.hashing`);
        ``replaced`` (a superseded calibration's output, rewritten by a newer calibration of the light);
        or ``not_found`` (a file a header names, not found in the folders searched).
    status, is_bad, bad_reason, superseded_reason, run_id, created_at
        From the catalog row (``None`` from headers).
    match : dict or None
        ΔT (°C), Δt (s), scale and pinned for a master applied to a light; a calibrator master's scale.
    children : list of Node
        Masters applied or used as calibrators, then raw frames.
    """

    node: str
    kind: str | None
    role: str | None
    name: str
    path: str | None
    sha256: str | None
    id: int | None = None
    file: str = "unchecked"
    status: str | None = None
    is_bad: bool | None = None
    bad_reason: str | None = None
    superseded_reason: str | None = None
    match: dict[str, Any] | None = None
    run_id: int | None = None
    created_at: dt.datetime | None = None
    children: list[Node] = field(default_factory=list)

    @property
    def ref(self) -> str | None:
        """The catalog id as ``master:3`` (``None`` from headers)."""
        return f"{self.node}:{self.id}" if self.id is not None else None

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with exactly :data:`NODE_KEYS`."""
        return {
            "node": self.node,
            "id": self.id,
            "kind": self.kind,
            "role": self.role,
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "file": self.file,
            "status": self.status,
            "is_bad": self.is_bad,
            "bad_reason": self.bad_reason,
            "superseded_reason": self.superseded_reason,
            "match": dict(self.match) if self.match is not None else None,
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "children": [child.as_dict() for child in self.children],
        }


@dataclass
class Provenance:
    """A provenance tree and where it came from (``catalog`` or ``header``)."""

    source: str
    target: str
    tree: Node

    def files(self) -> dict[str, int]:
        """How many nodes are in each file state (distinct files counted once per state)."""
        seen: dict[str, set[str | None]] = {}
        for node in self.tree.walk():
            seen.setdefault(node.file, set()).add(node.path or node.name)
        return {state: len(paths) for state, paths in sorted(seen.items())}

    def drifted(self) -> list[Node]:
        """Nodes whose file is missing, changed or unreadable (each file once)."""
        found: dict[tuple[str | None, str | None], Node] = {}
        for node in self.tree.walk():
            if node.file in DRIFT:
                found.setdefault((node.path, node.sha256), node)
        return list(found.values())

    @property
    def exit_code(self) -> int:
        """1 when a file of the tree no longer matches its record, else 0."""
        return 1 if self.drifted() else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ccdcal provenance --json``)."""
        return {
            "source": self.source,
            "target": self.target,
            "files": self.files(),
            "tree": self.tree.as_dict(),
        }


def provenance(catalog: Catalog, text: str, *, check: bool = True, jobs: int | None = None) -> Provenance:
    """The provenance tree of a calibrated file, a master or a raw frame, from the catalog.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    text : str
        A catalogued path (calibrated file, master, raw frame) or an id: ``calibration:N``, ``master:N``,
        ``frame:N`` (:mod:`ccdcal.catalog.targets`). A raw frame's tree is the frame alone (``ccdcal impact``
        lists what was made from it).
    check : bool
        Hash every file of the tree and compare it with its record (``file``); else every ``file`` is
        ``unchecked``.
    jobs : int, optional
        Threads hashing files.

    Returns
    -------
    Provenance
        The tree.
    """
    with catalog.reading() as session:
        target = find_target(session, text)
        tree = build_tree(session, target)
        replaced = tree.node == "calibration" and tree.status != "current" and _path_taken(session, tree)
    if check:
        check_files(tree, jobs)
        if replaced and tree.file in DRIFT:
            tree.file = REPLACED
    return Provenance("catalog", target.ref, tree)


def _path_taken(session: Session, node: Node) -> bool:
    """Whether a newer calibration wrote its output under this (older) calibration's path."""
    query = select(Calibration.id).where(Calibration.path == node.path, Calibration.id > (node.id or 0))
    return session.scalars(query.limit(1)).first() is not None


def build_tree(session: Session, target: Target) -> Node:
    """The tree of one catalog row (files not checked)."""
    builder = _Builder(session)
    if target.kind == "calibration":
        return builder.calibration(target.id)
    if target.kind == "master":
        master = session.get(Master, target.id)
        assert master is not None
        return builder.master(master, None, None)
    frame = session.get(Frame, target.id)
    assert frame is not None
    return _frame_node(frame, None, frame.sha256)


def check_files(tree: Node, jobs: int | None = None) -> None:
    """Hash every file of the tree once and set each node's ``file`` state."""
    nodes = [n for n in tree.walk() if n.path is not None]
    hashed = hash_files((n.path for n in nodes if n.path), jobs)
    for node in nodes:
        assert node.path is not None
        node.file = hashed[node.path].state(node.sha256)


class _Builder:
    """Builds nodes from catalog rows; a master's children are read once however often it appears."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._children: dict[int, list[Node]] = {}

    def calibration(self, calibration_id: int) -> Node:
        calibration = self.session.get(Calibration, calibration_id)
        assert calibration is not None
        light = self.session.get(Frame, calibration.frame_id)
        assert light is not None
        path = calibration.path
        node = Node(
            "calibration",
            "light",
            None,
            Path(path).name if path else Path(light.path).name,
            path,
            calibration.sha256,
            id=calibration.id,
            status=calibration.status,
            superseded_reason=calibration.superseded_reason,
            run_id=calibration.run_id,
            created_at=calibration.created_at,
        )
        node.children.append(_frame_node(light, "light", calibration.raw_sha256))
        links = self.session.execute(
            select(CalibrationMaster, Master)
            .join(Master, Master.id == CalibrationMaster.master_id)
            .where(CalibrationMaster.calibration_id == calibration.id)
            .order_by(_ROLE_ORDER)
        )
        for link, master in links:
            match = {
                "delta_temp": link.delta_temp,
                "delta_time": link.delta_time,
                "scale": link.scale,
                "pinned": link.pinned,
            }
            node.children.append(self.master(master, link.role, match))
        return node

    def master(self, master: Master, role: str | None, match: dict[str, Any] | None) -> Node:
        node = Node(
            "master",
            master.kind,
            role,
            Path(master.path).name,
            master.path,
            master.sha256,
            id=master.id,
            status=master.status,
            is_bad=master.is_bad,
            bad_reason=master.bad_reason,
            superseded_reason=master.superseded_reason,
            match=match,
            run_id=master.run_id,
            created_at=master.created_at,
        )
        node.children = self._master_children(master)
        return node

    def _master_children(self, master: Master) -> list[Node]:
        if master.id in self._children:
            return [_copy(child) for child in self._children[master.id]]
        children: list[Node] = []
        calibrators = self.session.execute(
            select(MasterCalibrator, Master)
            .join(Master, Master.id == MasterCalibrator.calibrator_id)
            .where(MasterCalibrator.master_id == master.id)
            .order_by(MasterCalibrator.role)
        )
        for link, calibrator in calibrators:
            match = {"delta_temp": None, "delta_time": None, "scale": link.scale, "pinned": False}
            children.append(self.master(calibrator, link.role, match))
        inputs = self.session.execute(
            select(MasterInput.sha256, Frame)
            .join(Frame, Frame.id == MasterInput.frame_id)
            .where(MasterInput.master_id == master.id)
            .order_by(Frame.path)
        )
        children += [_frame_node(frame, "input", sha256) for sha256, frame in inputs]
        self._children[master.id] = children
        return [_copy(child) for child in children]


def _frame_node(frame: Frame, role: str | None, sha256: str | None) -> Node:
    return Node(
        "frame",
        frame.imagetyp,
        role,
        Path(frame.path).name,
        frame.path,
        sha256,
        id=frame.id,
        status=frame.status,
        is_bad=frame.is_bad,
        bad_reason=frame.bad_reason,
        run_id=frame.run_id,
        created_at=frame.ingested_at,
    )


def _copy(node: Node) -> Node:
    """A deep copy of a node (a master's subtree appears under each master that used it)."""
    copied = Node(**{k: v for k, v in node.__dict__.items() if k != "children"})
    copied.children = [_copy(child) for child in node.children]
    if node.match is not None:
        copied.match = dict(node.match)
    return copied


# -- text ---------------------------------------------------------------------------------------------------

#: How each file state shows in the tree, with a Rich style.
FILE_MARKS = {
    "ok": ("✓ ok", "green"),
    "changed": ("✗ CHANGED", "bold red"),
    "missing": ("✗ MISSING", "bold red"),
    "unreadable": ("✗ UNREADABLE", "bold red"),
    "unchecked": ("unchecked", "dim"),
    "not_found": ("not found", "yellow"),
    "replaced": ("replaced by a newer calibration", "yellow"),
}


def label(node: Node) -> list[tuple[str, str]]:
    """A node's line in the tree as (text, Rich style) segments::

    dark master:4 /data/masters/master_dark_b2x2_g120_60s_C-10.fits ΔT +0.04 °C, Δt -1.50 h
    sha256 1a2b3c4d5e6f ✓ ok
    """
    parts: list[tuple[str, str]] = []
    if node.role:
        parts.append((f"{node.role} ", "bold"))
    parts.append((f"{node.ref or node.node} ", "cyan"))
    parts.append((node.path or node.name, ""))
    if node.status not in (None, "current", "ok"):
        why = f": {node.superseded_reason}" if node.superseded_reason else ""
        parts.append((f" [{node.status}{why}]", "yellow"))
    if node.is_bad:
        parts.append((f" BAD: {node.bad_reason}", "bold red"))
    details = match_text(node.match)
    if details:
        parts.append((f" {details}", "magenta"))
    if node.sha256:
        parts.append((f" sha256 {node.sha256[:12]}", "dim"))
    text, style = FILE_MARKS.get(node.file, (node.file, ""))
    parts.append((f" {text}", style))
    return parts


def match_text(match: dict[str, Any] | None) -> str:
    """``ΔT +0.04 °C, Δt -1.50 h, scale 5, pinned``: the match details that are known."""
    if not match:
        return ""
    shown = []
    if match.get("delta_temp") is not None:
        shown.append(f"ΔT {match['delta_temp']:+.2f} °C")
    if match.get("delta_time") is not None:
        shown.append(f"Δt {match['delta_time'] / 3600:+.2f} h")
    if match.get("scale") is not None:
        shown.append(f"scale {match['scale']:.6g}")
    if match.get("pinned"):
        shown.append("pinned")
    return ", ".join(shown)


def files_line(result: Provenance) -> str:
    """``Files: 40 ok, 1 missing`` (each distinct file once)."""
    counts = result.files()
    return "Files: " + ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in counts.items())
