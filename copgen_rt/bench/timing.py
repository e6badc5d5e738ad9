"""The shared timing: calls made in turn, round by round, CUDA work included."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

K = TypeVar("K")
T = TypeVar("T")


def timed(fn: Callable[[], T], device: str = "cpu") -> tuple[float, T]:
    """Seconds of one call (on CUDA, until its kernels finish) and its result."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


@dataclass
class Rounds(Generic[K]):
    """What `interleaved` measured per key: the first call's seconds and each timed round's."""

    first: dict[K, float]
    seconds: dict[K, list[float]]

    def best(self, key: K) -> float:
        """The fastest timed round: a shared machine only ever slows a call down."""
        return min(self.seconds[key])


def interleaved(
    calls: Mapping[K, Callable[[], T]],
    rounds: int,
    device: str = "cpu",
    on_first: Callable[[K, T], object] | None = None,
) -> Rounds[K]:
    """Each call once per round, in turn, so that a change in machine load falls on all of them
    alike: a first round (compiles, caches; timed apart, its results passed to `on_first`), then
    `rounds` timed rounds."""
    first = {}
    for key, fn in calls.items():
        first[key], out = timed(fn, device)
        if on_first is not None:
            on_first(key, out)
    seconds: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            seconds[key].append(timed(fn, device)[0])
    return Rounds(first, seconds)


def cuda_best_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    """The fastest of `repeats` calls of `fn` on the GPU, timed with CUDA events after `warmup`."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best
