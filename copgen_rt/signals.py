"""Ctrl-C, SIGTERM, SIGHUP (the terminal closed), SIGQUIT (Ctrl-\\) and SIGUSR1: from `install()`
on, each ends the program with one line and the conventional exit code (128 + the signal: 130,
143, 129, 131, 138) after the temporary files are removed, wherever it is; without this, the
last three would kill the process and leave partial files. Imports nothing but the standard
library, so that `copgen_rt.__main__` installs it before torch loads."""

from __future__ import annotations

import signal
import sys
from types import FrameType

NAMES: dict[int, str] = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated (SIGTERM)",
    signal.SIGHUP: "hung up (SIGHUP)",
    signal.SIGQUIT: "quit (SIGQUIT)",
    signal.SIGUSR1: "ended by SIGUSR1",
}


class Interrupted(BaseException):
    """Raised in the main thread by one of the signals in NAMES; unwinding removes the temporaries."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


received: list[int] = []  # the signal that ends this run, once one came


def _raise(signum: int, frame: FrameType | None) -> None:
    for s in NAMES:  # a second Ctrl-C must not cut the clean-up short
        signal.signal(s, signal.SIG_IGN)
    received.append(signum)
    raise Interrupted(signum)


def install() -> None:
    """The signals in NAMES raise `Interrupted` from now on (one ignored by whoever started us, as
    `nohup` ignores SIGHUP, stays ignored)."""
    for s in NAMES:
        if signal.getsignal(s) != signal.SIG_IGN:
            signal.signal(s, _raise)


def exit_if_interrupted() -> None:
    """After a signal, whatever error followed it (a library may catch the exception half-way
    through an import and fail later) ends the run as the signal does."""
    if received:
        if len(received) == 1:  # said once, however many places notice it on the way out
            received.append(received[0])
            print(f"copgen-rt: error: {NAMES[signal.Signals(received[0])]}", file=sys.stderr, flush=True)
        sys.exit(128 + received[0])
