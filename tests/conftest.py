from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "copgen-tiny"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max-abs difference over max-abs reference (the fixtures' tolerance measure)."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


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
                                 device="cpu")
