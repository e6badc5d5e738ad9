"""The `copgen-rt` entry point. Ctrl-C and SIGTERM are handled from its first line, before
torch is imported, so that either ends the program with one line and the conventional exit
code (130, 143) after the temporary files are removed, wherever it is."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

NAMES: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM; unwinding removes the temporaries."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


received: list[int] = []  # the signal that ends this run, once one came


def _raise(signum: int, frame: FrameType | None) -> None:
    for s in NAMES:  # a second Ctrl-C must not cut the clean-up short
        signal.signal(s, signal.SIG_IGN)
    received.append(signum)
    raise Interrupted(signum)


def exit_if_interrupted() -> None:
    """After a signal, whatever error followed it (a library may catch the exception half-way
    through an import and fail later) ends the run as the signal does."""
    if received:
        if len(received) == 1:  # said once, however many places notice it on the way out
            received.append(received[0])
            print(f"copgen-rt: error: {NAMES[signal.Signals(received[0])]}", file=sys.stderr, flush=True)
        sys.exit(128 + received[0])


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
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        return
    sys.stderr = os.fdopen(kept, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


def main() -> None:
    for s in NAMES:
        signal.signal(s, _raise)
    _silence_native_stderr()
    try:
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
