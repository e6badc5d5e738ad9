"""The command line's contract: one line per error or warning, distinct exit codes, early checks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner
from scene_helpers import CHIPS

from copgen_rt.cli import main
from copgen_rt.scenes.synthetic import write_raster


def _run(args):
    return CliRunner().invoke(main, args)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("args, code, message", [
    (["infer", "--frobnicate"], 2, "No such option '--frobnicate'"),
    (["infer", "--overlap", "nan"], 2, "nan is not a finite number"),
    (["infer", "--s2-offset", "inf"], 2, "inf is not a finite number"),
    (["infer", "--steps", "0"], 2, "--steps"),
    (["infer", "--model", "copgen-nano"], 3, "unknown model spec 'copgen-nano'"),
    (["infer", "--generate", ""], 3, "--generate is empty"),
    (["infer", "--generate", "S1"], 3, "not a modality or product of copgen-demo; choose products S2L2A, "),
    (["info", "--cond", f"DEM={CHIPS / 'DEM_433D_629L_3_1.tif'}", "--generate", "S1"], 3, "or modalities"),
    (["info", "--modality", "S3"], 3, "--modality and --bands describe SCENE"),
    (["infer", "--export", ".", "--model", "copgen-beta"], 3, "--export carries the spec"),
    (["infer", "a.tif", "--manifest", "scenes.txt"], 3, "not both"),
    (["export", "--batch", "1:4:100000000", "--out", "never-written"], 3, "MAX <= 4096"),
])
def test_bad_usage_is_one_line(args, code, message):
    r = _run(args)
    assert r.exit_code == code, r.output
    lines = _error_lines(r.output)
    assert len(lines) == 1 and lines[0].startswith("copgen-rt: error: ") and message in lines[0], r.output


def test_bad_spec_json_names_the_file(tmp_path):
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{")
    for name, message in [("empty.json", "empty.json: not a valid spec.json (missing field 'modality_order'"),
                          ("broken.json", "broken.json: not valid JSON (Expecting property name")]:
        r = _run(["info", "--spec-json", str(tmp_path / name)])
        assert r.exit_code == 3 and message in r.output, r.output


def test_warnings_are_one_line_each(tmp_path):
    """A land-cover code outside the class table is counted and reported, in one line."""
    codes = np.full((1, 200, 200), 11, np.uint8)
    codes[0, :20, :20] = 77
    scene = write_raster(tmp_path / "lulc.tif", codes)
    r = _run(["infer", str(scene), "--lulc-values", "code", "--generate", "DEM_DEM", "--steps", "1",
              "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if "UnknownClassCodeWarning" in line]
    assert warnings and all(w.startswith("copgen-rt: warning: UnknownClassCodeWarning: ") for w in warnings)
    assert not any(line.lstrip().startswith(("warnings.warn", "File ")) for line in r.output.splitlines())


@pytest.mark.parametrize(
    "missing, message",
    [
        (["onnx"], "export needs onnx (not installed)"),
        (
            ["onnxruntime", "openvino"],
            "export checks parity through onnxruntime or openvino, and neither is installed",
        ),
    ],
)
def test_export_without_the_onnx_extra_names_it(tmp_path, monkeypatch, missing, message):
    """A missing onnx, or no runtime for the parity check, is exit 6 with the pip extra to install,
    before any export."""
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # `import onnx` now fails
    r = _run(["export", "--out", str(tmp_path / "export")])
    assert r.exit_code == 6, r.output
    lines = _error_lines(r.output)
    assert lines == [f"copgen-rt: error: {message}: pip install 'copgen-rt[onnx]'"], r.output
    assert not (tmp_path / "export").exists()


def test_info_plans_for_the_model_infer_runs(tmp_path):
    """`info SCENE` and `infer` default to the same model (the demo without --weights) and the
    same plan (batch size included), and both name the model; infer says RANDOM WEIGHTS once
    (its own line, not the API's RandomWeightsWarning as well)."""
    from copgen_rt.demo import default_scene

    args = [default_scene(), "--generate", "DEM_DEM", "--steps", "1"]
    # infer first: where no earlier run has, it measures the engines (info never does) and caches
    # the choice, which info then reads
    infer = _run(["infer", *args, "-v", "-q", "--out", str(tmp_path / "o")])
    assert infer.exit_code == 0, infer.output
    info = _run(["info", *args])
    assert info.exit_code == 0, info.output
    assert info.output.startswith("model: copgen-demo (the bundled random demo model"), info.output
    assert [line for line in infer.output.splitlines() if "RANDOM" in line] == [
        "copgen-rt: RANDOM WEIGHTS: outputs are synthetic, not predictions (pass --weights for a real model)"
    ]
    plan = [line for line in info.output.splitlines() if not line.startswith("memory:")]
    assert all(line in infer.output.splitlines() for line in plan), (info.output, infer.output)
    import rasterio

    with rasterio.open(tmp_path / "o" / "S2L2A_433D_629L_3_1_DEM_DEM.tif") as f:
        assert f.tags()["COPGEN_MODEL"] == "copgen-demo"
    base = _run(["info", *args, "--model", "copgen-base"])
    assert base.exit_code == 0 and base.output.startswith("model: copgen-base\n"), base.output


def test_first_condition_is_the_scene_without_scene(tmp_path):
    """`infer --cond S1RTC=s1 --cond DEM=dem` with no SCENE runs on the first condition's frame,
    conditioned on both (it used to take the bundled S2 chip and fail on the overlap)."""
    conds = ["--cond", f"S1RTC={CHIPS / 'S1RTC_433D_629L_3_1.tif'}",
             "--cond", f"DEM={CHIPS / 'DEM_433D_629L_3_1.tif'}"]
    info = _run(["info", *conds, "--generate", "LULC"])
    assert info.exit_code == 0, info.output
    assert "conditions: S1RTC_vh_vv, DEM_DEM" in info.output, info.output
    assert "DEM (1 band: DEM)" in info.output and "S1RTC (2 bands: VV VH)" in info.output, info.output
    assert "S1RTC_433D_629L_3_1_LULC_LULC.tif" in info.output, info.output
    r = _run(["infer", *conds, "--generate", "LULC", "--steps", "1", "--engine", "torch", "-q",
              "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "S1RTC_433D_629L_3_1_LULC_LULC.tif").exists()
    clash = _run(["info", *conds, "--modality", "S2L2A"])
    assert clash.exit_code == 3 and "the first --cond is the scene" in clash.output, clash.output


def test_help_shows_defaults_and_the_batch_never_exceeds_the_scene():
    help_text = " ".join(_run(["infer", "--help"]).output.split())
    assert "--preset [exact|fast|draft]" in help_text and "[default: (exact)]" in help_text
    assert "[default: (the fastest measured on this CPU kind within the memory limit" in help_text
    from copgen_rt.demo import default_scene

    # the scene's own tiling: 4 tiles
    info = _run(["info", default_scene(), "--batch-size", "8", "--generate", "DEM", "--tiling", "scene"])
    assert info.exit_code == 0, info.output
    assert "= 200 denoiser evaluations, batch 4" in info.output, info.output
