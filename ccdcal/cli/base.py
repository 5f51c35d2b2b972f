"""What every command shares: the ``ccdcal`` app and its global options, the consoles, the one place
where ccdcal's errors become user messages and exit statuses (:class:`CcdcalGroup`), progress bars,
tables, JSON, and the option types several commands take."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import math
import os
import re
import select
import signal
import traceback
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from ccdcal import limits
from ccdcal._version import __version__
from ccdcal.cli.coercion import DirectValues
from ccdcal.cli.helptext import HELP_WIDTH, CcdcalTyper, PlainHelp
from ccdcal.errors import CatalogError, CcdcalError, UsageError
from ccdcal.runtime.interrupts import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    handling_signals,
    received,
    settle,
)

if TYPE_CHECKING:
    from ccdcal.catalog.db import Catalog

# The numerical stack (numpy, astropy) and each command's library modules are imported by the commands that
# need them, so that catalog commands and --help start quickly; SQLAlchemy by those that open a catalog.


class PipeConsole(Console):
    """A Rich console whose closed pipe raises :class:`BrokenPipeError` (Rich itself would exit with status
    1), for the command group to end the command as it ends one whose plain output was closed
    (:func:`closed_output`)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


out = PipeConsole(soft_wrap=True, highlight=False, emoji=False)
err = PipeConsole(stderr=True, soft_wrap=True, highlight=False, emoji=False)


_log = logging.getLogger("ccdcal")

#: What the command-line parser raises to end a command on purpose (an exit status, Ctrl-C at a prompt, a
#: usage error shown after its usage line). Its exception classes are Click's, which Typer bundles in
#: recent versions: found from the public ``typer.BadParameter``, whichever Click it is.
_PARSER_EXITS: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


class CcdcalGroup(DirectValues, PlainHelp, TyperGroup):
    """The command group; turns library errors and Ctrl-C into one-line messages and exit statuses.

    The library raises ccdcal's errors where a problem arises; what can arise anywhere from the
    surroundings — a database error, a file that cannot be read or written, memory running out — is
    turned into one line here (:func:`one_line`), and so is an error nobody foresaw (a bug), whose
    traceback ``-v`` shows. A traceback never reaches the user otherwise.
    """

    def invoke(self, ctx: Any) -> Any:
        with handling_signals(keep=_command_process):
            return self._invoke(ctx)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """The context of the group; its help (``ccdcal --help | head -2``) ends quietly when the reader
        closes the pipe, as a command's output does."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except OSError as exc:
            if not closed_output(exc):
                raise
            raise typer.Exit(EXIT_CLOSED_OUTPUT) from None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse the arguments, the global options that follow the command first moved before it."""
        if ctx.parent is None:
            args = self._hoisted(ctx, args)
        return super().parse_args(ctx, args)

    def _hoisted(self, ctx: Any, args: list[str]) -> list[str]:
        """``args`` with the global options given after the command (``--db``, ``-v``, ``-q``: options of
        no command) moved before it, in their order; a value of the command's own options, and whatever
        follows ``--``, stays where it is."""
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":  # the app's own options
            i += 2 if args[i] == "--db" else 1
        command = self.get_command(ctx, args[i]) if i < len(args) else None
        if command is None:
            return args
        before, kept, moved = args[:i], [args[i]], []
        rest = iter(args[i + 1 :])
        for token in rest:
            if token == "--":
                kept += [token, *rest]
            elif token in _GLOBAL_FLAGS or token.startswith("--db=") or _VERBOSE.fullmatch(token):
                moved.append(token)
            elif token == "--db":
                value = list(islice(rest, 1))
                (moved if value else kept).extend([token, *value])  # without a value: said where it is
            else:
                kept.append(token)
                if _takes_value(command, token):
                    kept += islice(rest, 1)
                elif not token.startswith("-") and isinstance(command, TyperGroup):  # `db current`
                    command = command.get_command(ctx, token) or command
        return [*before, *moved, *kept]

    def _invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PARSER_EXITS:  # the parser's own: a usage error, --help, an exit status chosen by a command
            raise
        except KeyboardInterrupt as stop:
            raise typer.Exit(_stopped(isinstance(stop, Terminated))) from None
        except Exception as exc:
            if closed_output(exc):  # `ccdcal status | head -2`: nobody reads the rest, nor an error
                raise typer.Exit(EXIT_CLOSED_OUTPUT) from None
            error = one_line(exc, _catalog_name(ctx))
            if not isinstance(exc, CcdcalError):
                _log.debug("%s", error, exc_info=exc)
            try:
                err.print(f"Error: {_single_line(str(error))}", markup=False)
            except OSError as unwritten:  # stderr closed too: the exit status alone tells
                if not closed_output(unwritten):
                    raise
            raise typer.Exit(error.exit_code) from None


