"""Every golden case of the copgen-tiny fixture (reference implementation, float32, CPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, rel_err

from copgen_rt import Autoencoder, Denoiser, processing
from copgen_rt.schedule import NoiseSchedule
from copgen_rt.weights import load_autoencoder, read_checkpoint

NET_TOL, SAMPLER_TOL = 1e-4, 1e-3


def test_denoiser_forward(tiny_spec, golden):
    model = Denoiser(tiny_spec)
    model.load_state_dict(read_checkpoint(TINY / "denoiser.safetensors").state_dict, strict=True)
    with torch.no_grad():
        out = model([golden[f"denoiser/in/{n}"] for n in tiny_spec.names],
                    [golden[f"denoiser/t/{n}"] for n in tiny_spec.names])
    for name, o in zip(tiny_spec.names, out, strict=True):
        ref = golden[f"denoiser/out/{name}"]
        assert o.shape == ref.shape
        assert rel_err(o, ref) < NET_TOL, name


@pytest.mark.parametrize("name", ["DEM_DEM", "S1RTC_vh_vv"])
def test_vae(tiny_spec, golden, name):
    ckpt = read_checkpoint(TINY / f"vae-{name}.safetensors")
    assert ckpt.state_dict["encoder.conv_in.weight"].dtype == torch.float16  # computed in fp32 anyway
    vae = load_autoencoder(tiny_spec, name, ckpt)
    assert isinstance(vae, Autoencoder)
    with torch.no_grad():
        moments = vae.encode_moments(golden[f"vae/{name}/x"])
        assert rel_err(moments, golden[f"vae/{name}/moments"]) < NET_TOL
        decoded = vae.decode(golden[f"vae/{name}/z"])
    assert rel_err(decoded, golden[f"vae/{name}/decoded"]) < NET_TOL
    # posterior sample: scale * (mean + exp(0.5 clamp(logvar, -30, 20)) * eps)
    moments = golden[f"vae/{name}/moments"].clone()
    moments[:, -1] = -40.0  # below the clamp
    eps = torch.randn(moments.shape[0], moments.shape[1] // 2, *moments.shape[2:])
    mean, logvar = moments.chunk(2, dim=1)
    expected = vae.scale_factor * (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps)
    assert rel_err(vae.sample(moments, eps), expected) < 1e-6


def test_schedule(golden):
    s = NoiseSchedule()
    t = golden["schedule/t"].double().numpy()
    for key, fn in [("log_alpha", s.log_alpha), ("sigma", s.sigma), ("lambda", s.lambda_)]:
        assert rel_err(torch.from_numpy(fn(t)), golden[f"schedule/{key}"]) < NET_TOL, key
    inv = s.inverse_lambda(golden["schedule/lambda"].double().numpy())
    assert rel_err(torch.from_numpy(inv), golden["schedule/inverse_lambda"]) < NET_TOL


@pytest.mark.parametrize("case", ["translate", "full", "others"])
def test_sampler_cases(tiny_pipeline, tiny_json, golden, case):
    c = tiny_json["cases"][case]
    calls = []

    def others_noise(call, name):
        calls.append(call)
        return golden[f"{case}/others_noise/{call}/{name}"]

    out = tiny_pipeline.generate(
        c["generate"], {n: golden[f"{case}/cond/{n}"] for n in c["condition"]},
        conditions_are_latents=True, steps=c["steps"], batch_size=c["batch"],
        initial_noise={n: golden[f"{case}/x_init/{n}"] for n in c["generate"]},
        others_noise=others_noise if c["others"] else None, decode=False)
    assert sorted(out) == sorted(c["generate"])
    for name in c["generate"]:
        assert rel_err(out[name], golden[f"{case}/out/{name}"]) < SAMPLER_TOL, name
    if c["others"]:
        # the others are re-drawn at every network call: one draw per call per other modality
        assert sorted(set(calls)) == list(range(c["steps"]))
        assert len(calls) == c["steps"] * len(c["others"])


@pytest.mark.parametrize("name", ["DEM_DEM", "LULC_LULC", "S1RTC_vh_vv", "S2L1C_cloud_mask",
                                  "S2L2A_B02_B03_B04_B08"])
def test_pre_post(tiny_spec, golden, name):
    m = tiny_spec.modality(name)
    with pytest.warns(processing.UnknownClassCodeWarning) if name in ("LULC_LULC", "S2L1C_cloud_mask") \
            else _no_warning():
        pre = processing.preprocess(m, golden[f"pre/{name}/in"])
    assert pre.dtype == torch.float32
    assert rel_err(pre, golden[f"pre/{name}/out"]) < 1e-6
    post = processing.postprocess(m, golden[f"post/{name}/in"])
    ref = golden[f"post/{name}/out"]
    if ref.dtype == torch.int64:
        assert torch.equal(post, ref)
    else:
        assert rel_err(post, ref) < 1e-5


def test_latlon_and_dates(tiny_json, golden):
    for i, (lat, lon) in enumerate(tiny_json["latlon_inputs"]):
        v = processing.latlon_to_vector(golden[f"pre/latlon/{i}/in"])
        assert rel_err(v, golden[f"pre/latlon/{i}/out"]) < 1e-6
        back = processing.vector_to_latlon(v)[..., :].reshape(2)
        assert abs(float(back[0]) - lat) < 1e-3
        if abs(lat) < 89.5:
            assert abs(((float(back[1]) - lon + 180) % 360) - 180) < 1e-3
    for i, text in enumerate(tiny_json["date_inputs"]):
        v = processing.date_to_vector(text)
        assert (v - golden[f"pre/date/{i}/out"]).abs().max() < 1e-6
        day, month, year = processing.vector_to_date(v).reshape(3).tolist()
        assert f"{year:04d}-{month:02d}-{day:02d}" == text


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", processing.UnknownClassCodeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
