"""How ccdcal's commands show their help: plain text wrapped to the terminal, every option and argument
by its metavar, each command's examples last (:class:`PlainHelp`); and the Typer app whose commands show
it (:class:`CcdcalTyper`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandFunctionType

from ccdcal.cli.coercion import DirectValues


class PlainHelp:
    """The help of ccdcal's commands and groups: plain text wrapped to the terminal (at most 100
    columns), never cut, with no Python type in it.

    Every option and argument has a metavar (``FILE``, ``DIR``, ``N`` ...), shown as it is; the usage line
    lists the arguments as they are typed (``PATH...``, ``[CONFIG]``); the list of commands shows each
    command's first sentence in full, wrapped; the epilog is the command's examples, one command line
    each, shown as written under ``Examples:``.
    """

    epilog: str | None
    help: str | None
    short_help: str | None

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        return [_REQUIRED_ARGUMENT.sub(r"\1", piece) for piece in pieces]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments = [
            (_argument_name(param), param.help or "")
            for param in self.get_params(ctx)  # type: ignore[attr-defined]
            if param.param_type_name == "argument" and not param.hidden
        ]
        options = [
            record
            for param in self.get_params(ctx)  # type: ignore[attr-defined]
            if param.param_type_name == "option" and (record := param.get_help_record(ctx)) is not None
        ]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        if isinstance(self, TyperGroup):
            self.format_commands(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        """The first sentence of the help, in full (the list of commands wraps it)."""
        text = " ".join(inspect.cleandoc(self.short_help or self.help or "").split("\n\n")[0].split())
        return re.split(r"(?<=[.])\s", text, maxsplit=1)[0].removesuffix(".")

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        if self.epilog:
            with formatter.section("Examples"):
                for line in inspect.cleandoc(self.epilog).splitlines():
                    formatter.write(f"{'':>{formatter.current_indent}}{line}\n")


#: A required argument in the usage line as Typer writes it (``{PATH}...``).
_REQUIRED_ARGUMENT = re.compile(r"^\{(.*)\}")


def _argument_name(param: Any) -> str:
    """An argument as the help lists it: its metavar, with ``...`` when it takes several values."""
    name = param.metavar or param.name.upper()
    return name if param.nargs == 1 or name.endswith("...") else f"{name}..."


class CcdcalCommand(DirectValues, PlainHelp, TyperCommand):
    """A command of ccdcal: its help as :class:`PlainHelp` formats it, its values read as
    :class:`~ccdcal.cli.coercion.DirectValues` reads them."""


class CcdcalTyper(typer.Typer):
    """The ``ccdcal`` app and its groups: every command of theirs is a :class:`CcdcalCommand`."""

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **settings: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=cls or CcdcalCommand, **settings)


#: The help of every command is plain text, wrapped to the terminal up to this width (Click's own
#: formatting, not Rich's panels, which cut option names short in 80 columns).
HELP_WIDTH = 100
