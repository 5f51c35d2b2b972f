"""``ccdcal provenance --from-header``: the provenance tree read from FITS headers alone, without a catalog.

What ccdcal writes into its files is enough to trace them:

- a calibrated light: BIASCOR / DARKCOR / FLATCOR (master file names), DARKSCAL, and HISTORY lines
  ``calibrated from NAME sha256 HEX``, ``bias subtracted: NAME sha256 HEX``, ``dark subtracted: ...``,
  ``flat divided: ...``;
- a master: IMCMBnnn (input file names) with IMSHAnnn (their sha256 as combined), BIASCOR / DARKCOR of its
  calibrator masters with their sha256 in HISTORY, DARKSCAL.

The names are read back exactly (spaces, quotes, non-ASCII, a name cut over several HISTORY cards): the
HISTORY lines are joined again as :func:`ccdcal.files.cardtext.history_lines` reads them, each name
decoded with :func:`ccdcal.files.cardtext.name_from_card`. Files written by an older ccdcal, whose HISTORY
lines were wrapped at spaces, are read from the HISTORY text joined with spaces. Each file a header names
is looked for by name under the file's own folder and the folders given (recursively); a master found is
read in turn, so the tree goes down to the raw frames when the files are there. Each file found is hashed
and compared with the sha256 its user's header recorded.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from astropy.io import fits

from ccdcal.errors import FitsFormatError, NotFoundError, UsageError
from ccdcal.files.cardtext import history_lines, name_from_card
from ccdcal.files.hashing import Hashed, fits_files, hash_files, hash_one
from ccdcal.trace.provenance import Node, Provenance

#: What a master or calibrated file's HISTORY says of each master it used.
_STEP_LABELS = {"bias": "bias subtracted", "dark": "dark subtracted", "flat": "flat divided"}
_STEP_CARDS = {"bias": "BIASCOR", "dark": "DARKCOR", "flat": "FLATCOR"}
_SHA = r"([0-9a-f]{64})"
#: The raw light of a calibrated file: a whole HISTORY line (the name as :func:`card_name` wrote it).
_CALIBRATED_FROM = re.compile(r"ccdcal: calibrated from (.+) sha256 " + _SHA)
#: The same in the HISTORY text of an older ccdcal (lines wrapped at spaces, names not encoded).
_OLDER_CALIBRATED_FROM = re.compile(r"ccdcal: calibrated from (.+?) sha256 " + _SHA)
_DARK_SCALE = re.compile(r"dark scaled by t_(?:light|flat) / t_dark = ([-+0-9.eE]+)(?![,0-9])")
#: Masters are read in turn down to this depth (a flat's dark's bias is depth 2).
_MAX_DEPTH = 4
NOT_FOUND = "not_found"


def trace_header(path: str | os.PathLike[str], search: Sequence[str | os.PathLike[str]] = ()) -> Provenance:
    """The provenance tree of a calibrated file or a master, read from its header (and those of the
    masters it names, when found).

    Parameters
    ----------
    path : path-like
        A calibrated light or a master written by ccdcal.
    search : sequence of path-like
        Folders searched (recursively) for the files the headers name, after the file's own folder.

    Returns
    -------
    Provenance
        ``source`` ``header``; nodes have no catalog ids. A named file not found has ``path`` ``None`` and
        ``file`` ``not_found``.

    Raises
    ------
    NotFoundError
        The file does not exist.
    UsageError
        Its header has no ccdcal provenance (not a calibrated file or master written by ccdcal).
    """
    file = Path(path).expanduser().resolve()
    try:
        found = file.stat()
    except FileNotFoundError:
        raise NotFoundError(f"{file}: no such file") from None
    except OSError as exc:  # a folder on the way that cannot be searched ...
        raise NotFoundError(f"{file}: cannot be looked at ({exc.strerror or exc})") from None
    if not stat.S_ISREG(found.st_mode):
        what = "a folder" if stat.S_ISDIR(found.st_mode) else "not a regular file"
        raise NotFoundError(f"{file}: {what}, not a FITS file; give a calibrated file or a master")
    header = _read_header(file)
    if _kind_of(header) is None:
        raise UsageError(
            f"{file}: its header holds no ccdcal provenance (no BIASCOR/DARKCOR/FLATCOR, HISTORY or "
            "IMCMBnnn cards written by ccdcal); give a calibrated file or a master written by ccdcal"
        )
    tracer = _Tracer([file.parent, *(Path(p).expanduser().resolve() for p in search)])
    root = tracer.node(file, header, None, None, None, 0)
    tracer.check(root)
    root.sha256 = tracer.sha256(file)  # shown; nothing recorded it, so its file state stays "unchecked"
    return Provenance("header", str(file), root)


def history_text(header: fits.Header) -> str:
    """Every HISTORY card of a header as one line (cards joined with spaces, as an older ccdcal wrapped
    them)."""
    return " ".join(str(value).strip() for value in header.get("HISTORY", []))


def header_lines(header: fits.Header) -> list[str]:
    """The HISTORY lines of a header as ccdcal wrote them (:func:`ccdcal.files.cardtext.history_lines`)."""
    return history_lines(str(card.value) if card.keyword == "HISTORY" else None for card in header.cards)


def calibrated_from(header: fits.Header) -> tuple[str, str] | None:
    """(file name, sha256) of the raw light a calibrated file's HISTORY names, else ``None``."""
    for line in header_lines(header):
        found = _CALIBRATED_FROM.fullmatch(line)
        if found:
            return name_from_card(found.group(1)), found.group(2)
    older = _OLDER_CALIBRATED_FROM.search(history_text(header))
    return (older.group(1), older.group(2)) if older else None


