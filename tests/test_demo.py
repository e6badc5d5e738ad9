"""The bundled demo model and chip from Python, and the random-weights warning."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import rasterio
from conftest import TINY
from rasterio.warp import transform as warp_transform

from copgen_rt import Pipeline, RandomWeightsWarning, demo, specs
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.tiling import FOOTPRINT_M
from copgen_rt.weights import make_random_weights


def test_read_chip_gives_dns_on_native_grids_in_band_order():
    """read_chip is the chip's top-left footprint in the spec's band order: 10 m bands as stored,
    60 m bands as 6 x 6 averages, DNs unchanged; chip_location is that footprint's centre."""
    bands = open_input(demo.chip_path()).bands  # the file's band order
    with rasterio.open(demo.chip_path()) as src:
        raw = {band: src.read(i + 1).astype(np.float64) for i, band in enumerate(bands)}
    spec = specs.get("copgen-demo")
    ten = demo.read_chip("S2L2A_B02_B03_B04_B08")
    assert ten.shape == (1, 4, 192, 192) and ten.dtype.is_floating_point
    for channel, band in enumerate(spec.modality("S2L2A_B02_B03_B04_B08").bands):
        np.testing.assert_array_equal(ten[0, channel].numpy(), raw[band][:192, :192])
    sixty = demo.read_chip("S2L2A_B01_B09")
    assert sixty.shape == (1, 2, 32, 32)
    for channel, band in enumerate(spec.modality("S2L2A_B01_B09").bands):
        mean = raw[band][:192, :192].reshape(32, 6, 32, 6).mean(axis=(1, 3))
        np.testing.assert_allclose(sixty[0, channel].numpy(), mean, rtol=1e-4)
    lat, lon = demo.chip_location()[0].tolist()
    with rasterio.open(demo.chip_path()) as src:
        (x,), (y,) = warp_transform("EPSG:4326", src.crs, [lon], [lat])
        assert abs(x - (src.bounds.left + FOOTPRINT_M / 2)) < 0.01
        assert abs(y - (src.bounds.top - FOOTPRINT_M / 2)) < 0.01
    with pytest.raises(ValueError, match="DEM_DEM: the bundled chip is Sentinel-2 L2A"):
        demo.read_chip("DEM_DEM")


def _random_weight_warnings(make) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        made = make()
    return made, [str(w.message) for w in seen if issubclass(w.category, RandomWeightsWarning)]


def test_random_weights_warn_once_from_the_api(tmp_path):
    """Pipeline.demo() (= from_pretrained("copgen-demo")) warns once, in one line; a pipeline
    with real weights does not, until it loads a random VAE."""
    pipe, seen = _random_weight_warnings(Pipeline.demo)
    assert pipe.is_random and pipe.spec.name == "copgen-demo"
    assert seen == ["this copgen-demo pipeline has RANDOM weights: outputs are synthetic, not predictions "
                    "(load released weights for a real model)"]
    assert issubclass(RandomWeightsWarning, UserWarning)
    same, _ = _random_weight_warnings(lambda: Pipeline.from_pretrained("copgen-demo"))
    assert same.provenance.files == pipe.provenance.files
    with pytest.raises(ValueError, match="copgen-base needs weights"):
        Pipeline.from_pretrained("copgen-base")

    tiny = specs.from_json(TINY / "spec.json")
    make_random_weights(tiny, tmp_path, vaes=["DEM_DEM"])
    real, seen = _random_weight_warnings(lambda: Pipeline.from_weights(
        tiny, TINY / "denoiser.safetensors", vaes={"DEM_DEM": tmp_path / "vae" / "DEM_DEM.safetensors"}))
    assert not real.is_random and seen == []
    _, seen = _random_weight_warnings(lambda: real.vae("DEM_DEM"))
    assert real.is_random and len(seen) == 1 and seen[0].startswith("the DEM_DEM VAE of this")


def test_random_weights_warning_points_at_the_callers_line():
    """The warning names the line that made the pipeline, not copgen_rt's pipeline.py."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Pipeline.demo()
        line = sys._getframe().f_lineno - 1
    (warning,) = [w for w in seen if issubclass(w.category, RandomWeightsWarning)]
    assert (warning.filename, warning.lineno) == (__file__, line)
