"""Counts in words: a number and its noun in agreement (``1 light``, ``2 lights``), for every message
and summary ccdcal prints."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in agreement: the noun as given for one, else ``plural`` (default: the noun
    with an ``s``). ``counted(1, "master")`` is ``1 master``; ``counted(0, "master")`` ``0 masters``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
