"""Gap filling in latent space: RePaint replacement in the solver program and `known=` in generate."""

from __future__ import annotations

import pytest
import torch

from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import KnownLatent, build_program, run_program

DEM = "DEM_DEM"
S1 = "S1RTC_vh_vv"


def _dem(batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 64, 64, generator=g) * 800 + 5  # metres


def _cloud(batch: int = 1) -> torch.Tensor:
    """Valid mask (True = valid) with a hole covering latent cells rows 2-4, columns 1-5."""
    valid = torch.ones(batch, 64, 64, dtype=torch.bool)
    valid[:, 16:40, 8:48] = False
    return valid


# --- solver level ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver,jumps", [("reference", 0), ("dpmpp-3m", 0), ("ddim", 2), ("reference", 1)])
def test_every_network_input_carries_the_noised_known_latent(solver, jumps):
    s = NoiseSchedule()
    program = build_program(s, solver, 7, jumps=jumps)
    x0 = torch.randn(2, 32)
    mask = torch.rand(2, 32) < 0.5
    noises = [torch.randn(2, 32) for _ in range(program.num_calls)]
    seen = []

    def eps(u, t_net, call):
        seen.append((call, u.clone(), float(t_net)))
        return 0.3 * u

    out = run_program(program, torch.randn(2, 32), eps, KnownLatent(x0, mask, lambda n: noises[n]))
    assert len(seen) == program.num_calls
    for call, u, t_net in seen:
        t = t_net / 1000.0
        expected = float(s.alpha(t)) * x0 + float(s.sigma(t)) * noises[call]
        assert torch.allclose(u[mask], expected[mask], atol=1e-5)
    assert torch.equal(out[mask], x0[mask])
    assert not torch.allclose(out[~mask], x0[~mask], atol=1e-2)


def test_jump_programs_repeat_blocks_and_renoise_with_the_forward_kernel():
    s = NoiseSchedule()
    plain = build_program(s, "ddim", 6)
    jumped = build_program(s, "ddim", 6, jumps=2, jump_length=3)
    assert plain.num_calls == 6 and jumped.num_calls == 18
    assert torch.equal(plain.renoise_coefs, torch.tensor([[1.0, 0.0]] * 6))
    # block [0, 1, 2] three times, then block [3, 4, 5] three times
    assert torch.allclose(jumped.times, torch.cat([plain.times[:3]] * 3 + [plain.times[3:]] * 3))
    grid_end = float(plain.times[3])  # time after the first block
    ratio = float(s.alpha(float(plain.times[0])) / s.alpha(grid_end))
    noise = (float(s.sigma(float(plain.times[0]))) ** 2 - ratio ** 2 * float(s.sigma(grid_end)) ** 2) ** 0.5
    assert torch.allclose(jumped.renoise_coefs[3], torch.tensor([ratio, noise]))
    assert torch.equal(jumped.renoise_coefs[1], torch.tensor([1.0, 0.0]))


def test_bad_jump_settings():
    s = NoiseSchedule()
    with pytest.raises(ValueError, match="singlestep solver"):
        build_program(s, "dpmpp-2m", 10, jumps=1)
    with pytest.raises(ValueError, match="jumps must be a whole number >= 0"):
        build_program(s, "ddim", 10, jumps=-1)
    with pytest.raises(ValueError, match="jump_length must be a whole number >= 1"):
        build_program(s, "ddim", 10, jumps=1, jump_length=0)


# --- pipeline level --------------------------------------------------------------------------


def test_known_latent_cells_come_back_exactly_and_the_rest_is_generated(tiny_pipeline, spy):
    g = torch.Generator().manual_seed(3)
    given = torch.randn(2, 8, 8, 8, generator=g)
    cells = torch.zeros(2, 8, 8, dtype=torch.bool)
    cells[:, :, :4] = True
    cells[1, 0, 7] = True
    out = tiny_pipeline.generate([DEM], {S1: torch.randn(2, 8, 24, 24, generator=g)},
                                 conditions_are_latents=True, known={DEM: (given, cells)}, steps=3, seed=5,
                                 decode=False)[DEM]
    where = cells.unsqueeze(1).expand_as(given)
    assert torch.equal(out[where], given[where])
    assert (out[~where] - given[~where]).abs().mean() > 0.3
    assert len(spy.calls) == 3
    t = float(spy.calls[-1][1][1][0]) / 1000.0
    last_input = spy.calls[-1][0][1]  # the network input of DEM at the last call
    schedule = tiny_pipeline.schedule
    noise = (last_input - float(schedule.alpha(t)) * given)[where] / float(schedule.sigma(t))
    assert abs(float(noise.mean())) < 0.15 and abs(float(noise.std()) - 1.0) < 0.15  # the noised known latent


