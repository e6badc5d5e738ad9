"""The sampling stage: final latents for a batch of tiles, from the work folder where a previous
run finished them, else from the pipeline (one call per set of conditions with data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.job import SceneJob, scalar_names
from copgen_rt.scenes.state import load_latents, save_latents
from copgen_rt.scenes.tile_inputs import TileInputs, not_finite
from copgen_rt.scenes.tiling import Tile


def tile_seed(seed: int, tile: Tile) -> int:
    """A tile's seed depends only on the run seed and its anchor (its CRS position, or its plan
    position for the scene-anchored tiling): batch, order and window do not matter."""
    state = np.random.SeedSequence([seed % 2**63, *tile.anchor]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def batch_latents(job: SceneJob, pipeline: Pipeline, present: list[TileInputs], work: Path,
                  progress: Callable[[float], None] | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Final latents of every present tile, one sampler call per set of conditions with data
    (seeds stay per tile); `progress` gets tiles done, in fractions as network calls finish. A
    group whose tiles a previous run all finished is loaded; any other is sampled whole, so that
    it is the same batch as in an uninterrupted run, bit for bit, whichever of its tiles were
    saved before a kill."""
    o = job.options
    loc_name, date_name = scalar_names(job.spec)
    cached = [work / "latents" / f"{t.tile.key}.safetensors" for t in present]
    per_tile: dict[int, dict[str, torch.Tensor]] = {}  # by index in present
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for i, t in enumerate(present):
        groups.setdefault((tuple(t.conditions), tuple(t.known)), []).append(i)
    resumed = 0
    for (names, known_names), group in groups.items():
        loaded = [z for i in group if (z := load_latents(cached[i], job)) is not None]
        if len(loaded) == len(group):
            per_tile.update(zip(group, loaded, strict=True))
            resumed += len(group)
            if progress:
                progress(len(group))
            continue
        conditions: dict[str, object] = {
            name: torch.from_numpy(np.stack([present[i].conditions[name] for i in group])) for name in names
        }
        if loc_name in job.scalar_conditions:
            conditions[loc_name] = torch.tensor([present[i].location for i in group])
        if date_name in job.scalar_conditions:
            conditions[date_name] = [job.date] * len(group)
        known = {name: (torch.from_numpy(np.stack([present[i].known[name][0] for i in group])),
                        torch.from_numpy(np.stack([present[i].known[name][1] for i in group])))
                 for name in known_names}
        latents = _generate_splitting_on_oom(job, pipeline, conditions, known,
                                             [tile_seed(o.seed, present[i].tile) for i in group],
                                             _in_tiles(progress, len(group)))
        for j, i in enumerate(group):
            rows = slice(j * o.samples, (j + 1) * o.samples)
            tile_latents = {n: z[rows].contiguous() for n, z in latents.items()}
            _check_finite(job, present[i], tile_latents)
            save_latents(cached[i], tile_latents)
            per_tile[i] = tile_latents
    merged = {n: torch.cat([per_tile[i][n] for i in range(len(present))]) for n in job.generate}
    return merged, resumed


def _check_finite(job: SceneJob, tile: TileInputs, latents: dict[str, torch.Tensor]) -> None:
    bad = [n for n, z in latents.items() if not bool(torch.isfinite(z).all())]
    if bad:
        raise not_finite(job, tile, bad[0])


def _generate_splitting_on_oom(
    job: SceneJob,
    pipeline: Pipeline,
    conditions: dict,
    known: dict[str, tuple[torch.Tensor, torch.Tensor]],
    seeds: list[int],
    progress: Callable[[float], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Sample a batch; if the device runs out of memory, halve it (tiles keep their own seeds)."""
    o = job.options
    solver, steps = o.sampler
    fill = o.fill
    try:
        return pipeline.generate(
            job.generate,
            conditions,
            n_samples=o.samples,
            steps=steps,
            solver=solver,
            others=o.others,
            decode=False,
            seed=seeds,
            batch_size=len(seeds),
            progress=progress,
            known=known or None,
            jumps=fill.jumps if fill and known else 0,
            jump_length=fill.jump_length if fill else 1,
        )
    except torch.cuda.OutOfMemoryError:
        if len(seeds) == 1:
            raise
        torch.cuda.empty_cache()
    half = len(seeds) // 2
    parts = []
    for sl in (slice(0, half), slice(half, None)):
        sub = {k: v[sl] for k, v in conditions.items()}
        sub_known = {k: (values[sl], valid[sl]) for k, (values, valid) in known.items()}
        share = len(seeds[sl]) / len(seeds)
        parts.append(_generate_splitting_on_oom(job, pipeline, sub, sub_known, seeds[sl],
                                                _in_tiles(progress, share)))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _in_tiles(progress: Callable[[float], None] | None, tiles: float) -> Callable[[float], None] | None:
    """A sampler call's progress (shares of the call) as `progress` counts it: in tiles."""
    if progress is None:
        return None
    return lambda share: progress(share * tiles)
