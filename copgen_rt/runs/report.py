"""A many-scene run's progress on stderr and its summary."""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, field

from copgen_rt.errors import escaped


@dataclass
class Summary:
    total: int
    succeeded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (scene, one-line reason)
    retried: int = 0  # tasks run again after their worker died


class Report:
    """Aggregated progress on stderr: a line per finished scene with scenes done/total, tiles/s
    and an ETA (tiles of scenes not planned yet are estimated from those planned)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.finished = self.seen = self.planned_scenes = self.planned_tiles = 0
        self.done_tiles = 0.0
        self.start = self.work_start = time.monotonic()

    def begin(self) -> None:
        """Workers are ready: tiles/s counts from now."""
        self.work_start = time.monotonic()

    def planned(self, tiles: int) -> None:
        self.seen += 1
        self.planned_scenes += 1
        self.planned_tiles += tiles

    def unplanned(self, finished: bool) -> None:
        """A scene that needs no work: skipped (finished, no line) or failed (its line follows)."""
        self.seen += 1
        self.finished += finished

    def tiles(self, n: float) -> None:
        self.done_tiles += n

    def scene(self, name: str, text: str) -> None:
        self.finished += 1
        if not self.quiet:
            say(f"[{self.finished}/{self.total}] {name}: {text} | {self._rate()}")

    def _rate(self) -> str:
        elapsed = time.monotonic() - self.work_start
        rate = self.done_tiles / elapsed if elapsed > 0 else 0.0
        mean = self.planned_tiles / self.planned_scenes if self.planned_scenes else 0.0
        left = max(0.0, self.planned_tiles - self.done_tiles + (self.total - self.seen) * mean)
        eta = _clock(left / rate) if rate > 0 else "?"
        return f"{rate:.1f} tiles/s, ETA {eta}"

    def summary(self, s: Summary) -> None:
        seconds = time.monotonic() - self.start
        parts = [
            f"{s.succeeded} succeeded",
            f"{s.skipped} skipped (already complete)",
            f"{len(s.failed)} failed",
        ]
        retried = f"; {s.retried} task(s) retried after a worker died" if s.retried else ""
        say(f"{s.total} scenes in {_clock(seconds)}: {', '.join(parts)}{retried}")
        for name, reason in s.failed:
            say(f"failed: {name}: {reason}")


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


def say(text: str) -> None:
    print(f"copgen-rt: {escaped(text)}", file=sys.stderr, flush=True)  # a newline in a path stays in its line
