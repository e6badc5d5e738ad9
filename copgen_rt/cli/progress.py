"""The command line's progress in tiles: a tqdm bar on a terminal, plain lines in logs."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

import click

from copgen_rt.signals import exit_if_interrupted


class LineProgress:
    """Progress for logs (stderr not a terminal): a plain line at most every `interval` seconds
    and at the end, never carriage returns."""

    def __init__(self, total: int, interval: float = 10.0):
        self.total, self.done, self.interval, self.clock = total, 0.0, interval, time.monotonic
        self.start = self.last = self.clock()

    def __call__(self, tiles: float) -> None:
        self.done += tiles
        if self.clock() - self.last >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last = self.clock()
        click.echo(f"copgen-rt: {self.done:.1f}/{self.total} tiles ({self.done / max(self.total, 1):.0%}), "
                   f"{self.last - self.start:.0f} s", err=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._line()


@contextlib.contextmanager
def progress_bar(total: int, quiet: bool) -> Iterator[Callable[[float], None]]:
    """A callable taking tiles done (fractions as network calls finish): a tqdm bar on a terminal,
    periodic plain lines in logs, nothing with --quiet."""

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
                  bar_format="{l_bar}{bar}| {n:.1f}/{total} tiles [{elapsed}<{remaining}]") as bar:
            yield checked(bar.update)
    else:
        with LineProgress(total) as lines:
            yield checked(lines)
