from __future__ import annotations

import functools

import pytest
import torch

from copgen_rt.errors import CheckpointError


def _s1(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, 192, 192, generator=g) * 0.3 + 0.01  # linear gamma0


def test_physical_units_in_and_out(tiny_pipeline):
    out = tiny_pipeline.generate(["DEM_DEM", "3d_cartesian_lat_lon", "mean_timestamps"],
                                 {"S1RTC_vh_vv": _s1(2)}, steps=3, seed=1)
    assert out["DEM_DEM"].shape == (2, 1, 64, 64) and out["DEM_DEM"].dtype == torch.float32
    assert (out["DEM_DEM"] > 0).all()  # metres, clamped at min_positive like the reference
    assert out["3d_cartesian_lat_lon"].shape == (2, 2)
    assert out["mean_timestamps"].shape == (2, 3) and out["mean_timestamps"].dtype == torch.int64


def test_per_sample_seeds_do_not_depend_on_the_batch(tiny_pipeline):
    conds = _s1(3, seed=5)
    kw = dict(steps=3, decode=False)
    batch = tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": conds}, seed=[11, 12, 13], **kw)
    alone = tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": conds[2:]}, seed=[13], **kw)
    assert torch.allclose(batch["DEM_DEM"][2:], alone["DEM_DEM"], rtol=1e-4, atol=1e-4)
    other = tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": conds[2:]}, seed=[14], **kw)
    assert not torch.allclose(other["DEM_DEM"], alone["DEM_DEM"], atol=1e-3)


def test_conditions_are_encoded_once_and_cached(tiny_pipeline):
    conds = _s1(1, seed=9)
    cache = tiny_pipeline._moments
    hits, misses = cache.hits, cache.misses
    a = tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": conds}, steps=2, seed=3, decode=False)
    assert (cache.hits, cache.misses) == (hits, misses + 1)
    b = tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": conds.clone()}, steps=2, seed=3, decode=False)
    assert (cache.hits, cache.misses) == (hits + 1, misses + 1)
    assert torch.equal(a["DEM_DEM"], b["DEM_DEM"])


def test_n_samples_share_the_condition_sample_but_not_the_noise(tiny_pipeline, spy):
    tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": _s1(2, seed=4)}, n_samples=3, steps=1, seed=0,
                           decode=False)
    latents, timesteps = spy.calls[0]
    s1, dem = latents[3], latents[1]
    assert s1.shape[0] == 6
    assert torch.equal(s1[0], s1[1]) and torch.equal(s1[1], s1[2])  # COP-GEN: one posterior sample
    assert not torch.equal(s1[2], s1[3])
    assert not torch.equal(dem[0], dem[1])  # each copy has its own initial noise
    assert torch.equal(timesteps[3], torch.zeros(6)) and torch.equal(timesteps[1], torch.full((6,), 1000.0))


@pytest.mark.parametrize("policy,t_other", [("reference", 0.0), ("marginal", 1000.0)])
def test_others_policies(tiny_pipeline, spy, policy, t_other):
    tiny_pipeline.generate(["DEM_DEM"], {"S1RTC_vh_vv": _s1(1)}, steps=2, seed=0, others=policy,
                           decode=False)
    assert len(spy.calls) == 2
    lulc = [call[0][2] for call in spy.calls]
    assert all(torch.equal(call[1][2], torch.full((1,), t_other)) for call in spy.calls)
    assert not torch.equal(lulc[0], lulc[1])  # fresh noise at every call
    assert abs(float(lulc[0].std()) - 1.0) < 0.2


def test_scalar_conditions_in_physical_units(tiny_pipeline, spy):
    tiny_pipeline.generate(["DEM_DEM"], {"3d_cartesian_lat_lon": torch.tensor([[55.95, -3.19]]),
                                         "mean_timestamps": ["2020-01-01"]}, steps=1, seed=0, decode=False)
    latents, _ = spy.calls[0]
    assert torch.allclose(latents[0].reshape(3), torch.tensor([0.559048593, -0.0311577916, 0.828549266]))
    assert torch.allclose(latents[11].reshape(3), torch.tensor([0.0171663295, 0.999852657, 0.4]))


