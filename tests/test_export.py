from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY, rel_err

from copgen_rt import Pipeline, specs
from copgen_rt.errors import TensorRTIncompatible
from copgen_rt.export.manifest import Manifest
from copgen_rt.export.onnx import export_weights
from copgen_rt.export.tensorrt import build_plan, cache_key
from copgen_rt.export.tensorrt_support import SUPPORTED_OPS, check_tensorrt_compatible
from copgen_rt.weights import find_weights, make_random_weights

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install copgen-rt[onnx])")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, tiny_spec):
    out = tmp_path_factory.mktemp("export")
    export_weights(tiny_spec, find_weights(tiny_spec, TINY), out, batch=(1, 2, 4))
    return out


def test_manifest_describes_every_component(tiny_export):
    m = Manifest.load(tiny_export)
    names = [c.name for c in m.components]
    assert names == ["denoiser", "vae_encoder/DEM_DEM", "vae_decoder/DEM_DEM",
                     "vae_encoder/S1RTC_vh_vv", "vae_decoder/S1RTC_vh_vv"]
    assert m.opset >= 17 and m.batch == [1, 2, 4] and set(m.versions) >= {"torch", "onnx", "onnxruntime"}
    den = m.component("denoiser")
    assert len(den.inputs) == 24 and den.inputs[1].shape == ["batch", 8, 8, 8]
    assert den.outputs[0].name == "eps_3d_cartesian_lat_lon"
    for c in m.components:
        assert c.parity["max_rel_err"] < 1e-4 and len(c.sha256) == 64
    assert specs.from_dict(m.spec) == specs.from_json(TINY / "spec.json")
    assert m.weights["denoiser"].startswith("denoiser.safetensors:")


