"""``ccdcal run CONFIG.ini``: the seed pipeline's ``config.ini``, read, checked, then run end to end.

Users of the script pipeline keep their ``config.ini`` (docs/design.md, Commands and exit codes). The options
are declared once, in :data:`ccdcal.config.inifile.DEFAULT_CONFIG` (the commented default written by
``ccdcal run --write-config``), which drives the parsing, the checks and the README's table.

- :func:`load_config` reads the file with :mod:`configparser` and checks everything before anything is
  written: an unknown section or option, a value of the wrong type, a missing folder or contradicting
  options raise :class:`~ccdcal.errors.ConfigError` with one line naming the file, the line and the fix.
  Relative paths are relative to the config file's folder.
- :func:`run_config` then catalogues ``raw_root`` and ``input_root`` (:func:`ccdcal.ingestion.core.ingest`),
  builds the master kinds switched on (:func:`ccdcal.masters.build.build_masters`) and calibrates every light
  (:func:`ccdcal.lights.pipeline.calibrate_planned`: planned, claimed, calibrated), as ``ccdcal process``
  does, in one ``run`` recorded with the config. A kind not built is taken from the catalog's masters; a
  light is calibrated without that step when none matches (recorded in ``calibrations.steps``).
- :func:`write_default_config` writes the fully commented default.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccdcal.config.inifile import (
    BY_SECTION,
    DEFAULT_CONFIG,
    DEFAULT_DATABASE,
    DERIVED,
    OPTIONS,
    BadValue,
    convert,
    read_file,
    unknown_option,
    unknown_section,
)
from ccdcal.errors import ConfigError
from ccdcal.runtime.words import counted

if TYPE_CHECKING:
    from ccdcal.ingestion.core import IngestSummary
    from ccdcal.lights.options import ProcessOptions
    from ccdcal.lights.summary import ProcessSummary
    from ccdcal.masters.frameqa import QaOptions
    from ccdcal.masters.groups import MasterOptions

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SeedConfig:
    """A checked config file: every option resolved (paths absolute), defaults filled in.

    The attributes are the options of :data:`ccdcal.config.inifile.OPTIONS` (``masters_dark_scale`` and
    ``masters_temp_tolerance`` are ``dark_scale`` and ``temp_tolerance`` of ``[MASTERS]``;
    ``qa_outlier_sigma`` ... the thresholds of ``[QA]``), plus ``path`` (the config file, resolved).
    ``database`` is a URL or an absolute path (``ccdcal.db`` beside the config by default; ``None`` when
    the file says ``database =``, which means the same).
    """

    path: Path
    debug: bool
    database: str | None
    jobs: int | None
    saturation: float | None
    raw_root: Path
    master_output: Path
    build_bias: bool
    build_dark: bool
    build_flat: bool
    masters_dark_scale: bool
    min_frames: int
    sigma: float
    iterations: int
    dispersion: str
    mem_limit: int
    masters_temp_tolerance: float
    max_age_bias: dt.timedelta | None
    max_age_dark: dt.timedelta | None
    max_age_flat: dt.timedelta | None
    input_root: Path
    output_dir: Path
    master_files: Path
    file_type: str
    no_bias: bool
    dark_scale: bool
    temp_tolerance: float
    exptime_tolerance: float
    flat_min: float
    flat_low: float
    write_uncalibrated: bool
    frame_qa: bool
    qa_outlier_sigma: float
    qa_temp_tolerance: float
    qa_flat_min_snr: float
    qa_flat_min_fraction: float
    qa_flat_max_saturated: float
    qa_flat_max_level: float
    qa_tail_fraction: float

    @property
    def build(self) -> tuple[str, ...]:
        """The master kinds built, in build order."""
        on = {"bias": self.build_bias, "dark": self.build_dark, "flat": self.build_flat}
        return tuple(kind for kind, built in on.items() if built)

    def database_url(self, override: str | None = None) -> str:
        """The catalog: ``override`` (``--db``/``CCDCAL_DB``), else ``[GENERAL] database`` (by default
        ``ccdcal.db`` beside the config)."""
        return override or self.database or str(self.path.parent / DEFAULT_DATABASE)

    def ingest_roots(self) -> list[Path]:
        """The folders catalogued: ``raw_root`` (when a master is built) and ``input_root``, once each."""
        roots = [self.raw_root] if self.build else []
        return [*roots, self.input_root] if self.input_root not in roots else roots

    def master_options(self) -> MasterOptions:
        """The options of the master build (``[MASTERS]``, and ``[CALIBRATION] no_bias``)."""
        # Imported here to keep start-up fast: reading and checking a config needs none of the calibration
        # stack.
        from ccdcal.catalog.queries import MatchRules
        from ccdcal.kernels.combine import ClipParams
        from ccdcal.kernels.options import StepOptions
        from ccdcal.masters.groups import MasterOptions

        return MasterOptions(
            masters_dir=self.master_output,
            kinds=self.build,
            min_frames=self.min_frames,
            params=ClipParams(self.sigma, self.sigma, self.iterations, stdfunc=self.dispersion),
            mem_limit=self.mem_limit,
            no_bias=self.no_bias,
            rules=MatchRules(self.masters_temp_tolerance, dark_scale=self.masters_dark_scale),
            flat_dark_scale=self.masters_dark_scale,
            optional=StepOptions(saturation=self.saturation),
            qa=self.qa_options(),
        )

    def process_options(self) -> ProcessOptions:
        """The options of the calibration (``[CALIBRATION]``); kinds not built may be missing."""
        # Imported here to keep start-up fast: reading and checking a config needs none of the calibration
        # stack.
        from ccdcal.catalog.queries import MatchRules, MaxAge
        from ccdcal.kernels.options import StepOptions
        from ccdcal.lights.options import ProcessOptions

        ages = MaxAge(self.max_age_bias, self.max_age_dark, self.max_age_flat)
        return ProcessOptions(
            masters_dir=self.master_files,
            output_dir=self.output_dir,
            rules=MatchRules(self.temp_tolerance, self.exptime_tolerance, self.dark_scale, max_age=ages),
            no_bias=self.no_bias,
            flat_dark_scale=self.masters_dark_scale,  # recorded: `status` plans the masters as the run did
            allow_missing=tuple(kind for kind in ("bias", "dark", "flat") if kind not in self.build),
            flat_min=self.flat_min,
            flat_low=self.flat_low,
            jobs=self.jobs,
            min_frames=self.min_frames,
            mem_limit=self.mem_limit,
            write_uncalibrated=self.write_uncalibrated,
            optional=StepOptions(saturation=self.saturation),
            qa=self.qa_options(),  # recorded: `status` plans the masters as the run did
        )

    def qa_options(self) -> QaOptions:
        """The frame QA of the master build (``[QA]``: ``frame_qa`` and the rules' thresholds)."""
        # Imported here to keep start-up fast: reading and checking a config needs none of the calibration
        # stack.
        from ccdcal.masters.frameqa import QaOptions

        return QaOptions(
            enabled=self.frame_qa,
            outlier_sigma=self.qa_outlier_sigma,
            temp_tolerance=self.qa_temp_tolerance,
            flat_min_snr=self.qa_flat_min_snr,
            flat_min_fraction=self.qa_flat_min_fraction,
            flat_max_saturated=self.qa_flat_max_saturated,
            flat_max_level=self.qa_flat_max_level,
            tail_fraction=self.qa_tail_fraction,
        )

    def arguments(self) -> dict[str, Any]:
        """JSON-ready form (the ``runs.arguments`` of the run): the calibration options as ``ccdcal
        process`` records them, plus ``config`` (every option, paths absolute)."""
        config = {
            f.name: str(getattr(self, f.name))
            if isinstance(getattr(self, f.name), Path)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return {**self.process_options().arguments(), "config": config}


def load_config(path: str | os.PathLike[str]) -> SeedConfig:
    """Read and check a config file; nothing is written.

    Parameters
    ----------
    path : str or PathLike
        The config file (the seed's ``config.ini``, or one written by :func:`write_default_config`).

    Returns
    -------
    SeedConfig
        Every option, defaults filled in, paths resolved against the file's folder.

    Raises
    ------
    ConfigError
        With one line naming the file, the line and the fix: no such file; a syntax error; an unknown
        section or option; a value that is not a yes/no, a number, a size, a frame type; a folder to read
        that does not exist; a folder written inside a folder catalogued as raw frames;
        ``[CALIBRATION] no_bias`` with either ``dark_scale``; ``master_files`` not the folder of
        ``master_output``.
    """
    shown = os.fspath(path)
    source = Path(path).expanduser()
    parser, lines = read_file(source, shown)
    folder = source.resolve().parent

    def where(section: str, name: str | None) -> str:
        number = lines.get((section, name))
        return f"{shown}, line {number}" if number else shown

    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for section in parser.sections():
        if section not in BY_SECTION:
            raise ConfigError(f"{where(section, None)}: {unknown_section(section)}")
        for name, raw in parser[section].items():
            option = BY_SECTION[section].get(name)
            if option is None:
                raise ConfigError(f"{where(section, name)}: {unknown_option(section, name)}")
            try:
                values[option.field] = convert(option, raw, folder)
            except BadValue as exc:
                raise ConfigError(f"{where(section, name)}: {exc}") from None
            given[option.field] = raw
    for option in OPTIONS:
        if option.field in values:
            continue
        raw = given.get(DERIVED.get(option.name, ""), option.default)
        try:
            values[option.field] = convert(option, raw, folder)
        except BadValue:  # only a folder to read can fail here: it does not exist
            raise ConfigError(
                f"{where(option.section, None)}: [{option.section}] has no {option.name}, and its default "
                f"{option.name} = {raw} names {(folder / raw).resolve()}, which does not exist; add "
                f"{option.name} = FOLDER under [{option.section}]"
            ) from None
        given[option.field] = raw
    config = SeedConfig(path=source.resolve(), **values)
    _cross_check(config, given, where)
    return config


def _cross_check(config: SeedConfig, given: dict[str, str], where: Callable[[str, str | None], str]) -> None:
    """Checks between options (raise :class:`ConfigError` at the line of the option to change)."""
    if config.no_bias and config.dark_scale:
        raise ConfigError(
            f"{where('CALIBRATION', 'dark_scale')}: dark_scale = yes cannot be used with no_bias = yes: "
            "a dark that still holds the bias cannot be scaled; set one of them to no"
        )
    if config.no_bias and config.masters_dark_scale:
        raise ConfigError(
            f"{where('MASTERS', 'dark_scale')}: dark_scale = yes cannot be used with [CALIBRATION] "
            "no_bias = yes: the flats' dark then still holds the bias, and such a dark cannot be scaled; "
            "set one of them to no"
        )
    if not config.flat_low > config.flat_min:
        at = where("CALIBRATION", "flat_low")  # else flat_min's line: flat_low takes its default
        at = at if ", line " in at else where("CALIBRATION", "flat_min")
        raise ConfigError(
            f"{at}: flat_low = {given['flat_low']} is not above flat_min = "
            f"{given['flat_min']}: pixels below flat_min are clamped, flat_low flags a low response above "
            "them; raise flat_low or lower flat_min"
        )
    if config.master_files != config.master_output:
        raise ConfigError(
            f"{where('CALIBRATION', 'master_files')}: master_files = {given['master_files']} "
            f"({config.master_files}) is not the folder of [MASTERS] master_output ({config.master_output}): "
            "ccdcal finds masters through its catalog, which records them where master_output puts them; "
            f"set master_files = {given['master_output']}"
        )
    for section, name in (("MASTERS", "master_output"), ("CALIBRATION", "output_dir")):
        written: Path = getattr(config, name)
        for root_name in ("raw_root", "input_root"):
            root: Path = getattr(config, root_name)
            if written == root or root in written.parents:
                raise ConfigError(
                    f"{where(section, name)}: {name} = {given[name]} ({written}) is inside {root_name} "
                    f"({root}), which is catalogued as raw frames; choose a folder outside it"
                )


# -- the default file -------------------------------------------------------------------------------------


def write_default_config(path: str | os.PathLike[str]) -> Path:
    """Write :data:`DEFAULT_CONFIG` to a new file ``path``.

    Raises
    ------
    ConfigError
        When ``path`` exists (it is never overwritten) or its folder does not.
    """
    target = Path(path).expanduser()
    shown = os.fspath(path)
    try:
        with target.open("x", encoding="utf-8") as stream:
            stream.write(DEFAULT_CONFIG)
    except FileExistsError:
        raise ConfigError(
            f"{shown} exists; choose another file name (an existing file is never replaced)"
        ) from None
    except FileNotFoundError:
        raise ConfigError(f"{shown}: folder {target.parent} does not exist; create it first") from None
    except OSError as exc:
        raise ConfigError(
            f"{shown} cannot be written: {exc.strerror or exc}; choose a folder you can write in"
        ) from None
    return target.resolve()


# -- running ----------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What :func:`run_config` did: the ingest, then the masters and the lights of the run."""

    config: SeedConfig
    catalog: str
    ingest: IngestSummary
    summary: ProcessSummary

    @property
    def exit_code(self) -> int:
        """1 when a file was rejected or a light not calibrated or failed; else 0."""
        return max(self.ingest.exit_code, self.summary.exit_code)

    def lines(self, details: bool = False) -> list[str]:
        """The report: catalog, ingest, masters, lights, a line each; with ``details`` (``debug = yes``,
        ``-v``) also every master built and every light calibrated, with its masters and dark scale."""
        ingest, summary = self.ingest, self.summary
        light = summary.counts()
        built = summary.masters_of("built")
        lines = [
            f"Config {self.config.path}; catalog {self.catalog}",
            f"Ingest (run {ingest.run_id}): {ingest.new} new, {ingest.changed} changed, {ingest.unchanged} "
            f"unchanged, {ingest.missing} missing, {len(ingest.rejected)} rejected"
            + (f", {len(ingest.unreadable)} not read" if ingest.unreadable else ""),
            f"Masters (run {summary.run_id}): {len(built)} built, {len(summary.masters_of('current'))} "
            f"current, {len(summary.masters_of('skipped'))} skipped; kinds built: "
            f"{', '.join(self.config.build) or 'none'}",
        ]
        lines += [f"  built {m.path} ({counted(m.n_inputs, 'frame')})" for m in built if details]
        lines += [f"  made current again {m.path}" for m in summary.masters_of("restored") if details]
        lines.append(
            f"Lights (run {summary.run_id}): {light['calibrated']} calibrated, {light['current']} already "
            f"calibrated, {light['cannot']} not calibrated, {light['failed']} failed"
        )
        for report in summary.of("calibrated") if details else []:
            used = ", ".join(f"{role} {name}" for role, name in report.masters().items())
            scale = report.task.dark_scale if report.task is not None else 1.0
            lines.append(f"  {report.path} -> {report.output} ({used}; dark scale {scale:g})")
        if ingest.unclassified:
            note = "no type in header or folder name; catalogue them with `ccdcal ingest --imagetyp`"
            lines += [f"Unclassified ({len(ingest.unclassified)}; {note}):"]
            lines += [f"  {path}" for path in ingest.unclassified]
        return lines

    def problem_lines(self) -> list[str]:
        """For stderr: files rejected and what could not be read, then the run's warnings, skipped master
        groups, lights not calibrated or failed, each with its reason."""
        return self.ingest.problem_lines() + self.summary.problem_lines()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "config": str(self.config.path),
            "catalog": self.catalog,
            "ingest": {"run": self.ingest.run_id, **self.ingest.as_dict()},
            **self.summary.as_dict(),
            "exit_code": self.exit_code,
        }


def run_config(
    config: SeedConfig | str | os.PathLike[str], db: str | None = None, progress: Progress | None = None
) -> RunResult:
    """Run a config end to end: ingest, masters, calibration (see the module docstring).

    Parameters
    ----------
    config : SeedConfig, str or PathLike
        A checked config, or the path of a config file (checked first by :func:`load_config`).
    db : str, optional
        The catalog, overriding ``[GENERAL] database`` (``--db``, ``CCDCAL_DB``).
    progress : callable, optional
        Called as ``progress(label, done, total)``.

    Returns
    -------
    RunResult
        The ingest summary and the run's masters and lights.
    """
    # Imported here to keep start-up fast: reading and checking a config needs none of the calibration stack.
    from ccdcal.catalog.db import Catalog
    from ccdcal.ingestion.core import ingest
    from ccdcal.lights.options import check_options
    from ccdcal.lights.pipeline import calibrate_planned
    from ccdcal.lights.summary import ProcessSummary
    from ccdcal.masters.build import build_masters
    from ccdcal.masters.folders import own_folders
    from ccdcal.masters.recovery import recover

    if not isinstance(config, SeedConfig):
        config = load_config(config)
    options = config.process_options()
    check_options(options)
    with Catalog(config.database_url(db)) as catalog:
        folders = [(config.output_dir, "output folder", "[CALIBRATION] output_dir")]
        if config.build:
            folders.insert(0, (config.master_output, "masters folder", "[MASTERS] master_output"))
        own_folders(catalog, *folders)  # before anything is written
        ingested = ingest(
            catalog,
            config.ingest_roots(),
            jobs=config.jobs,
            progress=(lambda done, total: progress("ingest", done, total)) if progress else None,
        )
        with catalog.run("run", config.arguments()) as run:
            summary = ProcessSummary(run_id=run.id)
            # after a run that died: the folders it wrote (masters built, masters read, outputs)
            recover(catalog, run.id, config.master_output, options.masters_dir, options.output_dir)
            if config.build:
                summary.masters = build_masters(
                    catalog, config.master_options(), progress, run_id=run.id
                ).reports
            summary.lights = calibrate_planned(catalog, options, run.id, progress)  # claimed, as process
            run.summary = summary.run_summary()
            run.partial = summary.exit_code != 0
        return RunResult(config, catalog.name, ingested, summary)
