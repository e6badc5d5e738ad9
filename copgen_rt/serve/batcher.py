"""Network calls shared across jobs: every denoiser call packs the pending tiles of all running
jobs, whatever step each is at, up to the batch size.

The denoiser already takes a timestep per sample and per modality, so rows at different steps
(or of different solvers, presets or processes) share a call. Each job runs the ordinary sampler
loop (`copgen_rt.sampler.sample` through `run_scene`) in its own thread; its denoiser is a
`BatchClient`, which hands the call to the `Batcher` and waits for its rows. A thread parked on
its network call is the step-wise form of the sampler: the server and the command line share one
sampler implementation, and the batcher only decides which waiting calls run together.

A job's result does not depend on what else runs: with `pad=True` every call runs at exactly
`rows` rows (zero rows fill the rest), so each row sees the same matrix shapes whichever jobs
share its call, and the engines compute a row independently of the other rows of a call (the
premise `--batch-size` results rest on, tested in tests/test_serve.py). Without padding, calls
of other shapes round differently in fp32 (and visibly in bf16), as across `--batch-size`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import Tensor

Denoiser = Callable[[list[Tensor], list[Tensor]], list[Tensor]]
GATHER_S = 0.01  # how long a call waits for the other running jobs' next calls


class JobDismissed(Exception):
    """The job was dismissed: raised in its thread at its next network call."""


@dataclass
class _Call:
    latents: list[Tensor]
    timesteps: list[Tensor]
    future: Future

    @property
    def rows(self) -> int:
        return int(self.latents[0].shape[0])


@dataclass
class BatchStats:
    calls: int = 0  # network calls run
    rows: int = 0  # rows of jobs they carried
    padded: int = 0  # zero rows added to reach the batch shape


class Batcher:
    """One thread that runs the denoiser on the packed pending calls of every client."""

    def __init__(self, denoiser: Denoiser, rows: int, pad: bool = True, gather_s: float = GATHER_S):
        self.denoiser, self.rows, self.pad, self.gather_s = denoiser, rows, pad, gather_s
        self.stats = BatchStats()
        self._pending: deque[_Call] = deque()
        self._clients = 0  # jobs running now: a call waits (up to gather_s) for each one's call
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="copgen-batcher", daemon=True)
        self._thread.start()

    def client(self, cancelled: Callable[[], bool], host_lock: threading.Lock) -> BatchClient:
        return BatchClient(self, cancelled, host_lock)

    def join(self) -> None:
        with self._cond:
            self._clients += 1
            self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self._clients -= 1
            self._cond.notify_all()

    def submit(self, latents: list[Tensor], timesteps: list[Tensor]) -> Future:
        call = _Call(latents, timesteps, Future())
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is stopping")
            self._pending.append(call)
            self._cond.notify_all()
        return call.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _take(self) -> list[_Call] | None:
        """The next calls to pack: wait for one, then up to gather_s for every running job's
        call or a full batch; take them oldest first while they fit (at least one)."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.gather_s
            while (
                len(self._pending) < self._clients
                and sum(c.rows for c in self._pending) < self.rows
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            taken = [self._pending.popleft()]
            while self._pending and sum(c.rows for c in taken) + self._pending[0].rows <= self.rows:
                taken.append(self._pending.popleft())
            return taken

    def _loop(self) -> None:
        while (calls := self._take()) is not None:
            try:
                outputs = self._run(calls)
            except BaseException as e:  # noqa: BLE001 - every waiting job gets the error as its own
                for call in calls:
                    call.future.set_exception(e)
                continue
            for call, out in zip(calls, outputs, strict=True):
                call.future.set_result(out)

    def _run(self, calls: list[_Call]) -> list[list[Tensor]]:
        rows = sum(c.rows for c in calls)
        fill = self.rows - rows if self.pad and rows < self.rows else 0
        latents = [self._pack([c.latents[m] for c in calls], fill) for m in range(len(calls[0].latents))]
        timesteps = [
            self._pack([c.timesteps[m] for c in calls], fill) for m in range(len(calls[0].timesteps))
        ]
        out = self.denoiser(latents, timesteps)
        self.stats.calls += 1
        self.stats.rows += rows
        self.stats.padded += fill
        parts, start = [], 0
        for call in calls:
            parts.append([o[start : start + call.rows].clone() for o in out])
            start += call.rows
        return parts

    @staticmethod
    def _pack(tensors: list[Tensor], fill: int) -> Tensor:
        if fill:
            first = tensors[0]
            tensors = [
                *tensors,
                torch.zeros((fill, *first.shape[1:]), dtype=first.dtype, device=first.device),
            ]
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class BatchClient:
    """A job's denoiser: its call joins the batcher's next packed call. While it waits, the job
    lets go of the host lock, which serialises the jobs' host work (reading, VAEs, writing: not
    every engine may be called from two threads at once) but not the network calls."""

    def __init__(self, batcher: Batcher, cancelled: Callable[[], bool], host_lock: threading.Lock):
        self.batcher, self.cancelled, self.host_lock = batcher, cancelled, host_lock
        self.name = f"batched {getattr(batcher.denoiser, 'name', 'denoiser')}"
        self.calls = 0

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        if self.cancelled():
            raise JobDismissed("dismissed")
        future = self.batcher.submit(latents, timesteps)
        self.host_lock.release()
        try:
            out = future.result()
        finally:
            self.host_lock.acquire()
        self.calls += 1
        return out
