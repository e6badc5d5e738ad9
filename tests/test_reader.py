"""Input recognition checks of copgen_rt.scenes.reader that warn rather than refuse."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from scene_helpers import CHIPS, smooth_s2, write_raster

from copgen_rt.cli import main
from copgen_rt.demo import default_scene
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.inputs.scene_input import ImplausibleDNWarning


@pytest.mark.parametrize("kind, data", [
    ("8-bit S2 data (99th percentile 2",
     np.random.default_rng(0).integers(0, 256, (12, 40, 40)).astype(np.uint8)),
    ("S2 values (99th percentile 0.",
     np.random.default_rng(0).uniform(0, 0.6, (12, 40, 40)).astype(np.float32)),
])
def test_s2_values_that_are_not_dns_warn_in_one_line(tmp_path, kind, data):
    """A uint8 12-band picture or 0-1 reflectances are read (a warning, not an error), saying why."""
    path = write_raster(tmp_path / "s2.tif", data)
    with pytest.warns(ImplausibleDNWarning,
                      match=f"s2.tif: {re.escape(kind)}.*do not look like digital numbers") as seen:
        assert open_input(path).product == "S2L2A"
    assert len(seen) == 1 and "\n" not in str(seen[0].message)
    r = CliRunner().invoke(main, ["info", str(path)])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "ImplausibleDNWarning" in line]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("copgen-rt: warning: ImplausibleDNWarning: s2.tif: "), r.output


def test_real_and_synthetic_dns_do_not_warn(tmp_path):
    """The bundled chip, the test chips (one with dark pixels) and synthetic DNs raise no warning."""
    s2 = [default_scene(), *sorted(CHIPS.glob("S2*.tif")),
          write_raster(tmp_path / "dn.tif", smooth_s2(40, 40))]
    assert len(s2) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImplausibleDNWarning)
        for path in s2:
            assert open_input(path).product.startswith("S2")