def _read_header(path: Path) -> fits.Header:
    """A file's primary header; astropy's warnings on a raw header (bytes outside ASCII read as ``?``,
    cards it would fix) are no concern here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.getheader(path, 0)
    except (OSError, ValueError, TypeError) as exc:
        raise FitsFormatError(f"cannot read the header: {exc}", str(path)) from exc


def _kind_of(header: fits.Header) -> tuple[str, str] | None:
    """(``master``, kind) or (``calibration``, ``light``) from a header, else ``None``."""
    imagetyp = str(header.get("IMAGETYP", "")).strip().upper()
    if imagetyp.startswith("MASTER ") and "IMCMB001" in header:
        return "master", imagetyp.split()[1].lower()
    if "CCDCALV" in header and (
        any(card in header for card in _STEP_CARDS.values()) or calibrated_from(header) is not None
    ):
        return "calibration", "light"
    return None


class _Tracer:
    """Finds the files headers name (by name, under the search folders) and builds their nodes."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = list(dict.fromkeys(roots))
        self._index: dict[str, list[str]] | None = None
        self._hashed: dict[str, Hashed] = {}

    def node(
        self,
        path: Path | None,
        header: fits.Header | None,
        role: str | None,
        sha256: str | None,
        match: dict[str, Any] | None,
        depth: int,
        *,
        name: str | None = None,
        kind: str | None = None,
    ) -> Node:
        """The node of one file, with its children when its header is ccdcal's (a master named by a
        header but not found, or not readable, is a ``master`` node without children)."""
        what = _kind_of(header) if header is not None else None
        shown = name or (path.name if path else "")
        default = "master" if role in _STEP_LABELS else "frame"
        node_type, node_kind = what if what else (default, kind)
        node = Node(node_type, node_kind, role, shown, str(path) if path else None, sha256, match=match)
        if header is None or what is None:
            return node
        text = history_text(header)
        lines = header_lines(header)
        if node_type == "calibration":
            found = calibrated_from(header)
            if found:
                light, light_sha = found
                node.children.append(self.file(light, light_sha, "light", None, depth, kind="light"))
        for role_name in ("bias", "dark", "flat"):
            used = _step(header, lines, text, role_name)
            if used is None:
                continue
            step_match: dict[str, Any] = {
                "delta_temp": None,
                "delta_time": None,
                "scale": None,
                "pinned": None,
            }
            if role_name == "dark":
                step_match["scale"] = _dark_scale(header, text)
            node.children.append(self.file(used[0], used[1], role_name, step_match, depth, kind=role_name))
        if node_type == "master":
            for index in range(1, 1000):
                input_name = header.get(f"IMCMB{index:03d}")
                if input_name is None:
                    break
                input_sha = header.get(f"IMSHA{index:03d}")
                node.children.append(
                    self.file(
                        name_from_card(str(input_name)),
                        input_sha,
                        "input",
                        None,
                        depth,
                        kind=node_kind,
                        leaf=True,
                    )
                )
        return node

    def file(
        self,
        name: str,
        sha256: str | None,
        role: str,
        match: dict[str, Any] | None,
        depth: int,
        *,
        kind: str | None,
        leaf: bool = False,
    ) -> Node:
        """The node of a file named in a header: found by name (the one with the recorded sha256 first)."""
        path = self._locate(name, sha256)
        header = None
        if path is not None and not leaf and depth < _MAX_DEPTH:
            try:
                header = _read_header(path)
            except FitsFormatError:
                header = None
        return self.node(path, header, role, sha256, match, depth + 1, name=name, kind=kind)

    def check(self, root: Node) -> None:
        """Set each node's ``file`` state (hashing each file found once)."""
        todo = [n.path for n in root.walk() if n.path is not None and n.path not in self._hashed]
        self._hashed.update(hash_files(todo))
        for node in root.walk():
            node.file = self._hashed[node.path].state(node.sha256) if node.path is not None else NOT_FOUND

    def sha256(self, path: Path) -> str | None:
        """The sha256 of a file (hashed once)."""
        if str(path) not in self._hashed:
            self._hashed[str(path)] = hash_one(str(path))
        return self._hashed[str(path)].sha256

    def _locate(self, name: str, sha256: str | None) -> Path | None:
        candidates = self.index().get(name, [])
        if not candidates:
            return None
        if len(candidates) > 1 and sha256:
            for candidate in candidates:
                if candidate not in self._hashed:
                    self._hashed[candidate] = hash_one(candidate)
                if self._hashed[candidate].sha256 == sha256:
                    return Path(candidate)
        return Path(candidates[0])

    def index(self) -> dict[str, list[str]]:
        """File name → paths of the FITS files under the search folders (built once, sorted)."""
        if self._index is None:
            found: dict[str, list[str]] = {}
            for path in fits_files(self.roots):
                found.setdefault(os.path.basename(path), []).append(path)
            self._index = {name: sorted(set(paths)) for name, paths in found.items()}
        return self._index


