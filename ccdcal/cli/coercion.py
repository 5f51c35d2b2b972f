"""Option and argument values converted without pydantic, for start-up time.

Recent Typer versions convert every command-line value with a pydantic ``TypeAdapter``, and importing
pydantic and building the adapters takes about as long as a small command's own work. The values ccdcal's
options take are plain — text, whole numbers, decimal numbers, paths, and lists of them — and most are typed
as Python would read them. :func:`install` gives each parameter of a command a converter that reads such a
value directly and hands any other (an ``--jobs x``, a path that cannot be read, a number written
``1_000``) to Typer's own converter, built only then: a value read directly is the one Typer gives, and every
message about a wrong value stays Typer's. With a Typer that converts through Click's types (no pydantic),
:func:`install` does nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

try:  # Typer 0.2x: conversions through pydantic, which this module avoids for the values it can read
    from typer import _coercion as _typers
except ImportError:  # pragma: no cover - an older Typer converts through Click's types, quickly
    _typers = None  # type: ignore[assignment]

#: What a direct reading returns for a value it leaves to Typer.
_TYPERS = object()

#: Whole and decimal numbers as Python's ``int`` and ``float`` read them, and pydantic alike (others: Typer).
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?[0-9]{1,17}(\.[0-9]{1,17})?([eE]-?[0-9]{1,3})?")

#: A path parameter's flags as Typer's defaults have them: no check but that an existing path is readable.
_PLAIN_PATH = {
    "exists": False,
    "file_okay": True,
    "dir_okay": True,
    "writable": False,
    "readable": True,
    "resolve_path": False,
    "allow_dash": False,
    "path_type": None,
}


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else _TYPERS


def _integer(value: Any) -> Any:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return value if type(value) is int else _TYPERS


def _decimal(value: Any) -> Any:
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return float(value)
    return value if type(value) is float else _TYPERS


def _flag(value: Any) -> Any:
    return value if type(value) is bool else _TYPERS


def _path(value: Any) -> Any:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value or "\0" in value:
        return _TYPERS
    try:
        os.stat(value)
    except OSError:
        return Path(value)  # not there (yet): as Typer, no check
    except ValueError:
        return _TYPERS
    return Path(value) if os.access(value, os.R_OK) else _TYPERS  # Typer's message when it is unreadable


_READERS: dict[Any, Callable[[Any], Any]] = {
    str: _text,
    int: _integer,
    float: _decimal,
    bool: _flag,
    Path: _path,
}


def _reader(annotation: Any, info: Any) -> Callable[[Any], Any] | None:
    """How a value of ``annotation`` is read directly (``None``: only Typer's converter reads it)."""
    if info.parser is not None or getattr(info, "click_type", None) is not None:
        return None
    if info.min is not None or info.max is not None or info.clamp:
        return None
    if annotation is Path and any(getattr(info, name, None) != flag for name, flag in _PLAIN_PATH.items()):
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        each = _reader(item, info)
        return None if each is None or get_origin(item) is not None else _each(each)
    return _READERS.get(annotation)


def _each(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def read_all(values: Any) -> Any:
        items = [read(value) for value in (values if isinstance(values, (list, tuple)) else [values])]
        return _TYPERS if any(item is _TYPERS for item in items) else items

    return read_all


if _typers is not None:

    @dataclass(frozen=True)
    class _Direct(_typers.RuntimeParam):
        """A parameter's values read by ``read``, any it leaves handed to Typer's converter."""

        read: Callable[[Any], Any]
        descriptor: Any

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            found = self.read(value)
            if found is not _TYPERS:
                return found
            typers = _typers.build_runtime_param(self.descriptor)
            return typers._coerce_value(value, param=param, ctx=ctx)


def install(params: Iterable[Any]) -> None:
    """Give each of ``params`` (a command's) whose values can be read directly its direct converter."""
    if _typers is None:
        return
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", True) is not None:
            continue
        if descriptor.file_annotation is not None:
            continue
        read = _reader(descriptor.annotation, descriptor.parameter_info)
        if read is not None:
            param._runtime_param = _Direct(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                read=read,
                descriptor=descriptor,
            )


class DirectValues:
    """A command or group whose parameters' values (``--help`` included) are read as :func:`install`
    says."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        install(self.get_params(ctx))  # type: ignore[attr-defined]
        parsed: list[str] = super().parse_args(ctx, args)  # type: ignore[misc]
        return parsed
