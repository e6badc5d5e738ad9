from __future__ import annotations

import dataclasses

import pytest
import torch

from copgen_rt import Autoencoder, Denoiser, specs

PARAMS = {"copgen-base": 286_986_562, "copgen-large": 501_092_674, "copgen-huge": 951_274_306,
          "copgen-beta": 286_648_384}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,count", PARAMS.items())
def test_denoiser_parameter_counts(name, count):
    with torch.device("meta"):
        assert _count(Denoiser(specs.get(name))) == count


def test_vae_parameter_counts():
    base = specs.get("copgen-base")
    with torch.device("meta"):
        counts = {n: _count(Autoencoder(base, n)) for n in base.names if base.modality(n).is_image}
        assert _count(Autoencoder(specs.get("copgen-beta"), "dem")) == 83_653_863
    assert len(counts) == 10
    assert all(83_700_000 <= c <= 83_730_000 for c in counts.values())
    assert 836_000_000 < sum(counts.values()) < 838_000_000


def test_canonical_order_and_tokens():
    s = specs.get("copgen-base")
    assert s.names == tuple(sorted(s.names))  # ASCII sort, as the released checkpoint
    assert s.num_tokens == 834
    assert s.modality("S2L2A_B02_B03_B04_B08").bands == ("B04", "B03", "B02", "B08")
    assert s.modality("S2L1C_B05_B06_B07_B11_B12_B8A").bands[3] == "B8A"
    assert s.modality("S1RTC_vh_vv").bands == ("VV", "VH")
    assert sum(m.latent_size for m in s.modalities) == 26118
    assert s.pixel_shape("DEM_DEM") == (1, 64, 64) and s.pixel_shape("LULC_LULC") == (10, 192, 192)
    assert specs.get("copgen-beta").num_tokens == 1028
    # every footprint is 1.92 km
    for m in s.modalities:
        if m.is_image:
            assert m.gsd * s.pixel_shape(m.name)[1] == pytest.approx(1920)


def test_specs_are_immutable_and_replaceable():
    s = specs.get("copgen-base")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "x"
    with pytest.raises(TypeError):
        s.vaes["DEM_DEM"] = None
    wide = s.replace(denoiser=dataclasses.replace(s.denoiser, embed_dim=64, num_heads=4))
    assert wide.denoiser.embed_dim == 64 and s.denoiser.embed_dim == 1024


def test_from_json_fixture(tiny_spec):
    assert tiny_spec.names == specs.get("copgen-base").names
    assert tiny_spec.denoiser.embed_dim == 64 and tiny_spec.denoiser.depth == 4
    assert set(tiny_spec.vaes) == {"DEM_DEM", "S1RTC_vh_vv"}
    assert tiny_spec.vae_for("DEM_DEM").ch_mult == (1, 2, 2, 2)
    with pytest.raises(KeyError, match="no autoencoder"):
        tiny_spec.vae_for("LULC_LULC")


def test_unknown_spec_and_modality():
    with pytest.raises(KeyError, match="unknown model spec"):
        specs.get("copgen-giant")
    with pytest.raises(KeyError, match="unknown modality"):
        specs.get("copgen-base").modality("S3")