def test_bad_requests(tiny_pipeline):
    gen = tiny_pipeline.generate
    with pytest.raises(ValueError, match="both generated and conditioned"):
        gen(["S1RTC_vh_vv"], {"S1RTC_vh_vv": _s1(1)}, steps=1)
    with pytest.raises(ValueError, match=r"expected \(B, 2, 192, 192\)"):
        gen(["DEM_DEM"], {"S1RTC_vh_vv": torch.rand(1, 3, 192, 192)}, steps=1)
    bad = _s1(1)
    bad[0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gen(["DEM_DEM"], {"S1RTC_vh_vv": bad}, steps=1)
    with pytest.raises(ValueError, match="unknown modality"):
        gen(["S3_OLCI"], steps=1)
    with pytest.raises(ValueError, match="unknown modality 'S3_OLCI'"):
        gen(["DEM_DEM"], {"S3_OLCI": _s1(1)}, steps=1)
    with pytest.raises(CheckpointError, match="no VAE checkpoint given for LULC_LULC"):
        gen(["LULC_LULC"], {"S1RTC_vh_vv": _s1(1)}, steps=1)
    with pytest.raises(ValueError, match="seed list"):
        gen(["DEM_DEM"], {"S1RTC_vh_vv": _s1(2)}, steps=1, seed=[1])
    with pytest.raises(ValueError, match="unknown others policy"):
        gen(["DEM_DEM"], steps=1, others="ignore")
    with pytest.raises(ValueError, match="different batch sizes"):
        gen(["DEM_DEM"], {"S1RTC_vh_vv": _s1(2), "3d_cartesian_lat_lon": torch.zeros(1, 2)}, steps=1)
    for steps in (0, 1.5, True):
        with pytest.raises(ValueError, match="steps must be a whole number"):
            gen(["DEM_DEM"], steps=steps)
    with pytest.raises(ValueError, match="n_samples must be a whole number"):
        gen(["DEM_DEM"], steps=1, n_samples=2.5)
    with pytest.raises(ValueError, match="batch size 0"):
        gen(["DEM_DEM"], {"S1RTC_vh_vv": _s1(0)}, steps=1)
    with pytest.raises(ValueError, match="expected a tensor or array of numbers"):
        gen(["DEM_DEM"], {"S1RTC_vh_vv": "hello"}, steps=1)
    with pytest.raises(ValueError, match="initial_noise for DEM_DEM, which is not generated"):
        gen(["LULC_LULC"], steps=1, initial_noise={"DEM_DEM": torch.zeros(1, 8, 8, 8)}, decode=False)
    with pytest.raises(ValueError, match=r"others_noise\(0, '3d_cartesian_lat_lon'\) has shape \(1, 3\)"):
        gen(["LULC_LULC"], steps=1, others_noise=lambda call, name: torch.zeros(1, 3), decode=False)


def test_unconditional_latents_without_vae(tiny_pipeline):
    out = tiny_pipeline.generate(["LULC_LULC", "mean_timestamps"], steps=2, batch_size=2, seed=0,
                                 decode=False)
    assert out["LULC_LULC"].shape == (2, 8, 24, 24) and out["mean_timestamps"].shape == (2, 1, 1, 3)


def test_unconditional_batch_comes_from_the_injected_noise(tiny_pipeline):
    """Without conditions or batch_size, injected initial noise sets the batch (its rows are
    batch x n_samples); the result equals stating that batch_size, and only real mismatches fail."""
    gen = functools.partial(tiny_pipeline.generate, steps=1, seed=0, decode=False)
    shape = tiny_pipeline.spec.modality("LULC_LULC").latent_shape
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    out = gen(["LULC_LULC", "mean_timestamps"], initial_noise={"LULC_LULC": noise})
    stated = gen(["LULC_LULC", "mean_timestamps"], initial_noise={"LULC_LULC": noise}, batch_size=2)
    assert out["LULC_LULC"].shape == (2, *shape) and out["mean_timestamps"].shape[0] == 2
    assert all(torch.equal(out[k], stated[k]) for k in out)
    per_row = gen(["LULC_LULC"], initial_noise={"LULC_LULC": noise}, n_samples=2)  # batch 1 x 2 samples
    stated = gen(["LULC_LULC"], initial_noise={"LULC_LULC": noise}, n_samples=2, batch_size=1)
    assert torch.equal(per_row["LULC_LULC"], stated["LULC_LULC"])
    with pytest.raises(ValueError,
                       match="initial_noise has 3 rows, which is not batch x n_samples for n_samples=2"):
        gen(["LULC_LULC"], initial_noise={"LULC_LULC": noise[[0, 1, 0]]}, n_samples=2)
    with pytest.raises(ValueError, match=r"initial_noise\[LULC_LULC\]: expected shape \(3, "):
        gen(["LULC_LULC"], initial_noise={"LULC_LULC": noise}, batch_size=3)
    dem = torch.zeros(1, *tiny_pipeline.spec.modality("DEM_DEM").latent_shape)
    with pytest.raises(ValueError, match="different numbers of rows: DEM_DEM 1, LULC_LULC 2"):
        gen(["DEM_DEM", "LULC_LULC"], initial_noise={"LULC_LULC": noise, "DEM_DEM": dem})
