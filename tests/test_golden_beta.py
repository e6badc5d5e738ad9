"""Every golden case of the copgen-beta-tiny fixture (reference implementation, float32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BETA, Spy, rel_err

from copgen_rt import Denoiser, Pipeline, processing
from copgen_rt.models.autoencoder import posterior_sample
from copgen_rt.models.denoiser import timestep_embedding
from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import build_program, reference_orders, time_grid
from copgen_rt.thumbnails import center_crop
from copgen_rt.weights import load_autoencoder, read_checkpoint

NET_TOL, SAMPLER_TOL, UINT8_TOL = 1e-4, 1e-3, 1
SCRIPT_CASES = ["one_to_three", "two_to_two", "uncond", "ignored"]


@pytest.fixture()
def beta_spy(beta_pipeline):
    original = beta_pipeline.denoiser
    beta_pipeline.denoiser = Spy(original)
    yield beta_pipeline.denoiser
    beta_pipeline.denoiser = original


@pytest.fixture(scope="module")
def vae(beta_spec):
    ckpt = read_checkpoint(BETA / "vae.safetensors")
    assert ckpt.state_dict["encoder.conv_in.weight"].dtype == torch.float16  # computed in fp32 anyway
    return load_autoencoder(beta_spec, "dem", ckpt)


# --- networks, schedule, pixels -----------------------------------------------------------------


def test_denoiser_forward(beta_spec, beta_golden):
    model = Denoiser(beta_spec)
    model.load_state_dict(read_checkpoint(BETA / "denoiser.safetensors").state_dict, strict=True)
    assert beta_spec.num_tokens == 1028
    with torch.no_grad():
        out = model([beta_golden[f"denoiser/in/{n}"] for n in beta_spec.names],
                    [beta_golden[f"denoiser/t/{n}"] for n in beta_spec.names])
    for name, o in zip(beta_spec.names, out, strict=True):
        ref = beta_golden[f"denoiser/out/{name}"]
        assert o.shape == ref.shape
        assert rel_err(o, ref) < NET_TOL, name


def test_time_embedding_at_zero():
    half = 512
    expected = torch.cat([torch.ones(half), torch.zeros(half)])
    assert torch.equal(timestep_embedding(torch.zeros(1), 2 * half)[0], expected)


def test_vae_moments_posterior_and_decode(vae, beta_golden):
    with torch.no_grad():
        moments = vae.encode_moments(beta_golden["pre/out"])
        assert rel_err(moments, beta_golden["vae/moments"]) < NET_TOL
        decoded = vae.decode(beta_golden["vae/z"])
    assert rel_err(decoded, beta_golden["vae/decoded"]) < NET_TOL
    assert beta_golden["vae/moments"][:, 4].max() < -30  # the log-variance clamp is exercised
    z = vae.sample(beta_golden["vae/moments"], beta_golden["vae/eps"])
    assert rel_err(z, beta_golden["vae/z"]) < NET_TOL


def test_one_vae_serves_all_modalities(beta_pipeline, beta_spec):
    assert all(beta_pipeline.vae(n) is beta_pipeline.vae("dem") for n in beta_spec.names)


def test_schedule(beta_spec, beta_golden, beta_json):
    s = NoiseSchedule(beta_spec.schedule)
    assert rel_err(torch.from_numpy(s.betas), beta_golden["schedule/betas"]) < NET_TOL
    t = beta_golden["schedule/t"].double().numpy()
    for key, fn in [("log_alpha", s.log_alpha), ("sigma", s.sigma), ("lambda", s.lambda_)]:
        assert rel_err(torch.from_numpy(fn(t)), beta_golden[f"schedule/{key}"]) < NET_TOL, key
    inv = s.inverse_lambda(beta_golden["schedule/lambda"].double().numpy())
    assert rel_err(torch.from_numpy(inv), beta_golden["schedule/inverse_lambda"]) < NET_TOL
    for steps, orders in beta_json["solver"]["orders_by_steps"].items():
        steps = int(steps)
        grid = time_grid(s, steps, "time_uniform")
        assert rel_err(torch.from_numpy(grid), beta_golden[f"schedule/grid/{steps}"]) < NET_TOL
        assert reference_orders(steps) == orders
        assert build_program(s, "reference", steps).num_calls == steps


def test_pre(beta_spec, beta_golden, beta_json):
    m = beta_spec.modality("dem")
    for i, size in enumerate(beta_json["pre"]["sizes"]):
        image = beta_golden[f"pre/in/{i}"].numpy()
        assert list(image.shape[:2]) == size
        crop = center_crop(image)
        if i == 0:  # 259 x 261: offsets round(1.5) = round(2.5) = 2 (half to even)
            assert np.array_equal(crop, image[2:258, 2:258])
        x = processing.preprocess(m, crop)
        assert rel_err(x, beta_golden["pre/out"][i]) < 1e-6
        assert torch.equal(processing.postprocess(m, x), torch.from_numpy(crop))  # exact round trip


def _check_uint8(image: torch.Tensor, ref: torch.Tensor) -> None:
    assert image.dtype == torch.uint8 and image.shape == ref.shape
    assert int((image.int() - ref.int()).abs().max()) <= UINT8_TOL


def test_post(beta_spec, beta_golden):
    _check_uint8(processing.postprocess(beta_spec.modality("dem"), beta_golden["vae/decoded"]),
                 beta_golden["post/uint8"])


# --- sampler cases ------------------------------------------------------------------------------


def _x_init(case: str, c: dict, golden: dict) -> dict[str, torch.Tensor]:
    return {n: golden[f"{case}/x_init/{n}"] for n in c["generate"]}


def _check_outputs(case: str, c: dict, golden: dict, out: dict[str, torch.Tensor]) -> None:
    assert sorted(out) == sorted(c["generate"])
    for name in c["generate"]:
        assert rel_err(out[name], golden[f"{case}/out/{name}"]) < SAMPLER_TOL, name


def _check_calls(spec, case: str, c: dict, golden: dict, calls: list,
                 cond: dict[str, torch.Tensor], cond_tol: float) -> None:
    """Timesteps and slots of every network call: generated at t_gen, all others at exactly 0."""
    t_gen = golden[f"{case}/t_gen"]
    assert len(calls) == c["nfe"] == t_gen.shape[0]
    for call, (latents, timesteps) in enumerate(calls):
        for i, name in enumerate(spec.names):
            if name in c["generate"]:
                assert rel_err(timesteps[i], t_gen[call]) < NET_TOL, (call, name)
                continue
            assert torch.equal(timesteps[i], torch.zeros(c["effective_batch"])), (call, name)
            if name in c["condition"]:
                assert rel_err(latents[i], cond[name]) <= cond_tol, (call, name)
            else:
                assert torch.equal(latents[i], golden[f"{case}/ignored_noise/{call}/{name}"])


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_script_cases_from_condition_latents(beta_pipeline, beta_spy, beta_spec, beta_json,
                                             beta_golden, case):
    c = beta_json["cases"][case]
    cond_z = {n: beta_golden[f"{case}/cond_z/{n}"] for n in c["condition"]}
    drawn = []

    def ignored_noise(call: int, name: str) -> torch.Tensor:
        drawn.append((call, name))
        return beta_golden[f"{case}/ignored_noise/{call}/{name}"]

    # cond_z already holds one row per sample copy (effective batch), so n_samples stays 1 here
    out = beta_pipeline.generate(c["generate"], cond_z, conditions_are_latents=True, steps=c["steps"],
                                 batch_size=c["effective_batch"],
                                 initial_noise=_x_init(case, c, beta_golden),
                                 others_noise=ignored_noise if c["ignored"] else None, decode=False)
    _check_outputs(case, c, beta_golden, out)
    _check_calls(beta_spec, case, c, beta_golden, beta_spy.calls, cond_z, cond_tol=0.0)
    # ignored slots are re-drawn at every network call, once per ignored modality
    assert drawn == [(call, n) for call in range(c["nfe"]) for n in c["ignored"]]
    if c["store_png"]:  # the PNG the reference wrote: decode -> unpreprocess -> save_image
        for name, png in beta_pipeline.decode(out).items():
            _check_uint8(png, beta_golden[f"{case}/png/{name}"])


@pytest.mark.parametrize("case", ["one_to_three", "two_to_two", "ignored"])
def test_condition_latents_are_per_copy_posterior_samples(beta_spec, beta_json, beta_golden, case):
    c = beta_json["cases"][case]
    scale = beta_spec.vae_for("dem").scale_factor
    for name in c["condition"]:
        moments = beta_golden[f"{case}/cond_moments/{name}"].repeat_interleave(c["n_samples"], dim=0)
        z = posterior_sample(moments, beta_golden[f"{case}/posterior_eps/{name}"], scale)
        assert rel_err(z, beta_golden[f"{case}/cond_z/{name}"]) < 1e-6, name


class _RecordedEncoder:
    """VAE backend whose encoder returns the fixture's moments for known inputs (the LMDB path)."""

    name = "recorded"

    def __init__(self, table: list[tuple[torch.Tensor, torch.Tensor]]):
        self.table = table

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        return next(moments for known, moments in self.table if torch.equal(known, x))


