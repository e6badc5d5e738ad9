"""The whole-process memory estimate (copgen_rt.memory), the batch limit built on it, and the Jetson
Orin edge plan: Orin detected by injection, the plan in docs/edge.md regenerated as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from copgen_rt import device, memory, specs

ROOT = Path(__file__).resolve().parents[1]
detect_orin = memory.detect_orin  # the reader itself; the `orin` fixture patches the module's


def test_parts_follow_the_real_shapes():
    base = specs.get("copgen-base")
    params, vaes = memory.parameter_counts(base)
    assert 280e6 < params < 300e6 and len(vaes) == 10  # U-ViT 1024 x 20 blocks; one KL-f8 per VAE key
    fp32 = memory.estimate(base, "fp32", "torch", 4)
    bf16 = memory.estimate(base, "bf16", "torch", 4)
    assert fp32.weights == params * 4 and bf16.weights == params * 2
    assert fp32.activations == 2 * bf16.activations == 4 * memory.denoiser_activations(base, "fp32", "torch")
    assert memory.estimate(base, "bf16", "torch", 8).activations == 2 * bf16.activations
    # the exported engines hold a compiled copy; the torch weights are freed after compiling
    ov = memory.estimate(base, "bf16", "openvino", 4)
    assert ov.engine_blobs == params * 2 and not ov.weights_resident
    assert ov.peak == ov.resident + max(ov.checkpoint + ov.weights, ov.activations + ov.vae_activations)
    # onnxruntime's graph materialises the attention scores
    assert memory.denoiser_activations(base, "fp32", "onnxruntime") > memory.denoiser_activations(
        base, "fp32", "openvino")
    int8 = memory.estimate(base, "int8", "tensorrt", 1, device="cuda")
    assert int8.engine_blobs == params and int8.weights == 0 and int8.checkpoint == 0
    assert memory.estimate(base, "fp32", "torch", 1, vae_keys=[]).vae_weights == 0
    with pytest.raises(ValueError, match="unknown precision"):
        memory.estimate(base, "fp8", "torch", 1)


def test_batch_limit_fits_the_memory_given():
    base = specs.get("copgen-base")
    peaks = {b: memory.estimate(base, "bf16", "torch", b, device="cuda").peak for b in (1, 2, 39, 40)}
    assert peaks[1] == peaks[2]  # small batches: loading (checkpoint next to the weights) is the peak
    assert memory.batch_limit(base, peaks[40], "bf16", "torch", "cuda") == 40
    assert memory.batch_limit(base, peaks[40] - 1, "bf16", "torch", "cuda") == 39
    assert memory.batch_limit(base, 10 * 2**40, "bf16", "torch", "cpu") == 8  # the CPU cap
    assert memory.batch_limit(base, 2**30, "bf16", "torch", "cuda") == 0


@pytest.fixture
def orin(tmp_path, monkeypatch):
    """A Jetson AGX Orin 32 GB as the device tree and /proc/meminfo describe it."""
    model = tmp_path / "model"
    model.write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       30536872 kB\nMemAvailable:   28000000 kB\n")
    monkeypatch.setattr(memory, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(memory, "detect_orin", lambda: detect_orin(meminfo=meminfo))
    return meminfo


def test_orin_is_detected_from_the_device_tree(tmp_path, orin):
    jetson = memory.detect_orin()
    assert jetson is not None and "Orin" in jetson.model and jetson.total_bytes == 30536872 * 1024
    assert memory.orin_memory_gb(jetson.total_bytes) == 32
    other = tmp_path / "other"
    other.write_text("Raspberry Pi 5 Model B\x00")
    assert detect_orin(other, cuda_name="", meminfo=orin) is None


def test_detection_from_cuda_name_and_absence(tmp_path):
    absent = tmp_path / "none"
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       7799264 kB\n")
    found = detect_orin(absent, cuda_name="Orin", meminfo=meminfo)
    assert found is not None and memory.orin_memory_gb(found.total_bytes) == 8
    assert detect_orin(absent, cuda_name="NVIDIA H100 80GB HBM3", meminfo=meminfo) is None


def test_batch_check_on_orin_uses_the_edge_plan(orin, monkeypatch):
    base, huge = specs.get("copgen-base"), specs.get("copgen-huge")
    total = 30536872 * 1024
    planned = memory.edge_batch_limit(base, total, "bf16", "torch", "cpu")
    assert device.memory_batch_limit(base, "cpu", "bf16", "torch") == planned > 1
    small = orin.parent / "meminfo"
    small.write_text("MemTotal:       7620000 kB\n")  # an 8 GB Orin: copgen-huge on torch bf16 does not fit
    with pytest.raises(ValueError, match="copgen-huge on torch bf16 needs about .* docs/edge.md"):
        device.memory_batch_limit(huge, "cuda", "bf16", "torch")


def test_edge_doc_holds_the_generated_plan():
    """docs/edge.md's table is `python -m copgen_rt.memory --write docs/edge.md` (regenerate it
    after changing the estimate)."""
    text = (ROOT / "docs" / "edge.md").read_text()
    assert memory.edge_plan_markdown() in text
    assert "python -m copgen_rt.memory --write docs/edge.md" in text


def test_edge_doc_python_runs(capsys):
    import re

    for block in re.findall(r"^```python\n(.*?)^```$", (ROOT / "docs" / "edge.md").read_text(), re.M | re.S):
        exec(compile(block, "docs/edge.md", "exec"), {})  # noqa: S102 - the page's own example
    assert "peak" in capsys.readouterr().out


def test_info_states_the_whole_process_estimate():
    from click.testing import CliRunner

    from copgen_rt.cli import main
    from copgen_rt.demo import default_scene

    args = ["info", default_scene(), "--model", "copgen-base", "--batch-size", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("memory: the whole process"))
    assert "VAE weights 3.1 GiB" in line and "blending buffers" in line and "peak" in line
