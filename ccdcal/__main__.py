"""The ``ccdcal`` command, and ``python -m ccdcal``: :func:`main`."""

from __future__ import annotations

import sys

from ccdcal._version import __version__

STOPPED = "Interrupted: what was finished is kept; run the same command again to resume.\n"


def main() -> None:
    """Load the command line and run it; a Ctrl-C while it loads ends it as one during a command does
    (one line, exit status 130), not with a traceback of the imports.

    A Ctrl-C landing in a finalizer or a weakref callback while the modules import (the import system's
    module locks have one) would be printed as "Exception ignored" and dropped, and the command would go
    on: it is kept and raised once the imports end.
    """
    if sys.argv[1:] == ["--version"]:  # answered before the command line loads, as it needs none of it
        sys.stdout.write(f"ccdcal {__version__}\n")
        return
    dropped: list[BaseException] = []
    previous = sys.unraisablehook

    def keep(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            dropped.append(unraisable.exc_value)
            return
        previous(unraisable)

    sys.unraisablehook = keep
    try:
        from ccdcal.cli import run  # imported here (start-up), where a Ctrl-C can be caught

        if dropped:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        from ccdcal.runtime.interrupts import forget_escaped_interrupt  # here for start-up time

        forget_escaped_interrupt()
        sys.stderr.write(STOPPED)
        raise SystemExit(130) from None
    finally:
        sys.unraisablehook = previous
    run()


if __name__ == "__main__":
    main()
