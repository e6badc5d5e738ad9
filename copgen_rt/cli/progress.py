"""The command line's progress: tiles sampled (a tqdm bar on a terminal, plain lines in logs) and
the phases the library says it is in (`copgen_rt.phases`: engine measurement, export, compile,
int8 calibration, decoding and writing), one line each."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

import click

from copgen_rt.phases import LOGGER as PHASES
from copgen_rt.signals import exit_if_interrupted

# sums of fractional network-call shares that make a whole tile can fall short of it by rounding
_WHOLE = 1e-6


def whole_tiles(done: float) -> int:
    """Tiles sampled completely: 1.8 tiles done is 1 tile (a count is never fractional)."""
    return int(done + _WHOLE)


class LineProgress:
    """Progress for logs (stderr not a terminal): a plain line at most every `interval` seconds
    and one at the end where that says something new, never carriage returns."""

    def __init__(self, total: int, interval: float = 10.0):
        self.total, self.done, self.interval, self.clock = total, 0.0, interval, time.monotonic
        self.start = self.last = self.clock()
        self.said: float | None = None  # `done` when the last line was printed

    def __call__(self, tiles: float) -> None:
        self.done += tiles
        # at once when every tile is sampled: decoding and writing follow, with lines of their own
        if self.clock() - self.last >= self.interval or whole_tiles(self.done) == self.total:
            self._line()

    def _line(self) -> None:
        self.last, self.said = self.clock(), self.done
        elapsed = self.last - self.start
        click.echo(f"copgen-rt: {describe_tiles(self.done, self.total)}, {elapsed:.0f} s", err=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        # nothing sampled (a complete run) or nothing new since the last line: no line
        if exc[0] is None and self.done > 0 and self.said != self.done:
            self._line()


def describe_tiles(done: float, total: int) -> str:
    """'1/4 tiles sampled (45%)': whole tiles, the share of the work in network calls."""
    return f"{whole_tiles(done)}/{total} tiles sampled ({min(done, total) / max(total, 1):.0%})"


@contextlib.contextmanager
def progress_bar(total: int, quiet: bool) -> Iterator[Callable[[float], None]]:
    """A callable taking tiles sampled (fractions as network calls finish): a tqdm bar on a
    terminal, periodic plain lines in logs, nothing with --quiet."""

    def checked(report: Callable[[float], object]) -> Callable[[float], None]:
        def update(tiles: float) -> None:  # a signal swallowed by a library still stops the run here
            exit_if_interrupted()
            report(tiles)
        return update

    if quiet:
        yield checked(lambda tiles: None)
    elif sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="tile", desc="copgen-rt", file=sys.stderr,
                  bar_format="{l_bar}{bar}| {postfix} [{elapsed}<{remaining}]") as bar:
            def update(tiles: float) -> None:
                bar.set_postfix_str(f"{whole_tiles(bar.n + tiles)}/{total} tiles sampled", refresh=False)
                bar.update(tiles)
            bar.set_postfix_str(f"0/{total} tiles sampled", refresh=False)
            yield checked(update)
    else:
        with LineProgress(total) as lines:
            yield checked(lines)


class PhaseLines(logging.Handler):
    """The library's phases as `copgen-rt: ...` lines on stderr, through tqdm so that a progress
    bar stays whole; none while the running command has --quiet."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        context = click.get_current_context(silent=True)
        if context is not None and context.params.get("quiet"):
            return
        try:
            tqdm.write(f"copgen-rt: {record.getMessage()}", file=sys.stderr)
        except Exception:  # a closed stream must not fail the run
            self.handleError(record)


def say_phases() -> None:
    """Print the library's phases (once per process, however often the command line runs)."""
    if not any(isinstance(h, PhaseLines) for h in PHASES.handlers):
        PHASES.addHandler(PhaseLines())
    PHASES.setLevel(logging.INFO)
