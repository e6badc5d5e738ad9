"""The any-to-any sampling loop, in latent space.

Each network call sees every modality of the spec: generated ones carry the solver state at the
current timestep, conditioned ones their clean latent at timestep 0, and the rest ("others")
follow a policy: `reference` (what the published model was sampled with: fresh N(0, 1) labelled
timestep 0 at every call) or `marginal` (fresh N(0, 1) at the largest timestep, i.e. pure noise).

A generated modality may also be partly known (gap filling): its known latent cells are held to
the forward-noised known latent at every call (RePaint replacement, `copgen_rt.solvers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from copgen_rt.solvers import KnownLatent, SolverProgram, run_program
from copgen_rt.specs import ModelSpec

OTHERS_POLICIES = ("reference", "marginal")
EpsModel = Callable[[list[Tensor], list[Tensor]], list[Tensor]]
OthersNoise = Callable[[int, str], Tensor]
KnownNoise = Callable[[int], Tensor]  # call index -> (E, total generated latent size) standard normal


class NoiseSource:
    """Per-sample generators: row i's draws depend only on its own seed, never on the batch."""

    def __init__(self, row_seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.row_seeds = [int(s) for s in row_seeds]
        self.generators = [torch.Generator().manual_seed(s) for s in self.row_seeds]
        self.device = device

    def draw(self, shape: Sequence[int]) -> Tensor:
        """(rows, *shape) standard normal, float32."""
        rows = [torch.randn(tuple(shape), generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device)


def row_seeds(condition_seeds: Sequence[int], n_samples: int) -> list[int]:
    """Seed of copy j of condition b: derived from (seed_b, j) so copies are independent."""
    out = []
    for s in condition_seeds:
        for j in range(n_samples):
            state = np.random.SeedSequence([int(s) % 2**63, j]).generate_state(2, np.uint32)
            out.append(int(state[0]) << 31 ^ int(state[1]))
    return out


def sample(spec: ModelSpec, eps_model: EpsModel, program: SolverProgram, generate: Sequence[str],
           conditions: Mapping[str, Tensor], x_init: Mapping[str, Tensor],
           others: str = "reference", others_noise: OthersNoise | None = None,
           known: Mapping[str, tuple[Tensor, Tensor]] | None = None,
           known_noise: KnownNoise | None = None) -> dict[str, Tensor]:
    """Solve for the `generate` latents given clean condition latents; returns final latents.

    x_init holds the initial noise of every generated modality (batch E); conditions their clean
    latents (batch E). others_noise(call_index, modality) gives the noise of the others.
    known maps generated modalities to (clean latent (E, C, h, w), known cells (E, h, w) bool);
    known_noise(call) draws the noise that forward-noises them (see `KnownLatent`).
    """
    if others not in OTHERS_POLICIES:
        raise ValueError(f"unknown others policy {others!r}; choose {' or '.join(OTHERS_POLICIES)}")
    generate = spec.canonical(generate)
    if not generate:
        raise ValueError("nothing to generate")
    overlap = set(generate) & set(conditions)
    if overlap:
        raise ValueError(f"modalities both generated and conditioned: {', '.join(sorted(overlap))}")
    rest = [n for n in spec.names if n not in generate and n not in conditions]
    if rest and others_noise is None:
        raise ValueError("others_noise is needed when some modalities are neither generated nor given")
    first = x_init[generate[0]]
    batch, device = first.shape[0], first.device
    shapes = {m.name: m.latent_shape for m in spec.modalities}
    sizes = [spec.modality(n).latent_size for n in generate]
    zero_t = torch.zeros(batch, device=device)
    rest_t = zero_t if others == "reference" else torch.full((batch,), float(spec.schedule.num_timesteps),
                                                             device=device)
    gen_index = [spec.index(n) for n in generate]

    def eps_fn(u: Tensor, t_net: Tensor, call: int) -> Tensor:
        chunks = dict(zip(generate, u.split(sizes, dim=1), strict=True))
        gen_t = t_net.expand(batch)
        latents, timesteps = [], []
        for name in spec.names:
            if name in chunks:
                latents.append(chunks[name].reshape(batch, *shapes[name]))
                timesteps.append(gen_t)
            elif name in conditions:
                latents.append(conditions[name])
                timesteps.append(zero_t)
            else:
                assert others_noise is not None  # one of `rest`, checked above
                noise = others_noise(call, name)
                if tuple(noise.shape) != (batch, *shapes[name]):
                    raise ValueError(f"others_noise({call}, {name!r}) has shape {tuple(noise.shape)}, "
                                     f"expected {(batch, *shapes[name])}")
                if not bool(torch.isfinite(noise).all()):
                    raise ValueError(f"others_noise({call}, {name!r}) returned NaN or infinite values")
                latents.append(noise)
                timesteps.append(rest_t)
        out = eps_model(latents, timesteps)
        return torch.cat([out[i].reshape(batch, -1).float() for i in gen_index], dim=1)

    x = torch.cat([x_init[n].reshape(batch, -1).float() for n in generate], dim=1)
    region = _known_region(spec, generate, known, known_noise, batch, device) if known else None
    final = run_program(program.to(device), x, eps_fn, region)
    return {n: c.reshape(batch, *shapes[n]) for n, c in zip(generate, final.split(sizes, dim=1), strict=True)}


def _known_region(spec: ModelSpec, generate: Sequence[str], known: Mapping[str, tuple[Tensor, Tensor]],
                  known_noise: KnownNoise | None, batch: int, device: torch.device) -> KnownLatent:
    """Flatten per-modality known latents and cell masks into the solver's (E, D) layout."""
    extra = set(known) - set(generate)
    if extra:
        raise ValueError(f"known region for {', '.join(sorted(extra))}, which is not generated")
    if known_noise is None:
        raise ValueError("known_noise is needed with a known region")
    latents, masks = [], []
    for name in generate:
        shape = spec.modality(name).latent_shape
        if name not in known:
            latents.append(torch.zeros(batch, shape[0] * shape[1] * shape[2], device=device))
            masks.append(torch.zeros(batch, shape[0] * shape[1] * shape[2], dtype=torch.bool, device=device))
            continue
        latent, cells = known[name]
        if tuple(latent.shape) != (batch, *shape) or tuple(cells.shape) != (batch, *shape[1:]):
            raise ValueError(f"known {name}: expected latent {(batch, *shape)} and cells "
                             f"{(batch, *shape[1:])}, got {tuple(latent.shape)} and {tuple(cells.shape)}")
        latents.append(latent.to(device).float().reshape(batch, -1))
        masks.append(cells.to(device).bool().unsqueeze(1).expand(batch, *shape).reshape(batch, -1))
    return KnownLatent(torch.cat(latents, dim=1), torch.cat(masks, dim=1), known_noise)
