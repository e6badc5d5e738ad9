"""DPM-Solver++ samplers compiled into a fixed program of network calls.

Every supported solver is a linear method: the input of each network call and the state after
each step are linear combinations of the step's anchor state and the last few data predictions
D = (u - sigma * eps) / alpha. A `SolverProgram` holds those coefficients as tensors computed
before the loop, so the loop itself does no host work and no host synchronisation (it can be
captured in a CUDA graph). `run_program` executes it.

Inpainting (RePaint, arXiv 2201.09865) rides on the same program: with a `KnownLatent`, every
network input has its known positions replaced by the known latent forward-noised to that call's
noise level, and resampling jumps are program entries that re-noise the state back to an earlier
grid time before a block of steps is solved again.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import SupportsFloat

import numpy as np
import torch
from torch import Tensor

from copgen_rt.schedule import NoiseSchedule

SOLVERS = ("reference", "dpmpp-2m", "dpmpp-3m", "ddim")
HISTORY = 3  # coefficients act on [anchor, D_n, D_{n-1}, D_{n-2}]

# Step counts chosen from benchmarks/solver_accuracy.py (exact Gaussian ODE): dpmpp-3m at 20
# steps is ~3x closer to the exact ODE solution than the reference sampler at 50, and at 10
# steps about as close (docs/solvers.md).
PRESETS: dict[str, tuple[str, int]] = {"exact": ("reference", 50), "fast": ("dpmpp-3m", 20),
                                       "draft": ("dpmpp-3m", 10)}


MAX_STEPS = 1000


def resolve_preset(preset: str | None, solver: str | None, steps: int | None) -> tuple[str, int]:
    """Explicit solver/steps win over the preset; with neither, the `exact` preset."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
    base_solver, base_steps = PRESETS[preset or "exact"]
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or
                              not 1 <= steps <= MAX_STEPS):
        raise ValueError(f"steps must be a whole number from 1 to {MAX_STEPS} (the schedule's timesteps), "
                         f"got {steps!r}")
    return solver or base_solver, base_steps if steps is None else int(steps)


@dataclass(frozen=True)
class SolverProgram:
    name: str
    steps: int
    orders: tuple[int, ...]
    times: Tensor  # (N,) continuous time of each network call, float64
    net_timesteps: Tensor  # (N,) network timestep (1000 t), float32
    x0_from_input: Tensor  # (N,) 1 / alpha
    x0_from_eps: Tensor  # (N,) -sigma / alpha
    anchor_coefs: Tensor  # (N, 4): anchor' = c . [anchor, D_n, D_{n-1}, D_{n-2}]
    input_coefs: Tensor  # (N, 4): next input = c . [anchor', D_n, D_{n-1}, D_{n-2}]
    input_alpha: Tensor  # (N,) alpha of each call's input time (known-region replacement)
    input_sigma: Tensor  # (N,) sigma of each call's input time
    renoise_coefs: Tensor  # (N, 2): before call n, state = c0 state + c1 z (a jump; (1, 0) elsewhere)

    @property
    def num_calls(self) -> int:
        return len(self.net_timesteps)

    def to(self, device: torch.device | str) -> SolverProgram:
        moved = {k: getattr(self, k).to(device) for k in
                 ("times", "net_timesteps", "x0_from_input", "x0_from_eps", "anchor_coefs", "input_coefs",
                  "input_alpha", "input_sigma", "renoise_coefs")}
        return SolverProgram(self.name, self.steps, self.orders, **moved)


def reference_orders(steps: int) -> list[int]:
    """The orders of DPM-Solver 'fast' with order 3 (NFE = steps)."""
    k = steps // 3 + 1
    if steps % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    if steps % 3 == 1:
        return [3] * (k - 1) + [1]
    return [3] * (k - 1) + [2]


class _Builder:
    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.times: list[float] = []
        self.anchor: list[list[float]] = []
        self.input: list[list[float]] = []
        self.renoise: list[list[float]] = []
        self.pending_renoise = (1.0, 0.0)

    def call(self, t: SupportsFloat, anchor=(1.0, 0.0, 0.0, 0.0), next_input=(1.0, 0.0, 0.0, 0.0)) -> None:
        self.times.append(float(t))
        self.anchor.append([float(c) for c in anchor])
        self.input.append([float(c) for c in next_input])
        self.renoise.append([float(c) for c in self.pending_renoise])
        self.pending_renoise = (1.0, 0.0)

    def jump(self, t_from: float, t_to: float) -> None:
        """Before the next call, re-noise the state from time t_from back to t_to > t_from:
        x_to = (alpha_to / alpha_from) x_from
               + sqrt(sigma_to^2 - (alpha_to / alpha_from)^2 sigma_from^2) z."""
        s = self.schedule
        ratio = float(s.alpha(t_to) / s.alpha(t_from))
        self.pending_renoise = (ratio, float(np.sqrt(s.sigma(t_to) ** 2 - ratio ** 2 * s.sigma(t_from) ** 2)))

    def build(self, name: str, steps: int, orders: list[int]) -> SolverProgram:
        s = self.schedule
        t = np.asarray(self.times, np.float64)
        alpha, sigma = s.alpha(t), s.sigma(t)
        return SolverProgram(
            name=name, steps=steps, orders=tuple(orders),
            times=torch.from_numpy(t),
            net_timesteps=torch.from_numpy(s.network_timestep(t)).float(),
            x0_from_input=torch.from_numpy(1.0 / alpha).float(),
            x0_from_eps=torch.from_numpy(-sigma / alpha).float(),
            anchor_coefs=torch.tensor(self.anchor, dtype=torch.float32),
            input_coefs=torch.tensor(self.input, dtype=torch.float32),
            input_alpha=torch.from_numpy(alpha).float(),
            input_sigma=torch.from_numpy(sigma).float(),
            renoise_coefs=torch.tensor(self.renoise, dtype=torch.float32),
        )


