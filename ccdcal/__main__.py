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
    try:
        run()
    except SystemExit as ended:
        leave(ended.code)
    leave(0)


def leave(code: object) -> None:
    """End the process with the command's exit status, without the interpreter's tear-down.

    Once the command has ended, Python would spend 0.2-0.5 s freeing every module it loaded (numba's
    compiled code, astropy, SQLAlchemy): time a user waits for nothing. The ``atexit`` functions run
    (multiprocessing's, logging's, temporary folders'), the output is flushed (a closed pipe makes status
    141, as the command line's own printing does), then :func:`os._exit`. While a thread other than
    a daemon one still runs, Python's own exit is used: it waits for that thread, as it should.

    Parameters
    ----------
    code : object
        ``SystemExit.code``: ``None`` (0), an exit status, or a message (printed; status 1).
    """
    # Imported here for start-up time: --version needs neither.
    import atexit
    import contextlib
    import os
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        sys.stderr.write(f"{code}\n")
        status = 1
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(status)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except OSError:  # `ccdcal status | head -2`: nobody reads the rest
        status = status or 141
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