def test_two_to_two_n_samples_draw_one_posterior_sample_per_copy(beta_pipeline, beta_spec, beta_json,
                                                                  beta_golden):
    case, c = "two_to_two", beta_json["cases"]["two_to_two"]
    assert c["batch"] == 1 and c["n_samples"] == 2
    # distinct stand-in images, one per condition; the encoder maps them to the recorded moments
    images = {n: torch.full((1, 256, 256, 3), 255 * i, dtype=torch.uint8)
              for i, n in enumerate(c["condition"])}
    table = [(processing.preprocess(beta_spec.modality(n), images[n]),
              beta_golden[f"{case}/cond_moments/{n}"]) for n in c["condition"]]
    spy = Spy(beta_pipeline.denoiser)
    pipe = Pipeline(beta_spec, spy, vae_loader=lambda m: _RecordedEncoder(table))
    eps = {n: beta_golden[f"{case}/posterior_eps/{n}"] for n in c["condition"]}
    out = pipe.generate(c["generate"], images, n_samples=c["n_samples"], steps=c["steps"],
                        posterior_noise=eps, initial_noise=_x_init(case, c, beta_golden), decode=False)
    _check_outputs(case, c, beta_golden, out)
    cond_z = {n: beta_golden[f"{case}/cond_z/{n}"] for n in c["condition"]}
    _check_calls(beta_spec, case, c, beta_golden, spy.calls, cond_z, cond_tol=1e-6)
    for name in c["condition"]:
        assert not torch.equal(cond_z[name][0], cond_z[name][1])  # the copies differ