def _singlestep_step(schedule: NoiseSchedule, grid: np.ndarray, i: int, order: int, b: _Builder) -> None:
    """One DPM-Solver++ singlestep update of order 1-3 from grid[i] to grid[i + order]."""
    s_ = schedule
    s, t = grid[i], grid[i + order]
    lam_s, lam_t = s_.lambda_(s), s_.lambda_(t)
    h = lam_t - lam_s
    ratio_t = s_.sigma(t) / s_.sigma(s)
    a_t = s_.alpha(t)
    phi_1 = np.expm1(-h)
    if order == 1:
        b.call(s, anchor=(ratio_t, -a_t * phi_1, 0, 0))
    elif order == 2:
        r1 = (s_.lambda_(grid[i + 1]) - lam_s) / h
        s1 = s_.inverse_lambda(lam_s + r1 * h)
        phi_11 = np.expm1(-r1 * h)
        b.call(s, next_input=(s_.sigma(s1) / s_.sigma(s), -s_.alpha(s1) * phi_11, 0, 0))
        c = 0.5 / r1 * a_t * phi_1
        b.call(s1, anchor=(ratio_t, -c, -a_t * phi_1 + c, 0))
    else:
        r1 = (s_.lambda_(grid[i + 1]) - lam_s) / h
        r2 = (s_.lambda_(grid[i + 2]) - lam_s) / h
        s1 = s_.inverse_lambda(lam_s + r1 * h)
        s2 = s_.inverse_lambda(lam_s + r2 * h)
        phi_11, phi_12 = np.expm1(-r1 * h), np.expm1(-r2 * h)
        phi_22 = phi_12 / (r2 * h) + 1.0
        phi_2 = phi_1 / h + 1.0
        a_s1, a_s2 = s_.alpha(s1), s_.alpha(s2)
        b.call(s, next_input=(s_.sigma(s1) / s_.sigma(s), -a_s1 * phi_11, 0, 0))
        c2 = r2 / r1 * a_s2 * phi_22
        b.call(s1, next_input=(s_.sigma(s2) / s_.sigma(s), c2, -a_s2 * phi_12 - c2, 0))
        c3 = a_t * phi_2 / r2
        b.call(s2, anchor=(ratio_t, c3, 0, -a_t * phi_1 - c3))


def _singlestep(schedule: NoiseSchedule, grid: np.ndarray, orders: list[int], b: _Builder,
                jumps: int = 0, jump_length: int = 1) -> None:
    """Singlestep updates over consecutive grid points. With jumps > 0 (RePaint resampling), each
    block of `jump_length` steps is solved 1 + jumps times, re-noised back to its start in between."""
    starts = np.cumsum([0] + list(orders))
    for first in range(0, len(orders), jump_length):
        block = range(first, min(first + jump_length, len(orders)))
        for repeat in range(1 + jumps):
            if repeat:
                b.jump(grid[starts[block[-1] + 1]], grid[starts[first]])
            for k in block:
                _singlestep_step(schedule, grid, int(starts[k]), orders[k], b)


def _multistep(schedule: NoiseSchedule, grid: np.ndarray, max_order: int, b: _Builder) -> list[int]:
    """DPM-Solver++(2M/3M) data-prediction multistep updates. The order ramps up over the first
    steps (no history yet) and, below 10 steps, back down over the last ones (lower-order final)."""
    s_ = schedule
    steps = len(grid) - 1
    lam = s_.lambda_(grid)
    orders = []
    for i in range(steps):
        order = min(max_order, i + 1, steps - i) if steps < 10 else min(max_order, i + 1)
        h = lam[i + 1] - lam[i]
        a_t, ratio_t = s_.alpha(grid[i + 1]), s_.sigma(grid[i + 1]) / s_.sigma(grid[i])
        phi_1 = np.expm1(-h)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        coef = np.array([-a_t * phi_1, 0.0, 0.0])  # on [D_n, D_{n-1}, D_{n-2}]
        if order >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = np.array([1.0, -1.0, 0.0]) / r0
            if order == 2:
                coef += -0.5 * a_t * phi_1 * d1_0
            else:
                r1 = (lam[i - 1] - lam[i - 2]) / h
                d1_1 = np.array([0.0, 1.0, -1.0]) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                coef += a_t * phi_2 * d1 - a_t * phi_3 * d2
        b.call(grid[i], anchor=(ratio_t, *coef))
        orders.append(order)
    return orders


