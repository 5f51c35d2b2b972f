"""Exceptions raised by the ccdcal library.

The library raises these; ``ccdcal.cli`` is the one place that turns them into a one-line message and an
exit status. Every message names the file or value at fault and says what to do about it.
"""

from __future__ import annotations


class CcdcalError(Exception):
    """Base class of every error ccdcal reports to a user."""

    exit_code = 2


class UsageError(CcdcalError):
    """An option or argument cannot be used as given."""


class ConfigError(CcdcalError):
    """A configuration file or value is invalid."""


class NotFoundError(CcdcalError):
    """A path or catalog identifier names nothing ccdcal knows."""


class CatalogError(CcdcalError):
    """The catalog database cannot be opened or used."""


class NoCatalogError(CatalogError, NotFoundError):
    """The catalog named does not exist (no SQLite file, or a database without ccdcal's tables)."""


class NotACatalogError(CatalogError):
    """The database exists but is not a ccdcal catalog."""


class CatalogTooNewError(CatalogError):
    """The catalog was written by a newer ccdcal than this one."""


class CatalogReadOnlyError(CatalogError):
    """The catalog cannot be written (read-only media, permissions) and the command writes to it."""


class CatalogGoneError(CatalogError):
    """The catalog's file was deleted or replaced while a command was working on it."""


class FitsFormatError(CcdcalError):
    """A file is not a readable FITS image (empty, truncated, not FITS, no image HDU)."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class OutputError(CcdcalError):
    """An output file cannot be written (a folder without write permission, a full disk)."""


class NoFitsError(CcdcalError):
    """The paths given to ingest hold no FITS file: nothing to catalogue."""

    exit_code = 1


class FolderOwnerError(CcdcalError):
    """A masters or output folder belongs to another catalog (its ``.ccdcal-catalog`` marker says so)."""