def _step(header: fits.Header, lines: list[str], text: str, role: str) -> tuple[str, str | None] | None:
    """(file name, sha256) of the master a header says was used for ``role``, else ``None``: from its
    HISTORY line, the one naming the file of its BIASCOR/DARKCOR/FLATCOR card when there is one (else from
    the HISTORY text of an older ccdcal)."""
    label = _STEP_LABELS[role]
    card = header.get(_STEP_CARDS[role])
    line = re.compile(re.escape(f"{label}: ") + r"(.+) sha256 " + _SHA)
    found = [m for m in map(line.fullmatch, lines) if m is not None]
    if card is not None:
        name = str(card)
        sha = next((m.group(2) for m in found if m.group(1) == name), None)
        if sha is None:
            older = re.search(re.escape(f"{label}: {name} sha256 ") + _SHA, text)
            sha = older.group(1) if older else None
        return name_from_card(name), sha
    if found:
        return name_from_card(found[0].group(1)), found[0].group(2)
    older = re.search(re.escape(f"{label}: ") + r"(\S+) sha256 " + _SHA, text)
    return (older.group(1), older.group(2)) if older else None


def _dark_scale(header: fits.Header, text: str) -> float | None:
    value = header.get("DARKSCAL")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = _DARK_SCALE.search(text)
    return float(found.group(1)) if found else None