def time_grid(schedule: NoiseSchedule, steps: int, skip_type: str, t_start: float = 1.0,
              t_end: float = 1e-3) -> np.ndarray:
    if skip_type == "time_uniform":
        return np.linspace(t_start, t_end, steps + 1)
    if skip_type == "logSNR":
        lams = np.linspace(schedule.lambda_(t_start), schedule.lambda_(t_end), steps + 1)
        return schedule.inverse_lambda(lams)
    raise ValueError(f"unknown time grid {skip_type!r}")


def build_program(schedule: NoiseSchedule, solver: str = "reference", steps: int = 50, jumps: int = 0,
                  jump_length: int = 1) -> SolverProgram:
    """`reference`: DPM-Solver++ singlestep 'fast' order 3 on a uniform-t grid (the published
    sampler); `dpmpp-2m`/`dpmpp-3m`: DPM-Solver++(2M/3M) multistep on a logSNR grid; `ddim`:
    first order (= DDIM).

    `jumps`/`jump_length` add RePaint resampling jumps (only meaningful with a known region, see
    `run_program`): every block of `jump_length` solver steps is solved `1 + jumps` times. Only
    the singlestep solvers (reference, ddim) take jumps: a multistep history would go stale.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for what, value, low in (("jumps", jumps, 0), ("jump_length", jump_length, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{what} must be a whole number >= {low}, got {value!r}")
    if jumps and solver not in ("reference", "ddim"):
        raise ValueError(f"resampling jumps need a singlestep solver (reference or ddim), not {solver!r}")
    b = _Builder(schedule)
    if solver == "reference":
        orders = reference_orders(steps)
        _singlestep(schedule, time_grid(schedule, steps, "time_uniform"), orders, b, jumps, jump_length)
    elif solver in ("dpmpp-2m", "dpmpp-3m"):
        orders = _multistep(schedule, time_grid(schedule, steps, "logSNR"), int(solver[-2]), b)
    elif solver == "ddim":
        orders = [1] * steps
        _singlestep(schedule, time_grid(schedule, steps, "logSNR"), orders, b, jumps, jump_length)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    return b.build(solver, steps, orders)


EpsFn = Callable[[Tensor, Tensor, int], Tensor]  # (input state, network timestep, call index) -> eps


@dataclass(frozen=True)
class KnownLatent:
    """The known part of the generated state (inpainting), flat like the state: (B, D) each.

    latent: the clean known latent x0 (any value where mask is False); mask: bool, True = known;
    noise(call) -> (B, D) standard normal, fresh for each call: it noises the known positions
    and, at a resampling jump, re-noises the generated ones (disjoint positions of one draw).
    """

    latent: Tensor
    mask: Tensor
    noise: Callable[[int], Tensor]


def run_program(program: SolverProgram, x_init: Tensor, eps_fn: EpsFn, known: KnownLatent | None = None
                ) -> Tensor:
    """Integrate from x_init (noise at t=1) with the program; state and arithmetic in float32.

    With `known`, each call's input has its known positions replaced by
    alpha_t x0 + sigma_t z at that call's time t (RePaint replacement), and the result carries
    x0 exactly there. The state's own known positions only ever feed themselves (the updates
    act per position), so replacing the network input is enough.
    """
    anchor = x_init
    u = x_init
    zero = torch.zeros_like(x_init)
    d_prev, d_prev2 = zero, zero
    a, c = program.anchor_coefs, program.input_coefs
    for n in range(program.num_calls):
        if known is not None:
            z = known.noise(n).to(x_init.dtype)
            r = program.renoise_coefs[n]
            anchor = r[0] * anchor + r[1] * z  # at a jump's first call u == anchor (a step start)
            u = r[0] * u + r[1] * z
            u = torch.where(known.mask, program.input_alpha[n] * known.latent + program.input_sigma[n] * z, u)
        eps = eps_fn(u, program.net_timesteps[n], n).to(x_init.dtype)
        d = u * program.x0_from_input[n] + eps * program.x0_from_eps[n]
        anchor = a[n, 0] * anchor + a[n, 1] * d + a[n, 2] * d_prev + a[n, 3] * d_prev2
        u = c[n, 0] * anchor + c[n, 1] * d + c[n, 2] * d_prev + c[n, 3] * d_prev2
        d_prev, d_prev2 = d, d_prev
    if known is not None:
        anchor = torch.where(known.mask, known.latent.to(anchor.dtype), anchor)
    return anchor
