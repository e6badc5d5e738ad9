from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"

TINY = FIXTURES / "copgen-tiny"
BETA = FIXTURES / "copgen-beta-tiny"


class Spy:
    """Wraps a denoiser backend and records what each network call received."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, latents, timesteps):
        self.calls.append(([x.clone() for x in latents], [t.clone() for t in timesteps]))
        return self.inner(latents, timesteps)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max-abs difference over max-abs reference (the fixtures' tolerance measure)."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def drift(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """mean |out - ref| / mean |ref| over all outputs: stable where max-abs errors are noisy."""
    out, ref = (torch.cat([t.double().flatten() for t in ts]) for ts in (outs, refs))
    return float((out - ref).abs().mean() / ref.abs().mean())


def pytest_configure(config) -> None:
    """With pytest-xdist (the default: pyproject.toml), the workers share the CPUs: each, and every
    process it starts (CLIs, Ray workers, servers), gets its share of threads, set before they
    start, rather than each wanting all of them (OpenMP threads that spin waiting for a busy core
    make two workers slower than one)."""
    import os

    workers = getattr(config.option, "numprocesses", None) or 0
    if workers > 1 and not os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory) -> Path:
    """Exports and compiled engines (the default CPU engine makes them on first use) go to one
    folder per session, not to the user's cache; set COPGEN_RT_CACHE to reuse one across runs."""
    import os

    if os.environ.get("COPGEN_RT_CACHE"):
        return Path(os.environ["COPGEN_RT_CACHE"])
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one cache for the workers: each export, compile and
        # engine measurement made once (files are published by rename; of two engine measurements
        # made at once the first recorded is kept, so both workers run the same engines)
        folder = tmp_path_factory.getbasetemp().parent / "copgen-rt-cache"
        folder.mkdir(exist_ok=True)
        os.environ["COPGEN_RT_CACHE"] = str(folder)
        return folder
    folder = tmp_path_factory.mktemp("copgen-rt-cache")
    os.environ["COPGEN_RT_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_spec():
    from copgen_rt import specs

    return specs.from_json(TINY / "spec.json")


@pytest.fixture(scope="session")
def tiny_json() -> dict:
    return json.loads((TINY / "spec.json").read_text())


@pytest.fixture(scope="session")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(TINY / "golden.safetensors"))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_spec):
    from copgen_rt import Pipeline

    return Pipeline.from_weights(tiny_spec, TINY / "denoiser.safetensors",
                                 vaes={"DEM_DEM": TINY / "vae-DEM_DEM.safetensors",
                                       "S1RTC_vh_vv": TINY / "vae-S1RTC_vh_vv.safetensors"},
                                 device="cpu", engine="torch")  # the implementation itself


@pytest.fixture()
def spy(tiny_pipeline):
    """The tiny pipeline's denoiser wrapped in a Spy for one test."""
    original = tiny_pipeline.denoiser
    tiny_pipeline.denoiser = Spy(original)
    yield tiny_pipeline.denoiser
    tiny_pipeline.denoiser = original


@pytest.fixture(scope="session")
def beta_spec():
    from copgen_rt import specs

    return specs.from_json(BETA / "spec.json")


@pytest.fixture(scope="session")
def beta_json() -> dict:
    return json.loads((BETA / "spec.json").read_text())


@pytest.fixture(scope="session")
def beta_golden() -> dict[str, torch.Tensor]:
    return load_file(str(BETA / "golden.safetensors"))


@pytest.fixture(scope="session")
def beta_pipeline(beta_spec):
    from copgen_rt import Pipeline

    return Pipeline.from_weights(beta_spec, BETA / "denoiser.safetensors",
                                 vaes={"sd-kl-f8": BETA / "vae.safetensors"}, device="cpu", engine="torch")