#: The exit status of a command whose reader closed its output before it was all written (``ccdcal status
#: | head -2``): that of a Unix tool ended by SIGPIPE, so that ``set -o pipefail`` sees it.
EXIT_CLOSED_OUTPUT = 141


def closed_output(exc: BaseException) -> bool:
    """Whether ``exc`` is a write to a stdout or stderr whose reader has gone (a pipe closed by ``head``).

    If so, both are pointed to the null device: what is left to write (an error message, the buffers
    flushed at exit) goes nowhere instead of failing again. A broken pipe of anything else (a worker's, a
    socket's) is not this, and is reported as the error it is.
    """
    if not (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
        return False
    gone = [fd for fd in (1, 2) if _reader_gone(fd)]
    for fd in gone:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    return bool(gone)


def _reader_gone(fd: int) -> bool:
    """Whether nobody reads the pipe (or socket) open as ``fd``: poll reports an error on its writing end."""
    if not hasattr(select, "poll"):  # Windows: no poll; a broken pipe there is the output's
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


#: The global flags (``--db`` takes a value), accepted before the command or after it.
_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")
_VERBOSE = re.compile(r"-v+")


def _takes_value(command: Any, token: str) -> bool:
    """Whether ``token`` is an option of ``command`` followed by its value."""
    for param in command.params:
        if token in (*param.opts, *param.secondary_opts) and param.param_type_name == "option":
            return not (getattr(param, "is_flag", False) or getattr(param, "count", False))
    return False


def _single_line(text: str) -> str:
    """A message on one line: the lines of a message that has several (an exception's text from a
    library) joined with ``; ``."""
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _catalog_name(ctx: Any) -> str:
    """The catalog of the command (``--db``), as messages name it."""
    # Imported here for start-up time: `ccdcal --help` loads no database library.
    from ccdcal.catalog.engine import describe, resolve_url

    state = ctx.obj if isinstance(ctx.obj, State) else State()
    try:
        return describe(resolve_url(state.db))
    except CcdcalError:
        return str(state.db)


def one_line(exc: Exception, catalog: str = "database") -> CcdcalError:
    """The error a user reads for ``exc``: ccdcal's own as it is; a database error (of the ``catalog``),
    an operating-system error or a lack of memory explained in one line; anything else named as a bug."""
    # Imported here for start-up time (see _catalog_name).
    from sqlalchemy.exc import DBAPIError

    from ccdcal.catalog.engine import explain_database_error

    if isinstance(exc, CcdcalError):
        return exc
    if isinstance(exc, DBAPIError):  # the database said no (an error of SQLAlchemy's own is a bug)
        explained = explain_database_error(exc, catalog, disconnect=exc.connection_invalidated)
        if explained is not None:
            return explained
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        return CatalogError(f"cannot use the catalog {catalog}: {detail[0]}")
    if isinstance(exc, BrokenExecutor):
        return CcdcalError(
            f"a worker process died ({exc}): killed, or out of memory? Give fewer --jobs or a smaller "
            "--mem-limit, then run the same command again: what was finished is kept"
        )
    if type(exc).__module__.split(".")[0] in ("distributed", "tornado"):
        return CcdcalError(
            f"the Dask cluster failed ({type(exc).__name__}: {exc}); check its scheduler and workers, then "
            "run the same command again: what was finished is kept"
        )
    if isinstance(exc, OSError):
        return CcdcalError(os_error_text(exc))
    if isinstance(exc, MemoryError):
        return CcdcalError(
            "not enough memory; give a smaller --mem-limit or fewer --jobs, or close other programs, then "
            "run the same command again: what was finished is kept"
        )
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    place = f" at {Path(where[0].filename).name}:{where[0].lineno}" if where else ""
    return CcdcalError(
        f"internal error{place}: {type(exc).__name__}: {exc} — a bug in ccdcal {__version__}; "
        "run the command again with -v to see the traceback, and report it"
    )


def os_error_text(exc: OSError) -> str:
    """An operating-system error in words: the file, what went wrong, and what to do."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}: "
    advice = {
        errno.ENOSPC: "free space on that disk, then run the same command again",
        errno.EDQUOT: "free space within your quota, then run the same command again",
        errno.EACCES: "check the permissions of the file and of its folders",
        errno.EPERM: "check the permissions of the file and of its folders",
        errno.EROFS: "that file system is read-only; choose a writable folder",
        errno.EISDIR: "that is a folder; give a file",
        errno.ENOTDIR: "a part of that path is a file, not a folder; check the path",
        errno.ENOENT: "check the path",
        errno.EIO: "check the disk",
    }.get(exc.errno or 0, "check the file and its disk, then run the same command again")
    return f"{where}{what}; {advice}"


app = CcdcalTyper(
    cls=CcdcalGroup,
    name="ccdcal",
    help="Catalog raw CCD/CMOS frames, build master calibrations and calibrate science frames, "
    "with provenance in a database.",
    epilog="""
    ccdcal ingest raw/     # catalogue the frames under raw/ in ./ccdcal.db
    ccdcal process         # build the masters, then calibrate every light
    ccdcal status          # what is catalogued, and what is left to do
    """,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH},
)
db_app = CcdcalTyper(
    cls=CcdcalGroup,
    help="Catalog schema: show or upgrade its revision.",
    no_args_is_help=True,
    epilog="""
    ccdcal db current      # the catalog's schema revision
    ccdcal db upgrade      # upgrade it now (done on every open anyway)
    """,
    rich_markup_mode=None,
)
app.add_typer(db_app, name="db")


@dataclass
class State:
    """Options given before the command."""

    db: str | None = None
    verbosity: int = 0

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    def catalog(
        self, *, create: bool = False, upgrade: bool = True, as_of: dt.datetime | None = None
    ) -> Catalog:
        """The catalog of ``--db``. Only the commands that make one (``ingest``, ``db upgrade``) pass
        ``create``: the others refuse a catalog that does not exist, creating nothing. ``as_of``: read it
        as it stood then (``--as-of``)."""
        # Imported here for start-up time (see _catalog_name).
        from ccdcal.catalog.db import Catalog

        catalog = Catalog(self.db, upgrade=upgrade, create=create)
        catalog.as_of = as_of
        return catalog


def _version(value: bool) -> None:
    if value:
        out.print(f"ccdcal {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="CCDCAL_DB",
            metavar="URL|PATH",
            help="Catalog: a path (SQLite) or a SQLAlchemy URL. Default ./ccdcal.db.",
            show_envvar=True,
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "-v",
            "--verbose",
            count=True,
            show_default=False,
            help="Say more: ccdcal's own detail; -vv other libraries' too.",
        ),
    ] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, help="Show the version and exit."),
    ] = False,
) -> None:
    """Catalog raw frames, build masters and calibrate lights, with provenance."""
    state = State(db=db, verbosity=-1 if quiet else verbose)
    configure_logging(state.verbosity)
    ctx.obj = state


def configure_logging(verbosity: int) -> None:
    """Log to stderr: warnings (the default); with ``-v`` (1) ccdcal's own debug detail, other libraries'
    loggers staying at warnings (numcodecs alone logs some 25 lines at import); with ``-vv`` (2) every
    logger's; with ``-q`` (-1) errors only."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.WARNING}
    logging.getLogger().setLevel(levels.get(verbosity, logging.DEBUG))
    _log.setLevel(logging.DEBUG if verbosity >= 1 else logging.NOTSET)


def state_of(ctx: typer.Context) -> State:
    state = ctx.find_object(State)
    return state if state is not None else State()


@contextmanager
def progress_bar(state: State, label: str) -> Iterator[Any]:
    """A Rich progress bar on a terminal (stderr); a silent callback in pipes or with -q."""
    if not err.is_terminal or state.quiet:  # no bar: nothing to draw, nothing to import
        yield lambda done, total: None
        return
    # Imported here for start-up time: a bar is drawn only on a terminal.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str, sort_keys=False), indent=2)


def print_table(
    out: Console, rows: Sequence[Sequence[str]], *, title: str | None = None, right: Sequence[int] = ()
) -> None:
    """A table as aligned plain text (first row: the headings; ``right``: columns aligned right).

    Plain text rather than a Rich table: a catalog's status lists hundreds of groups, which Rich lays out
    in about a second; this takes milliseconds, and reads the same in a terminal, a file or a pipe.
    """
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for row in rows:
        cells = (
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
    print_lines(out, lines)


def print_lines(console: Console, lines: Iterable[str]) -> None:
    """Plain text, one line each, written to the console's stream at once.

    Not through ``Console.print``: the text has no markup and is never wrapped, so Rich would only copy
    it, line by line, at a cost that dominates the dry run of a large catalog; written directly, the
    200,000 lines of a plan of 100,000 lights take milliseconds.
    """
    text = "".join(line + "\n" for line in lines)
    if text:
        console.file.write(text)
        console.file.flush()


def print_problems(state: State, lines: Iterable[str]) -> None:
    """What a command left undone, on stderr; with ``-q`` (errors only) without its warnings."""
    print_lines(err, (line for line in lines if not (state.quiet and line.startswith("Warning: "))))


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text: str, option: str = "--mem-limit") -> int:
    """``512M``, ``2G``, ``1500000`` → bytes (a usage error names the option and the bad value)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in SIZE_UNITS and value[-1:] else ""
    try:
        number = float(value[:-1] if unit else value)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a size such as 512M or 2G") from None
    if not math.isfinite(number) or number <= 0:
        raise UsageError(f"{option} {text!r} must be a positive size such as 512M or 2G")
    return int(number * SIZE_UNITS[unit])


#: Options of the optional steps (ccdcal.kernels.options.StepOptions), shared by masters and process.
OverscanOption = Annotated[
    str,
    typer.Option(
        "--overscan",
        metavar="METHOD",
        help="Overscan on every frame: auto (the median of each row's BIASSEC subtracted, then a trim to "
        "TRIMSEC or DATASEC, when the header has them), off, median, or poly:N (a polynomial of degree N "
        "fitted to those medians).",
    ),
]


FlatDarkScaleOption = Annotated[
    bool,
    typer.Option(
        "--flat-dark-scale",
        help="Master flats: subtract the nearest dark (preferring a longer one) scaled to the flats' "
        "exposure. Default: only a dark at their own exposure, else the bias alone.",
    ),
]
SaturationOption = Annotated[
    float | None,
    typer.Option(
        "--saturation",
        metavar="ADU",
        help="Raw samples at or above this many ADU are saturated, in every frame (default: the header's "
        f"SATURATE, DATAMAX or MAXLIN, else the data type's maximum; {limits.SATURATION.text}). Saturated "
        "samples are left out of masters and flagged in MASK (bit 8).",
    ),
]
MinFramesOption = Annotated[
    int,
    typer.Option("--min-frames", metavar="N", help=f"Smallest group combined ({limits.MIN_FRAMES.text})."),
]
MemLimitOption = Annotated[
    str,
    typer.Option(
        "--mem-limit",
        metavar="SIZE",
        help=f"Memory the combine may use, e.g. 512M or 2G ({limits.MEM_LIMIT.text}).",
    ),
]
UncertaintyOption = Annotated[
    bool,
    typer.Option(
        "--uncertainty",
        help="Write an UNCERT extension on every light, propagated as ccdproc does with the masters' UNCERT "
        "(every master has one); no master is built for it.",
    ),
]
MastersUncertaintyOption = Annotated[
    bool,
    typer.Option(
        "--uncertainty",
        help="Build again the masters an earlier ccdcal wrote without an UNCERT extension (every new master "
        "has one).",
    ),
]


def key_text(value: Any) -> str:
    """A group key for display: ``NA`` when absent, whole numbers without ``.0``."""
    if value is None:
        return "NA"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        metavar="DATETIME",
        help="Answer as the catalog stood at this time: an ISO date or date-time, UTC unless an offset "
        "is given (2026-03-14T18:00, 2026-03-14T20:00+02:00).",
        show_default=False,
    ),
]


def as_of_time(text: str | None) -> dt.datetime | None:
    """The time of ``--as-of`` as naive UTC (``None``: not given)."""
    return None if text is None else limits.parse_utc(text, "--as-of")


TARGET_HELP = "A calibrated file, master or raw frame (its path), or calibration:N, master:N, frame:N."


def wide_console() -> Console:
    """stdout; in a pipe, laid out wide rather than wrapped at 80 columns."""
    return out if out.is_terminal else PipeConsole(file=out.file, width=250, highlight=False, soft_wrap=True)


#: Whether this process is the ``ccdcal`` command's own (:func:`run`), not a caller's such as a test runner.
_command_process = False


def run() -> None:
    """Entry point of the ``ccdcal`` command and of ``python -m ccdcal``.

    Ctrl-C and SIGTERM stop the command (:mod:`ccdcal.runtime.interrupts`); once it has ended, with its exit
    status decided, they are ignored while the process exits.
    """
    global _command_process
    _command_process = True
    with handling_signals(keep=True):  # from before the options are parsed
        try:
            app(prog_name="ccdcal")
        except KeyboardInterrupt as stop:  # landed while the command group was ending
            raise SystemExit(_stopped(isinstance(stop, Terminated))) from None
        except SystemExit as ended:
            # The parser turns an interrupt landing while it parses into status 130, silently.
            if ended.code == EXIT_INTERRUPTED and not _told:
                raise SystemExit(_stopped(received() == signal.SIGTERM)) from None
            raise


_told = False


def _stopped(terminated: bool) -> int:
    """Say that the command was stopped (once), and return its exit status: 143 after SIGTERM, 130 after
    Ctrl-C."""
    global _told
    settle()
    if not _told:
        word = "Terminated" if terminated else "Interrupted"
        err.print(f"{word}: what was finished is kept; run the same command again to resume.")
        _told = True
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
