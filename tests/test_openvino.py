"""The openvino backend on the tiny fixture: golden tolerances in fp32, bf16 against fp32, the
compile cache (a second run compiles nothing), and a scene through `infer` against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, rel_err

from copgen_rt import Pipeline
from copgen_rt.device import cpu_flags

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
pytest.importorskip("onnx", reason="onnx is not installed: the openvino backend compiles the ONNX export")

from copgen_rt.backends import openvino_backend  # noqa: E402

NET_TOL, SAMPLER_TOL = 1e-4, 1e-3  # the golden fixtures' tolerances
VAES = {"DEM_DEM": TINY / "vae-DEM_DEM.safetensors", "S1RTC_vh_vv": TINY / "vae-S1RTC_vh_vv.safetensors"}
native_bf16 = pytest.mark.skipif(not {"avx512_bf16", "amx_bf16"} & cpu_flags(),
                                 reason="this CPU has no native bf16 units (AVX512-BF16/AMX)")


def _pipeline(tiny_spec, dtype: str) -> Pipeline:
    return Pipeline.from_weights(tiny_spec, TINY / "denoiser.safetensors", vaes=VAES, device="cpu",
                                 dtype=dtype, engine="openvino")


@pytest.fixture(scope="module")
def ov_fp32(tiny_spec) -> Pipeline:
    pipeline = _pipeline(tiny_spec, "fp32")
    for name in VAES:
        pipeline.vae(name)
    return pipeline


@pytest.fixture
def fresh_compile_cache(tmp_path, monkeypatch, export_cache, ov_fp32):
    """A cache with the session's ONNX exports of the fixture but nothing compiled yet."""
    import shutil

    shutil.copytree(export_cache / "onnx", tmp_path / "cache" / "onnx")
    monkeypatch.setenv("COPGEN_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _net_inputs(spec, golden):
    return ([golden[f"denoiser/in/{n}"] for n in spec.names], [golden[f"denoiser/t/{n}"] for n in spec.names])


def test_golden_network_and_vaes_through_openvino_fp32(ov_fp32, tiny_spec, golden):
    assert ov_fp32.denoiser.name == "openvino" and ov_fp32.plan.engines.vae == "openvino"
    out = ov_fp32.denoiser(*_net_inputs(tiny_spec, golden))
    for name, o in zip(tiny_spec.names, out, strict=True):
        assert rel_err(o, golden[f"denoiser/out/{name}"]) < NET_TOL, name
    for name in VAES:
        vae = ov_fp32.vae(name)
        assert vae.name == "openvino"
        assert rel_err(vae.encode_moments(golden[f"vae/{name}/x"]), golden[f"vae/{name}/moments"]) < NET_TOL
        assert rel_err(vae.decode(golden[f"vae/{name}/z"]), golden[f"vae/{name}/decoded"]) < NET_TOL


@pytest.mark.parametrize("case", ["translate", "full", "others"])
def test_golden_sampler_cases_through_openvino_fp32(ov_fp32, tiny_json, golden, case):
    c = tiny_json["cases"][case]
    out = ov_fp32.generate(
        c["generate"],
        {n: golden[f"{case}/cond/{n}"] for n in c["condition"]},
        conditions_are_latents=True,
        steps=c["steps"],
        batch_size=c["batch"],
        initial_noise={n: golden[f"{case}/x_init/{n}"] for n in c["generate"]},
        others_noise=(lambda call, name: golden[f"{case}/others_noise/{call}/{name}"])
        if c["others"]
        else None,
        decode=False,
    )
    for name in c["generate"]:
        assert rel_err(out[name], golden[f"{case}/out/{name}"]) < SAMPLER_TOL, name


@native_bf16
def test_bf16_stays_within_3e2_of_fp32_per_call(ov_fp32, tiny_spec, golden):
    ov_bf16 = _pipeline(tiny_spec, "bf16")
    assert ov_bf16.plan.dtype == "bf16"
    inputs = _net_inputs(tiny_spec, golden)
    reference, low = (torch.cat([o.flatten() for o in b.denoiser(*inputs)]) for b in (ov_fp32, ov_bf16))
    error = float((low - reference).norm() / reference.norm())  # over the whole call's output
    # 8e-3 here (torch bf16 autocast: 8e-3); the 3-value lat/lon head alone is noisier (3e-2, as torch's)
    assert 1e-4 < error < 3e-2  # and it did run in bf16: fp32 agrees to ~1e-6


def test_a_second_pipeline_compiles_nothing(fresh_compile_cache, tiny_spec, golden):
    blob_dir = fresh_compile_cache / "openvino"
    inputs = _net_inputs(tiny_spec, golden)

    def use(pipeline: Pipeline) -> list[torch.Tensor]:
        out = pipeline.denoiser(*inputs)  # static-batch precisions compile at a batch's first call
        vae = pipeline.vae("DEM_DEM")
        return [*out, vae.decode(vae.encode_moments(golden["vae/DEM_DEM/x"]).chunk(2, dim=1)[0])]

    before, hits = openvino_backend.STATS.compiles, openvino_backend.STATS.cache_hits
    first = use(_pipeline(tiny_spec, "fp32"))
    compiled = openvino_backend.STATS.compiles - before
    assert compiled == 3  # denoiser, DEM encoder, DEM decoder
    # each blob and its .source (the model it belongs to, for `copgen-rt cache`)
    blobs = sorted(p.name for p in blob_dir.iterdir() if p.suffix == ".blob")
    assert len(blobs) == 3 and openvino_backend.STATS.cache_hits == hits
    second = use(_pipeline(tiny_spec, "fp32"))
    assert openvino_backend.STATS.compiles - before == compiled  # nothing compiled again
    assert openvino_backend.STATS.cache_hits - hits == 3
    assert sorted(p.name for p in blob_dir.iterdir() if p.suffix == ".blob") == blobs
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_compile_key_separates_what_a_compiled_model_depends_on(monkeypatch):
    key = openvino_backend.compile_key("abc", "fp32", None)
    assert key == openvino_backend.compile_key("abc", "fp32", None)
    others = {
        openvino_backend.compile_key("abd", "fp32", None),
        openvino_backend.compile_key("abc", "bf16", None),
        openvino_backend.compile_key("abc", "fp32", 2),
    }
    monkeypatch.setattr(openvino_backend, "cpu_isa", lambda: ["avx2"])
    others.add(openvino_backend.compile_key("abc", "fp32", None))
    monkeypatch.undo()
    monkeypatch.setattr(openvino_backend.require_openvino(), "get_version", lambda: "2099.1")
    others.add(openvino_backend.compile_key("abc", "fp32", None))
    assert key not in others and len(others) == 5


def test_a_broken_cached_blob_is_compiled_again(fresh_compile_cache, tiny_spec, golden):
    reference = _pipeline(tiny_spec, "fp32").denoiser(*_net_inputs(tiny_spec, golden))
    for blob in (fresh_compile_cache / "openvino").iterdir():
        blob.write_bytes(b"not a compiled model")
    before = openvino_backend.STATS.compiles
    again = _pipeline(tiny_spec, "fp32").denoiser(*_net_inputs(tiny_spec, golden))
    assert openvino_backend.STATS.compiles - before == 1
    assert all(torch.equal(a, b) for a, b in zip(again, reference, strict=True))


def test_infer_scene_openvino_fp32_matches_torch_and_reruns_compile_nothing(tmp_path, fresh_compile_cache):
    import rasterio
    from click.testing import CliRunner

    from copgen_rt.cli import main
    from copgen_rt.scenes.synthetic import write_raster

    rng = np.random.default_rng(0)
    s1 = write_raster(
        tmp_path / "s1.tif",
        (rng.random((2, 192, 200)) * 0.3 + 0.01).astype(np.float32),
        descriptions=["VV", "VH"],
    )
    common = [
        str(s1),
        "--spec-json",
        str(TINY / "spec.json"),
        "--weights",
        str(TINY),
        "--generate",
        "DEM_DEM",
        "--steps",
        "1",
        "--dtype",
        "fp32",
        "-q",
    ]
    runs = {}
    for name, backend in [("openvino", "openvino"), ("torch", "torch"), ("again", "openvino")]:
        before = openvino_backend.STATS.compiles
        r = CliRunner().invoke(main, ["infer", *common, "--backend", backend, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        runs[name] = openvino_backend.STATS.compiles - before
    assert runs["openvino"] > 0 and runs["again"] == 0
    out = {}
    for name in ("openvino", "torch", "again"):
        with rasterio.open(tmp_path / name / "s1_DEM_DEM.tif") as f:
            out[name] = f.read(1)
    assert np.array_equal(out["openvino"], out["again"], equal_nan=True)
    valid = np.isfinite(out["torch"])
    assert valid.mean() > 0.9
    err = np.abs(out["openvino"][valid] - out["torch"][valid]).max() / np.abs(out["torch"][valid]).max()
    assert err < 1e-3  # the export tests' parity tolerance


@native_bf16
def test_k_transpose_is_folded_into_the_scores_matmul(ov_fp32, tiny_spec):
    """The export's attention form (a constant scale on q, k's Transpose straight into the MatMul)
    lets the CPU plugin fold k's Transpose: per attention only the heads split of qkv and the heads
    merge run as Transpose nodes (torch's own export of scaled_dot_product_attention gave three)."""
    from copgen_rt.models import Denoiser
    from copgen_rt.models.denoiser import Attention

    with torch.device("meta"):
        attentions = sum(isinstance(m, Attention) for m in Denoiser(tiny_spec).modules())
    engine = ov_fp32.denoiser.engine
    model = openvino_backend._core().read_model(str(engine.path))
    model.reshape({p.get_any_name(): [2, *list(p.get_partial_shape())[1:]] for p in model.inputs})
    config = {**openvino_backend.compile_config("bf16"), "PERF_COUNT": True}
    compiled = openvino_backend._core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    request.infer([np.zeros(list(p.get_shape()), np.float32) for p in compiled.inputs])
    transposes = [p.node_name for p in request.profiling_info
                  if p.node_type == "Transpose" and p.status == p.Status.EXECUTED and "/attn/" in p.node_name]
    assert len(transposes) == 2 * attentions, sorted(transposes)
