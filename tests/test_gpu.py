"""The GPU path on the tiny fixture: CUDA-graph replay, bf16, the Triton backend on the device.

Skipped without a CUDA GPU (none on our machines). `python benchmarks/gpu.py` checks and times
the same paths at the real shapes in one call.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import TINY, drift, rel_err

from copgen_rt import Pipeline
from copgen_rt.backends import TorchDenoiser
from copgen_rt.backends.cuda_graphs import CudaGraphDenoiser
from copgen_rt.weights import load_denoiser, read_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: the GPU path is checked by these tests and "
                                       "benchmarks/gpu.py on a machine that has one")


def _inputs(spec, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    latents = [torch.randn(batch, *m.latent_shape, generator=gen).cuda() for m in spec.modalities]
    timesteps = [(torch.rand(batch, generator=gen) * 1000).cuda() for _ in spec.modalities]
    return latents, timesteps


def _model(spec, dtype=torch.float32):
    return load_denoiser(spec, read_checkpoint(TINY / "denoiser.safetensors"), torch.device("cuda"), dtype)


def test_cuda_graph_replay_matches_eager(tiny_spec):
    eager = TorchDenoiser(_model(tiny_spec))
    graphs = CudaGraphDenoiser(TorchDenoiser(_model(tiny_spec)))
    for batch, seed in [(3, 0), (1, 1), (3, 2), (4, 3)]:  # replays with stale padding rows too
        latents, timesteps = _inputs(tiny_spec, batch, seed)
        for out, ref in zip(graphs(latents, timesteps), eager(latents, timesteps), strict=True):
            assert out.shape == ref.shape and rel_err(out, ref) < 1e-5
    assert sorted(graphs.graphs) == [1, 4]


def test_bf16_drift_is_small(tiny_spec):
    latents, timesteps = _inputs(tiny_spec, 4, 4)
    ref = TorchDenoiser(_model(tiny_spec))(latents, timesteps)
    low = TorchDenoiser(_model(tiny_spec, torch.bfloat16))(latents, timesteps)
    assert drift(low, ref) < 2e-2


def test_pipeline_on_cuda_matches_cpu_latents(tiny_spec, tiny_pipeline):
    """Same seeds, same sampler, CUDA graphs on: the final latents agree with the CPU run."""
    gpu = Pipeline.from_weights(tiny_spec, TINY / "denoiser.safetensors", device="cuda")
    cond = {"DEM_DEM": torch.randn(2, *tiny_spec.modality("DEM_DEM").latent_shape,
                                   generator=torch.Generator().manual_seed(5))}
    kwargs = dict(generate=["S1RTC_vh_vv"], conditions=cond, conditions_are_latents=True, steps=6,
                  seed=[7, 8], decode=False)
    cpu_out, gpu_out = tiny_pipeline.generate(**kwargs), gpu.generate(**kwargs)
    assert rel_err(gpu_out["S1RTC_vh_vv"].cpu(), cpu_out["S1RTC_vh_vv"]) < 1e-3


@pytest.mark.skipif("TRITON_INTERPRET" in os.environ,
                    reason="TRITON_INTERPRET is set (tests/test_kernels.py sets it): run this file alone")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_on_gpu_drifts_no_more_than_autocast(tiny_spec, dtype):
    pytest.importorskip("triton", reason="Triton is not installed (pip install 'copgen-rt[gpu]')")
    from copgen_rt.backends.triton_backend import TritonDenoiser

    latents, timesteps = _inputs(tiny_spec, 4, 6)
    ref = TorchDenoiser(_model(tiny_spec))(latents, timesteps)
    model = _model(tiny_spec, dtype)
    torch_drift = drift(TorchDenoiser(model)(latents, timesteps), ref)
    assert drift(TritonDenoiser(model)(latents, timesteps), ref) < 1.25 * torch_drift
