"""Which engine runs what (`copgen_rt.plan.choose_engine`), and the pairs that are refused: through
the function and through the CLI (exit 3, one line, before any weights load)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from copgen_rt import device as device_module
from copgen_rt import plan as plan_module
from copgen_rt.cli import main
from copgen_rt.plan import choose_engine

BF16_CPU, AVX2_CPU = {"avx2", "avx512f", "avx512_bf16"}, {"avx2", "fma"}


@pytest.fixture(autouse=True)
def no_triton_interpreter(monkeypatch):
    """tests/test_kernels.py sets TRITON_INTERPRET=1 for the session, which allows triton on CPUs."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


@pytest.fixture
def cpu(monkeypatch):
    """A CPU with or without native bf16, with or without OpenVINO installed."""
    def make(flags: set[str], openvino: bool) -> None:
        monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
        installed = plan_module.engine_installed
        monkeypatch.setattr(plan_module, "engine_installed",
                            lambda name: openvino if name == "openvino" else installed(name))
    return make


@pytest.fixture
def fake_gpu(monkeypatch):
    """An sm_90 GPU as far as device choice can tell (no kernel ever runs on it here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")


@pytest.mark.parametrize("flags, openvino, engine, dtype", [
    (BF16_CPU, True, "openvino", "bf16"), (AVX2_CPU, True, "openvino", "fp32"),
    (BF16_CPU, False, "torch", "bf16"), (AVX2_CPU, False, "torch", "fp32")])
def test_auto_on_cpus(cpu, flags, openvino, engine, dtype):
    cpu(flags, openvino)
    choice = choose_engine("cpu")
    assert (choice.denoiser, choice.vae, choice.dtype) == (engine, engine, dtype)
    assert ("OpenVINO is not installed" in choice.reason) == (not openvino)


def test_auto_follows_an_explicit_precision(cpu):
    cpu(BF16_CPU, True)
    assert choose_engine("cpu", dtype="fp32").denoiser == "openvino"
    fp16 = choose_engine("cpu", dtype="fp16")
    assert fp16.denoiser == "torch" and "does not run fp16" in fp16.reason
    assert choose_engine("cpu", "onnxruntime").dtype == "fp32"  # its native precision, not the CPU's
    assert choose_engine("cpu", {"denoiser": "torch"}).vae == "openvino"
    assert choose_engine("cpu", "torch").vae == "torch"


def test_cuda_keeps_torch(cpu, fake_gpu):
    cpu(BF16_CPU, True)
    choice = choose_engine("cuda")
    assert (choice.denoiser, choice.vae, choice.dtype) == ("torch", "torch", "bf16")
    assert choose_engine("cuda", "triton").vae == "torch"  # triton runs the denoiser only


@pytest.mark.parametrize("device, backend, dtype, message", [
    ("cpu", "triton", None, "--engine triton runs on a CUDA GPU, not on device cpu"),
    ("cpu", "openvino", "fp16", "--engine openvino runs fp32, bf16 or int8, not --dtype fp16"),
    ("cpu", "onnxruntime", "bf16", "--engine onnxruntime runs fp32, not --dtype bf16"),
    ("cuda", "openvino", "fp32", "--engine openvino runs on the CPU, not on device cuda"),
    ("cuda", "onnxruntime", "fp16", "--engine onnxruntime runs fp32, not --dtype fp16"),
    ("cuda", {"denoiser": "torch", "vae": "triton"}, None, "runs the denoiser only"),
    ("cpu", {"decoder": "torch"}, None, "the components are denoiser and vae"),
    ("cpu", "tensorrt", None, "unknown engine 'tensorrt'"),
])
def test_bad_pairs_are_refused(cpu, fake_gpu, device, backend, dtype, message):
    cpu(BF16_CPU, True)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        choose_engine(device, backend, dtype)


def test_openvino_bf16_needs_native_units(cpu):
    cpu(AVX2_CPU, True)
    with pytest.raises(ValueError, match="needs native bf16 units"):
        choose_engine("cpu", "openvino", "bf16")


def test_openvino_missing_is_a_missing_package(cpu):
    cpu(BF16_CPU, False)
    with pytest.raises(ImportError, match="pip install openvino"):
        choose_engine("cpu", "openvino")


def _run(args):
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("args, message", [
    (["--backend", "triton"], "--engine triton runs on a CUDA GPU, not on device cpu"),
    (["--backend", "openvino", "--dtype", "fp16"],
     "--engine openvino runs fp32, bf16 or int8, not --dtype fp16"),
    (["--backend", "onnxruntime", "--dtype", "bf16"], "--engine onnxruntime runs fp32, not --dtype bf16"),
    (["--device", "cuda", "--backend", "openvino"], "--engine openvino runs on the CPU, not on device cuda"),
    (["--device", "cuda", "--backend", "onnxruntime", "--dtype", "bf16"], "onnxruntime runs fp32"),
    (["--export", "export-folder", "--engine", "torch"], "--export runs the export's own engine"),
    (["--export", "export-folder", "--dtype", "fp32"], "--export runs the export's own engine"),
])
def test_bad_pairs_through_the_cli_exit_3_in_one_line(request, cpu, tmp_path, args, message):
    """Refused before any weights load or any output is written."""
    cpu(BF16_CPU, True)
    if "cuda" in args:
        request.getfixturevalue("fake_gpu")
    r = _run(["infer", *args, "--steps", "1", "--out", str(tmp_path / "out")])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 3 and len(lines) == 1, r.output
    assert lines[0].startswith("copgen-rt: error: ") and message in lines[0], r.output
    assert not (tmp_path / "out").exists()


def test_info_says_which_engine_and_why(cpu, tmp_path, monkeypatch):
    monkeypatch.setenv("COPGEN_RT_CACHE", str(tmp_path))  # nothing measured on this CPU kind yet
    cpu(BF16_CPU, True)
    r = _run(["info"])
    assert r.exit_code == 0, r.output
    assert "engine openvino (VAEs openvino), denoiser precision bf16: auto: OpenVINO is installed" in r.output
    assert "not measured on this CPU kind yet: the first run measures openvino, torch-compile, torch" \
        in r.output
    cpu(AVX2_CPU, False)
    r = _run(["info"])
    assert "engine torch (VAEs torch), denoiser precision fp32: auto: OpenVINO is not installed" in r.output
