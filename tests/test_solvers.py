from __future__ import annotations

import pytest
import torch

from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import build_program, reference_orders, run_program


@pytest.mark.parametrize("steps,orders", [(50, [3] * 16 + [2]), (10, [3, 3, 3, 1]), (7, [3, 3, 1]),
                                          (6, [3, 2, 1]), (5, [3, 2]), (2, [2]), (1, [1])])
def test_reference_orders_and_nfe(steps, orders):
    assert reference_orders(steps) == orders
    program = build_program(NoiseSchedule(), "reference", steps)
    assert program.num_calls == steps == sum(orders)


def test_schedule_values():
    s = NoiseSchedule()
    assert s.alpha(1.0) == pytest.approx(0.068265, abs=2e-6)
    assert s.alpha(0.001) == pytest.approx(0.999575, abs=2e-6)
    assert s.sigma(0.5) == pytest.approx(0.849900, abs=2e-6)
    assert s.lambda_(1.0) == pytest.approx(-2.68202, abs=2e-5)
    p = build_program(s, "reference", 50)
    t = p.times.numpy()
    assert t[0] == 1.0 and t[1] == pytest.approx(0.98002, abs=1e-6) and t[49] == pytest.approx(0.02098)
    assert torch.allclose(p.net_timesteps, torch.from_numpy(t * 1000).float())


def _gaussian_eps(mu: float, s: NoiseSchedule):
    """Exact noise predictor when the data are N(mu, 1): eps = sigma (x - alpha mu)."""

    def eps(x, t_net, call):
        t = float(t_net) / 1000.0
        return float(s.sigma(t)) * (x - float(s.alpha(t)) * mu)

    return eps


@pytest.mark.parametrize("solver,steps,tol", [("reference", 50, 1e-2), ("dpmpp-2m", 20, 1e-2),
                                              ("ddim", 100, 3e-2)])
def test_solvers_follow_the_exact_ode(solver, steps, tol):
    """With N(mu, 1) data, x_t - alpha_t mu is constant along the probability-flow ODE."""
    s, mu = NoiseSchedule(), 0.7
    x1 = torch.randn(8, 64, dtype=torch.float64)
    exact = float(s.alpha(1e-3)) * mu + (x1 - float(s.alpha(1.0)) * mu)
    errors = [rel_err64(run_program(build_program(s, solver, n), x1, _gaussian_eps(mu, s)), exact)
              for n in (steps // 4, steps // 2, steps)]
    assert errors[-1] < tol
    assert errors[0] > errors[1] > errors[2]  # converges


def rel_err64(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_unknown_solver_and_steps():
    with pytest.raises(ValueError, match="unknown solver"):
        build_program(NoiseSchedule(), "euler", 10)
    with pytest.raises(ValueError, match="steps"):
        build_program(NoiseSchedule(), "reference", 0)
