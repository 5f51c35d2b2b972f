"""``python -m ccdcal``: the same as the ``ccdcal`` command."""

from ccdcal.cli import run

run()