def test_known_pixels_are_encoded_once_and_held_in_latent_space(tiny_pipeline):
    dem, valid = _dem(), _cloud()
    dem[~valid.unsqueeze(1)] = float("nan")  # nodata inside the gap is allowed
    cache = tiny_pipeline._moments
    misses = cache.misses
    runs = [tiny_pipeline.generate([DEM], known={DEM: (dem, valid)}, n_samples=2, steps=2, seed=s,
                                   decode=False)[DEM] for s in (1, 1, 2)]
    assert cache.misses == misses + 1  # the known region's moments are cached like conditions'
    assert torch.equal(runs[0], runs[1])
    known_cells = torch.ones(8, 8, dtype=torch.bool)
    known_cells[2:5, 1:6] = False
    z = runs[2]
    # the two copies share one posterior sample of the known region, and differ in the gap
    assert torch.equal(z[0][:, known_cells], z[1][:, known_cells])
    assert not torch.allclose(z[0][:, ~known_cells], z[1][:, ~known_cells], atol=1e-3)
    filled = dem.clone()
    filled[~valid.unsqueeze(1)] = dem[valid.unsqueeze(1)].mean()
    from copgen_rt import processing

    model_space = processing.preprocess(tiny_pipeline.spec.modality(DEM), filled)
    moments = tiny_pipeline.vae(DEM).encode_moments(model_space)
    mean, std = moments[0, :8], torch.exp(0.5 * moments[0, 8:].clamp(-30, 20))
    scale = tiny_pipeline.spec.vae_for(DEM).scale_factor
    assert ((z[0] / scale - mean)[:, known_cells].abs() <= 6 * std[:, known_cells] + 1e-5).all()


def test_all_valid_returns_the_input_without_generation(tiny_pipeline, spy):
    dem = _dem(2)
    # one (H, W) 0/1 mask for both rows
    out = tiny_pipeline.generate([DEM], {S1: torch.rand(2, 2, 192, 192)},
                                 known={DEM: (dem, torch.ones(64, 64))}, n_samples=2, steps=3, seed=1)
    assert spy.calls == []
    assert torch.equal(out[DEM], dem.repeat_interleave(2, dim=0))


def test_all_masked_equals_plain_generation_with_the_same_seed(tiny_pipeline):
    s1 = torch.rand(1, 2, 192, 192) * 0.3 + 0.01
    plain = tiny_pipeline.generate([DEM], {S1: s1}, steps=3, seed=7, decode=False)[DEM]
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[0, 0, :7] = True  # some valid pixels, but no fully valid 8x8 cell
    masked = tiny_pipeline.generate([DEM], {S1: s1}, known={DEM: (_dem(), valid)}, steps=3, seed=7, jumps=2,
                                    decode=False)[DEM]
    assert torch.equal(plain, masked)


def test_jumps_keep_the_known_cells(tiny_pipeline, spy):
    out = tiny_pipeline.generate([DEM], known={DEM: (_dem(), _cloud())}, solver="ddim", steps=3, jumps=1,
                                 seed=2, decode=False)[DEM]
    assert len(spy.calls) == 6
    again = tiny_pipeline.generate([DEM], known={DEM: (_dem(), _cloud())}, solver="ddim", steps=3, seed=2,
                                   decode=False)[DEM]
    cells = torch.ones(8, 8, dtype=torch.bool)
    cells[2:5, 1:6] = False
    assert torch.equal(out[0][:, cells], again[0][:, cells])


def test_bad_known_requests(tiny_pipeline):
    gen = tiny_pipeline.generate
    dem, valid = _dem(), _cloud()
    cases = [
        (dict(generate=["LULC_LULC"], known={DEM: (dem, valid)}),
         "known values for DEM_DEM, which is not generated"),
        (dict(generate=["mean_timestamps"], known={"mean_timestamps": (torch.zeros(1, 3), torch.ones(1))}),
         "only image modalities can be partly known"),
        (dict(generate=[DEM], known={DEM: dem}), r"expected a pair \(values, valid_mask\)"),
        (dict(generate=[DEM], known={DEM: (dem[:, :, :32], valid)}), r"expected values \(B, 1, 64, 64\)"),
        (dict(generate=[DEM], known={DEM: (dem, valid[:, :32])}), r"valid mask of shape \(1, 64, 64\)"),
        (dict(generate=[DEM], known={DEM: (dem, valid * 2)}), "boolean or 0/1"),
        (dict(generate=[DEM], known={DEM: (dem, "clouds")}), "the valid mask must be an array, got str"),
        (dict(generate=[DEM], known={DEM: ("dem", valid)}), "expected a tensor or array of numbers"),
        (dict(generate=[DEM], known={DEM: (torch.full((1, 1, 64, 64), float("nan")), valid)}),
         "NaN or infinite values at valid pixels"),
        (dict(generate=[DEM], jumps=1), "resampling jumps need a known region"),
        (dict(generate=[DEM], known={DEM: (dem, valid)}, solver="dpmpp-3m", jumps=1), "singlestep solver"),
        (dict(generate=[DEM], known={DEM: (dem, valid)}, batch_size=2),
         "batch_size=2 but conditions have batch 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            gen(steps=1, seed=0, **kwargs)
