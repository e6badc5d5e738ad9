"""Helpers for scene tests: a pipeline stand-in that echoes its inputs (rasters: scenes.synthetic)."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from copgen_rt import processing, specs
from copgen_rt.provenance import Provenance
from copgen_rt.scenes.synthetic import smooth_s2, write_raster  # noqa: F401 (re-exported for tests)
from copgen_rt.scenes.tiling import TilingPlan

CHIPS = Path(__file__).parent / "data" / "majortom"
# with pytest-xdist (`-n 2 --dist loadgroup`, the default: pyproject.toml), the tests that start Ray
# run in one worker, one after the other: their kill tests wait on timeouts, and two Ray runtimes
# at once would fight over the CPUs their actors reserve
RAY = pytest.mark.xdist_group("ray")


def interrupt_after_tiles(tiles: float):
    """A run_scene progress callback (tiles, per network call) that raises KeyboardInterrupt at the
    first call after `tiles` tiles are done, i.e. once the batches holding them are saved."""
    done: list[float] = []

    def progress(n: float) -> None:
        done.append(n)
        if sum(done) > tiles + 0.5:
            raise KeyboardInterrupt

    return progress


class EchoPipeline:
    """Stands in for a Pipeline: S2L1C outputs echo the S2L2A input with the same bands (so a
    perfect tiler/blender reproduces the input exactly); other outputs are a per-tile constant
    (so seams between disagreeing tiles can be measured)."""

    def __init__(self):
        self.spec = specs.get("copgen-demo")
        self.provenance = Provenance(self.spec.name, {}, random=True)
        self.is_random = True
        self.calls = 0

    def generate(self, generate, conditions, n_samples=1, seed=None, batch_size=None, **_):
        out = {}
        for name in generate:
            m = self.spec.modality(name)
            source = name.replace("S2L1C", "S2L2A")
            if m.is_image and source in conditions and source != name:
                x = processing.preprocess(self.spec.modality(source), conditions[source])
            else:
                shape = self.spec.pixel_shape(name) if m.is_image else m.latent_shape
                level = torch.tensor([float(s % 1000) / 1000.0 for s in seed])
                x = level.view(-1, 1, 1, 1) * torch.ones(len(seed), *shape)
            out[name] = x.repeat_interleave(n_samples, dim=0)
        self.calls += 1
        return out

    def decode(self, latents, physical_units=True):
        return dict(latents)


def only_inside(plan: TilingPlan, transform: Affine, shape: tuple[int, int], gsd: float,
                 box: tuple[float, float, float, float]) -> np.ndarray:
    """Pixels of an output grid every covering tile of which lies fully inside `box` (CRS
    left, bottom, right, top)."""
    covering, inside = np.zeros(shape, int), np.zeros(shape, int)
    size = round(plan.footprint_m / gsd)
    for t in plan.tiles:
        col, row = round((t.left - transform.c) / gsd), round((transform.f - t.top) / gsd)
        window = (slice(max(row, 0), max(row + size, 0)), slice(max(col, 0), max(col + size, 0)))
        covering[window] += 1
        left, bottom, right, top = box
        if left <= t.left and t.left + plan.footprint_m <= right and bottom <= t.top - plan.footprint_m \
                and t.top <= top:
            inside[window] += 1
    return (covering > 0) & (covering == inside)


def default_signals() -> None:
    """`preexec_fn` of a CLI child: the signals the CLI handles back to their defaults, however the
    suite was started (`nohup` ignores SIGHUP, a shell's background job SIGINT and SIGQUIT), as
    the CLI leaves an ignored signal ignored."""
    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_DFL)
