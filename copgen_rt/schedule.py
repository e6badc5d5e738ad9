"""The discrete Stable-Diffusion noise schedule seen through the continuous VP wrapper.

Knots t_k = k / N carry log alpha_k = 0.5 * cumsum(log(1 - beta))_k, computed in float32 as the
reference does; between knots log alpha is piecewise linear in t (linearly extrapolated outside).
Evaluation is in float64 so that solver coefficients are exact up to the knots' own rounding.
"""

from __future__ import annotations

import numpy as np

from copgen_rt.specs import ScheduleSpec


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation over increasing knots, extrapolating with the end segments."""
    idx = np.clip(np.searchsorted(xp, x), 1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


DEFAULT_SCHEDULE = ScheduleSpec()


class NoiseSchedule:
    def __init__(self, spec: ScheduleSpec = DEFAULT_SCHEDULE):
        n = spec.num_timesteps
        betas = (np.linspace(spec.beta_start ** 0.5, spec.beta_end ** 0.5, n, dtype=np.float64) ** 2)
        self.betas = betas.astype(np.float32)
        log_alpha = (0.5 * np.cumsum(np.log(1.0 - self.betas, dtype=np.float32), dtype=np.float32))
        self.num_timesteps = n
        self.knots_t = (np.arange(1, n + 1, dtype=np.float64) / n)
        self.knots_log_alpha = log_alpha.astype(np.float64)

    def log_alpha(self, t) -> np.ndarray:
        return _interp(np.asarray(t, np.float64), self.knots_t, self.knots_log_alpha)

    def alpha(self, t) -> np.ndarray:
        return np.exp(self.log_alpha(t))

    def sigma(self, t) -> np.ndarray:
        return np.sqrt(1.0 - np.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t) -> np.ndarray:
        la = self.log_alpha(t)
        return la - 0.5 * np.log(1.0 - np.exp(2.0 * la))

    def inverse_lambda(self, lam) -> np.ndarray:
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * np.asarray(lam, np.float64))
        return _interp(log_alpha, self.knots_log_alpha[::-1], self.knots_t[::-1])

    def network_timestep(self, t) -> np.ndarray:
        """The network sees 1000 * t (continuous), not the DPM 'type-1' discretisation."""
        return np.asarray(t, np.float64) * self.num_timesteps
