"""The ``ccdcal`` command, and ``python -m ccdcal``: :func:`main`."""

from __future__ import annotations

import sys


def main() -> None:
    """Load the command line and run it; a Ctrl-C while it loads ends it as one during a command does
    (one line, exit status 130), not with a traceback of the imports."""
    try:
        from ccdcal.cli import run  # imported here (start-up), where a Ctrl-C can be caught
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted: what was finished is kept; run the same command again to resume.\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
