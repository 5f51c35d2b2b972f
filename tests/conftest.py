"""Fixtures shared by the whole suite: real-data locations and a fresh migrated catalog per test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Hypothesis keeps its example database under the system temp folder, not in the working tree.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "ccdcal-hypothesis")
)

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "tests" / "data"
SHARED_REAL = ROOT.parent / "shared" / "data" / "real"


def real_set(name: str) -> Path:
    """The folder of one real data set: in tests/data when copied there, else in ../shared (or skip)."""
    local = TEST_DATA / name
    if local.is_dir():
        return local
    shared = SHARED_REAL / name
    if not shared.is_dir():
        pytest.skip(f"real data set {name} not found at {shared} (../shared is absent)")
    return shared


@pytest.fixture
def real_data() -> Path:
    """The ../shared/data/real folder (skips when absent)."""
    if not SHARED_REAL.is_dir():
        pytest.skip(f"{SHARED_REAL} is absent")
    return SHARED_REAL


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_admin_url() -> str:
    return os.environ.get("CCDCAL_TEST_PG", PG_URL)


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards); skips the test, with the reason, when no
    server answers."""
    import uuid

    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is not installed")
    admin = sqlalchemy.create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"ccdcal_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL server reachable at {_pg_admin_url()}: {exc.orig}")
    url = sqlalchemy.make_url(_pg_admin_url()).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards); skips with the reason."""
    with pg_database() as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's catalog goes: a file in tmp_path, then a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "ccdcal.db")
    else:
        with pg_database() as url:
            yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """:func:`db_url` shared by the tests of a module (which only read the catalog)."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("catalog") / "ccdcal.db")
    else:
        with pg_database() as url:
            yield url


@pytest.fixture
def catalog(db_url: str) -> Iterator[Any]:
    """A fresh catalog migrated to head: every test using it runs on SQLite (in tmp_path) and on
    PostgreSQL (a database of its own; skipped, with the reason, only when no server answers)."""
    from ccdcal.catalog.db import Catalog

    with Catalog(db_url) as cat:
        yield cat


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> Iterator[Any]:
    """A fresh SQLite catalog in tmp_path, for what only SQLite has (a file, WAL, its locking)."""
    from ccdcal.catalog.db import Catalog

    with Catalog(tmp_path / "ccdcal.db") as cat:
        yield cat


def fitsverify_counts(path: Path) -> tuple[int, int]:
    """(warnings, errors) that HEASARC's fitsverify reports for one file (skips when it is absent)."""
    import re
    import shutil
    import subprocess

    exe = shutil.which("fitsverify")
    if exe is None:
        pytest.skip("fitsverify (HEASARC) is not installed: apt-get install fitsverify")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False).stdout
    found = re.findall(r"(\d+)\s+warning\(s\)\s+and\s+(\d+)\s+error\(s\)", out)
    assert len(found) == 1, out
    return int(found[0][0]), int(found[0][1])


#: The command-line names of the optional steps' options (:class:`ccdcal.kernels.options.StepOptions`).
STEP_OPTION_NAMES = (
    "overscan",
    "saturation",
    "uncertainty",
    "gain",
    "readnoise",
    "cosmic_rays",
    "cr_sigclip",
    "cr_objlim",
)


def with_step_options(values: dict[str, Any]) -> dict[str, Any]:
    """Options given by their command-line names, the optional steps' ones gathered into ``optional``
    (:meth:`StepOptions.parse`, which checks them as the command line does)."""
    from ccdcal.kernels.options import StepOptions

    steps = {name: values.pop(name) for name in STEP_OPTION_NAMES if name in values}
    return values | {"optional": StepOptions.parse(**steps)} if steps else values


class _Entry:
    """A folder entry whose ``stat`` fails as in a folder without search permission."""

    def __init__(self, entry: Any) -> None:
        self._entry = entry
        self.name, self.path = entry.name, entry.path

    def is_symlink(self) -> bool:
        return bool(self._entry.is_symlink())

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return bool(self._entry.is_dir(follow_symlinks=follow_symlinks))

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return bool(self._entry.is_file(follow_symlinks=follow_symlinks))

    def stat(self, *, follow_symlinks: bool = True) -> Any:
        raise PermissionError(13, "Permission denied", self.path)


@contextmanager
def unreadable(folder: Path, *, listable: bool = False) -> Iterator[None]:
    """``folder`` without permissions for the length of the block: nothing in it can be looked at, and
    unless ``listable`` (mode ``r--``) it cannot be listed either (mode ``---``).

    Root reads any folder: as root, the calls that fail for anybody else are made to fail the same way
    (``PermissionError``, errno 13) — listing the folder, and looking at, opening or listing what is in it.
    """
    import builtins

    folder = folder.resolve()
    inside = str(folder) + os.sep
    folder.chmod(0o444 if listable else 0)

    def within(path: Any) -> bool:
        if isinstance(path, int):
            return False
        return os.path.abspath(os.fspath(path)).startswith(inside)

    def denied(path: Any) -> PermissionError:
        return PermissionError(13, "Permission denied", os.fspath(path))

    real = {name: getattr(os, name) for name in ("stat", "lstat", "scandir", "listdir", "open")}
    real_open = builtins.open

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if within(path):
            raise denied(path)
        return real["stat"](path, *args, **kwargs)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if within(path):
            raise denied(path)
        return real["lstat"](path, *args, **kwargs)

    def listing(name: str) -> Any:
        def listed(path: Any = ".", *args: Any, **kwargs: Any) -> Any:
            here = os.path.abspath(os.fspath(path)) if not isinstance(path, int) else ""
            if within(path) or (here == str(folder) and not listable):
                raise denied(path)
            found = real[name](path, *args, **kwargs)
            if here == str(folder) and name == "scandir":
                return _Listing(found)
            return found

        return listed

    def opened(path: Any, *args: Any, **kwargs: Any) -> Any:
        if within(path):
            raise denied(path)
        return real["open"](path, *args, **kwargs)

    def open_file(file: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, int) and within(file):
            raise denied(file)
        return real_open(file, *args, **kwargs)

    try:
        if os.geteuid() != 0:
            yield
            return
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "stat", stat)
            patch.setattr(os, "lstat", lstat)
            patch.setattr(os, "scandir", listing("scandir"))
            patch.setattr(os, "listdir", listing("listdir"))
            patch.setattr(os, "open", opened)
            patch.setattr(builtins, "open", open_file)
            yield
    finally:
        folder.chmod(0o755)


class _Listing:
    """``os.scandir`` of a folder without search permission: its entries cannot be looked at."""

    def __init__(self, entries: Any) -> None:
        self._entries = entries

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._entries.close()

    def __iter__(self) -> Iterator[_Entry]:
        return (_Entry(entry) for entry in self._entries)

    def close(self) -> None:
        self._entries.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The stress tests (marker ``stress``) run only when ``-m`` names them (``make stress``): a plain
    ``pytest``, or ``-m`` selecting other markers, leaves them out."""
    if "stress" in (config.getoption("markexpr") or ""):
        return
    stress = [item for item in items if item.get_closest_marker("stress") is not None]
    if stress:
        config.hook.pytest_deselected(items=stress)
        items[:] = [item for item in items if item.get_closest_marker("stress") is None]