def test_n_samples_copies_get_their_own_posterior_sample(beta_pipeline, beta_spy, beta_golden):
    image = beta_golden["notebook/cond_image/dem"]
    beta_pipeline.generate(["s2_l1c"], {"dem": image}, n_samples=2, steps=1, seed=0, decode=False)
    dem = beta_spy.calls[0][0][0]
    assert dem.shape[0] == 2 and not torch.equal(dem[0], dem[1])  # COP-GEN would share one sample


def _replay_draws(c: dict) -> dict[str, torch.Tensor]:
    """The notebook's draws from its seed: torch.manual_seed(seed), then the listed draws in order."""
    gen = torch.Generator().manual_seed(c["seed"])
    draws = [(d["stored"], torch.randn(d["shape"], generator=gen)) for d in c["draws"]]
    return {key: x for key, x in draws if key}


def test_notebook_from_pixels(beta_pipeline, beta_spy, beta_spec, beta_json, beta_golden):
    case, c = "notebook", beta_json["cases"]["notebook"]
    assert c["draws_reproducible_from_seed_on_cpu"]
    draws = _replay_draws(c)
    for name in c["condition"]:
        key = f"{case}/posterior_eps/{name}"
        assert torch.equal(draws[key], beta_golden[key])
    x_init = dict(zip(c["generate"], draws[f"{case}/x_init"], strict=True))
    for name, x in x_init.items():
        assert torch.equal(x, beta_golden[f"{case}/x_init/{name}"])

    image = beta_golden[f"{case}/cond_image/dem"]
    with torch.no_grad():
        moments = beta_pipeline.vae("dem").encode_moments(
            processing.preprocess(beta_spec.modality("dem"), image)[None])
    assert rel_err(moments, beta_golden[f"{case}/cond_moments/dem"]) < NET_TOL
    # The runtime seeds every sample from its own generator (sampler.row_seeds), so seed=69 cannot
    # reproduce the notebook's single torch.manual_seed stream: the replayed draws are injected.
    eps = draws[f"{case}/posterior_eps/dem"]
    out = beta_pipeline.generate(c["generate"], {"dem": image}, steps=c["steps"],
                                 posterior_noise={"dem": eps}, initial_noise=x_init, decode=False)
    _check_outputs(case, c, beta_golden, out)
    cond_z = {"dem": posterior_sample(beta_golden[f"{case}/cond_moments/dem"], eps,
                                      beta_spec.vae_for("dem").scale_factor)}
    _check_calls(beta_spec, case, c, beta_golden, beta_spy.calls, cond_z, cond_tol=NET_TOL)
