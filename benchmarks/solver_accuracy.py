"""Solver accuracy against the exact probability-flow ODE solution (no network involved).

With Gaussian data x0 ~ N(mu, s^2) per coordinate, the ideal noise predictor is
eps(x, t) = sigma_t (x - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2), and the ODE keeps
(x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) constant, so every solver's end point can be
compared with the exact one. Data variances are spread log-uniformly over [0.01, 4] (latents of
sharp and smooth content). Writes benchmarks/results/solver_accuracy.{json,md}.

    python benchmarks/solver_accuracy.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import PRESETS, SOLVERS, build_program, run_program

STEPS = (5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
RESULTS = Path(__file__).parent / "results"


def gaussian_problem(schedule: NoiseSchedule, dims: int = 4096, rows: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    var = torch.exp(torch.empty(dims, dtype=torch.float64).uniform_(np.log(0.01), np.log(4.0), generator=g))
    mu = 0.5 * torch.randn(dims, dtype=torch.float64, generator=g)
    x1 = torch.randn(rows, dims, dtype=torch.float64, generator=g)

    def eps(x, t_net, call):
        t = float(t_net) / schedule.num_timesteps
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        return s * (x - a * mu) / (a * a * var + s * s)

    def at(t):
        return float(schedule.alpha(t)), float(schedule.sigma(t))

    (a1, s1), (a0, s0) = at(1.0), at(1e-3)
    exact = a0 * mu + (x1 - a1 * mu) * torch.sqrt((a0 * a0 * var + s0 * s0) / (a1 * a1 * var + s1 * s1))
    return x1, eps, exact


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt() / (b ** 2).mean().sqrt())


def main() -> None:
    schedule = NoiseSchedule()
    x1, eps, exact = gaussian_problem(schedule)
    table = {}
    for solver in SOLVERS:
        table[solver] = {}
        for steps in STEPS:
            program = build_program(schedule, solver, steps)
            out = run_program(program, x1, eps)
            table[solver][steps] = {"error": rel_rms(out, exact), "network_calls": program.num_calls}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "solver_accuracy.json").write_text(json.dumps({"problem": "gaussian, var log-uniform "
                                                             "[0.01, 4], 4096 dims x 8 rows",
                                                             "presets": PRESETS, "errors": table}, indent=1))
    lines = ["| solver | " + " | ".join(str(s) for s in STEPS) + " |",
             "|---|" + "---|" * len(STEPS)]
    for solver, row in table.items():
        lines.append(f"| {solver} | " + " | ".join(f"{row[s]['error']:.1e}" for s in STEPS) + " |")
    text = ("Relative RMS error of the end point vs the exact ODE solution (network calls = steps)\n\n"
            + "\n".join(lines) + "\n")
    (RESULTS / "solver_accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