def test_graph_is_what_tensorrt_accepts(tiny_export):
    import onnx

    graph = onnx.load(str(tiny_export / "denoiser.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "LayerNormalization" in ops  # one node per LayerNorm (opset 17)
    assert {"MatMul", "Softmax"} <= ops  # attention as MatMul-Softmax-MatMul
    assert ops <= SUPPORTED_OPS
    assert check_tensorrt_compatible(tiny_export / "vae_decoder" / "DEM_DEM.onnx")["Conv"] > 10


def test_incompatible_graph_is_rejected(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("NonZero", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(TensorRTIncompatible, match="NonZero"):
        check_tensorrt_compatible(path)


def test_golden_sampler_through_onnxruntime(tiny_export, tiny_json, golden):
    pipe = Pipeline.from_export(tiny_export, device="cpu")
    assert pipe.denoiser.name == "onnxruntime"
    c = tiny_json["cases"]["translate"]
    out = pipe.generate(c["generate"], {n: golden[f"translate/cond/{n}"] for n in c["condition"]},
                        conditions_are_latents=True, steps=c["steps"], batch_size=c["batch"],
                        initial_noise={n: golden[f"translate/x_init/{n}"] for n in c["generate"]},
                        decode=False)
    for name in c["generate"]:
        assert rel_err(out[name], golden[f"translate/out/{name}"]) < 1e-3, name


def test_backends_are_interchangeable(tmp_path, monkeypatch, tiny_spec, tiny_pipeline, tiny_export):
    """Every mix of torch and onnxruntime components, and an export folder, give the torch
    pipeline's result (encode, 2 sampler steps, decode: each component on its real path)."""
    monkeypatch.setenv("COPGEN_RT_CACHE", str(tmp_path / "cache"))
    vaes = {"DEM_DEM": TINY / "vae-DEM_DEM.safetensors", "S1RTC_vh_vv": TINY / "vae-S1RTC_vh_vv.safetensors"}
    s1 = torch.rand(1, 2, 192, 192) * 0.3 + 0.01
    kw = dict(generate=["DEM_DEM"], conditions={"S1RTC_vh_vv": s1}, steps=2, seed=[5])
    reference = tiny_pipeline.generate(**kw)["DEM_DEM"]
    mixes = [{"denoiser": "onnxruntime", "vae": "torch"}, {"denoiser": "torch", "vae": "onnxruntime"},
             "onnxruntime"]
    for mix in mixes:
        pipe = Pipeline.from_weights(tiny_spec, TINY / "denoiser.safetensors", vaes=vaes, engine=mix)
        assert rel_err(pipe.generate(**kw)["DEM_DEM"], reference) < 1e-3, mix
    exported = Pipeline.from_export(tiny_export).generate(**kw)["DEM_DEM"]
    assert rel_err(exported, reference) < 1e-3
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 3  # one export per component, reused


def test_tensorrt_plan_without_tensorrt(tiny_export):
    m = Manifest.load(tiny_export)
    plan = build_plan(m, "fp16", [1, 8, 32])
    den = plan["components"]["denoiser"]
    assert den["profiles"]["latent_DEM_DEM"] == [[1, 8, 8, 8], [8, 8, 8, 8], [32, 8, 8, 8]]
    assert den["profiles"]["t_DEM_DEM"] == [[1], [8], [32]]
    assert "FP16" in plan["flags"] and "LayerNormalization" in plan["fp32_layers"]
    key = cache_key(den, plan, "10.0", (9, 0))
    assert key != cache_key(den, plan, "10.1", (9, 0)) != cache_key(den, plan, "10.0", (8, 6))
    with pytest.raises(ValueError, match="MIN:OPT:MAX"):
        build_plan(m, "fp16", [4, 2, 8])


def test_tensorrt_engine_build():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (not installable on our machines)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")


def _assert_attention_form(graph) -> None:
    """Each attention is softmax((q * constant) @ k^T) @ v with k^T straight into the MatMul: a
    Transpose, which OpenVINO folds into it, or none where k's own layout already cancels it (the
    VAEs). torch's own export put a run-time scale between them."""
    producer = {out: node for node in graph.node for out in node.output}
    constants = {i.name for i in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    assert softmaxes
    for softmax in softmaxes:
        scores = producer[softmax.input[0]]
        assert scores.op_type == "MatMul" and producer[scores.input[1]].op_type in ("Transpose", "Reshape")
        scaled_q = producer[scores.input[0]]
        assert scaled_q.op_type == "Mul" and scaled_q.input[1] in constants


def test_real_base_shapes_export_is_a_valid_graph(tmp_path):
    """copgen-base's real width, heads, tokens and latent shapes, and one real-size VAE, with the
    denoiser cut to one block per stage (every block exports to the same ops): the graphs pass
    onnx.checker, shape inference and the TensorRT op list, keep a dynamic batch axis and their
    fp32 weights, and have one LayerNormalization node per LayerNorm and one Softmax per
    attention. At the real depth, the model maps the declared input shapes to the declared
    output shapes (meta tensors). Parity at full size is too slow here."""
    import onnx

    from copgen_rt.export.onnx import denoiser_io
    from copgen_rt.models import Denoiser

    base = specs.get("copgen-base")
    spec = base.replace(denoiser=dataclasses.replace(base.denoiser, depth=2))
    make_random_weights(spec, tmp_path / "w", dtype=torch.float16, vaes=["S2L2A_B01_B09"])
    m = export_weights(spec, find_weights(spec, tmp_path / "w"), tmp_path / "x", check="graph")
    assert [c.name for c in m.components] == ["denoiser", "vae_encoder/S2L2A_B01_B09",
                                              "vae_decoder/S2L2A_B01_B09"]
    with torch.device("meta"):
        model = Denoiser(spec)
    graph = onnx.load(str(tmp_path / "x" / "denoiser.onnx")).graph
    ops = [n.op_type for n in graph.node]
    layer_norms = sum(isinstance(x, torch.nn.LayerNorm) for x in model.modules())
    assert ops.count("LayerNormalization") == layer_norms == 8 and ops.count("Softmax") == 3
    for file in ("denoiser.onnx", "vae_encoder/S2L2A_B01_B09.onnx", "vae_decoder/S2L2A_B01_B09.onnx"):
        _assert_attention_form(onnx.load(str(tmp_path / "x" / file), load_external_data=False).graph)
    assert m.component("denoiser").parity["ops"] == len(ops)
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in [*graph.input, *graph.output])
    weights = sum(p.numel() for p in model.parameters())
    assert (tmp_path / "x" / "denoiser.onnx").stat().st_size > 0.99 * 4 * weights  # fp32 weights inside

    with torch.device("meta"):
        real = Denoiser(base)
    assert sum(p.numel() for p in real.parameters()) == 286_986_562
    inputs, outputs = denoiser_io(base)
    feeds = [torch.empty([3 if d == "batch" else d for d in i.shape], device="meta") for i in inputs]
    n = len(feeds) // 2
    eps = real(feeds[:n], feeds[n:])
    assert [list(e.shape) for e in eps] == [[3, *o.shape[1:]] for o in outputs]


def test_cli_export_then_infer_with_engine(tmp_path):
    from click.testing import CliRunner

    from copgen_rt.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["export", "--out", str(tmp_path / "x"), "--modalities",
                             "S2L2A_B02_B03_B04_B08,S2L2A_B01_B09,S2L2A_B05_B06_B07_B11_B12_B8A,DEM_DEM"])
    assert r.exit_code == 0, r.output
    args = ["--generate", "DEM_DEM", "--steps", "3", "-q"]
    a = runner.invoke(main, ["infer", "--export", str(tmp_path / "x"), "--out", str(tmp_path / "a"), *args])
    b = runner.invoke(main, ["infer", "--dtype", "fp32", "--out", str(tmp_path / "b"), *args])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    import rasterio

    name = "S2L2A_433D_629L_3_1_DEM_DEM.tif"
    with rasterio.open(tmp_path / "a" / name) as fa, rasterio.open(tmp_path / "b" / name) as fb:
        x, y = fa.read(1), fb.read(1)
        assert fa.tags()["COPGEN_RANDOM_WEIGHTS"] == "true"
    assert np.abs(x - y).max() / np.abs(y).max() < 1e-3
    r = runner.invoke(main, ["export", "--precision", "fp16", "--out", str(tmp_path / "y")])
    assert r.exit_code == 3 and "tensorrt" in r.output


def test_corrupt_export_folders_are_checkpoint_errors(tmp_path, tiny_export):
    import shutil

    from copgen_rt.errors import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_export, broken)
    denoiser = broken / "denoiser.onnx"
    denoiser.write_bytes(denoiser.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="denoiser.onnx: not a loadable ONNX model"):
        Pipeline.from_export(broken)
    (broken / "manifest.json").write_text('{"format": "onnx",')
    with pytest.raises(CheckpointError, match="manifest.json: not valid JSON"):
        Pipeline.from_export(broken)
