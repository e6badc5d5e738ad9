"""The `copgen-rt` entry point. Ctrl-C, SIGTERM, SIGHUP, SIGQUIT and SIGUSR1 are handled from its
first line (`copgen_rt.signals`), before torch or the command line is imported, so that each ends the
program with one line and the conventional exit code (128 + the signal) wherever it is."""

from __future__ import annotations

import os
import signal
import sys

from copgen_rt.signals import Interrupted, exit_if_interrupted, install, received


def _silence_native_stderr() -> None:
    """C libraries print some messages straight to file descriptor 2 (libtiff's "_tiffWriteProc:
    File too large." on a full disk), next to the one line that reports the same failure. Python
    keeps writing to a copy of that descriptor; the descriptor itself goes to /dev/null.
    COPGEN_RT_DEBUG=1 leaves it alone."""
    if os.environ.get("COPGEN_RT_DEBUG") == "1":
        return
    try:
        sys.stderr.flush()
        kept = os.dup(2)
        # Python's stderr moves to the copy before fd 2 goes: no moment where our lines are lost
        sys.stderr = os.fdopen(kept, "w", buffering=1, encoding=sys.stderr.encoding,
                               errors="backslashreplace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        return


def main() -> None:
    try:  # a signal that lands at any point from here on is one line and its exit code
        install()
        _silence_native_stderr()
        from copgen_rt.cli import main as cli

        exit_if_interrupted()  # a library may have swallowed it while being imported
        cli()
    except (Interrupted, KeyboardInterrupt) as e:
        if not received:
            received.append(e.signum if isinstance(e, Interrupted) else signal.SIGINT)
        exit_if_interrupted()
    except BaseException:  # SystemExit, or what a signal broke on its way (an import cut in half
        exit_if_interrupted()  # fails again with ImportError): after a signal, one line and its code
        raise
    exit_if_interrupted()


if __name__ == "__main__":
    main()
