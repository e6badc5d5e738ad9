"""Every command as safe as `infer` (issue 34): no writes through a link planted under --out,
regular input files only (no hang on a FIFO), the environment's failures as one line and exit 9,
specs validated before anything is built, signals that clean up, plausible inputs, one-line
messages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from scene_helpers import smooth_s2, write_raster

from copgen_rt.cli import main
from copgen_rt.demo import demo_weights
from copgen_rt.errors import OutputWriteError
from copgen_rt.files import atomic_write, output_folder, write_text


def _cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error(result, code: int, words: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("copgen-rt: error: ")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and words in errors[0], result.output
    assert not any(line.lstrip().startswith(("Traceback", "File ")) for line in lines), result.output


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """An output folder and a victim folder outside it (holding one precious file)."""
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    (victim / "DEM_DEM.onnx").write_text("precious")
    return out, victim


# --- 1. one safe-output layer ----------------------------------------------------------------


def test_atomic_write_refuses_a_folder_link_below_the_output_folder(planted):
    out, victim = planted
    (out / "vae").symlink_to(victim)
    target = out / "vae" / "x.bin"
    with pytest.raises(OutputWriteError, match="symlink"), atomic_write(target, below=out) as f:
        f.write(b"x")
    with pytest.raises(OutputWriteError, match="symlink"):
        output_folder(out / "vae" / "deeper", below=out)
    assert sorted(p.name for p in victim.iterdir()) == ["DEM_DEM.onnx"]


def test_atomic_write_replaces_a_planted_file_link_and_leaves_no_temporary(planted):
    out, victim = planted
    (out / "sub").mkdir()
    (out / "sub" / "a.json").symlink_to(victim / "DEM_DEM.onnx")
    write_text(out / "sub" / "a.json", "new", below=out)
    assert (out / "sub" / "a.json").read_text() == "new" and not (out / "sub" / "a.json").is_symlink()
    assert (victim / "DEM_DEM.onnx").read_text() == "precious"
    assert os.listdir(out / "sub") == ["a.json"]


@pytest.mark.parametrize("command", ["convert", "make-random-weights"])
def test_weights_writers_refuse_a_planted_vae_folder_link(planted, command):
    out, victim = planted
    (out / "vae").symlink_to(victim)
    args = ["--model", "copgen-demo", "--out", out]
    r = _cli([command, *args, *(["--weights", demo_weights()] if command == "convert" else [])])
    _one_error(r, 9, "symlink")
    assert sorted(p.name for p in victim.iterdir()) == ["DEM_DEM.onnx"]


def test_export_refuses_a_planted_vae_decoder_link_before_exporting(planted):
    out, victim = planted
    (out / "vae_decoder").symlink_to(victim)
    r = _cli(["export", "--out", out, "--modalities", "DEM_DEM", "--overwrite"])
    _one_error(r, 9, "symlink")
    assert (victim / "DEM_DEM.onnx").read_text() == "precious"
    assert not list(out.rglob("*.onnx"))


def test_a_truncated_output_of_a_many_scene_run_is_made_again(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(2):
        write_raster(folder / f"s{i}.tif", smooth_s2(200, 200, seed=i))
    out = tmp_path / "out"
    args = ["infer", folder / "*.tif", "--out", out, "-q", "--steps", "1", "--generate", "DEM"]
    assert _cli(args).exit_code == 0
    dem = out / "s0_DEM_DEM.tif"
    before = dem.read_bytes()
    dem.write_bytes(before[:5000])
    again = _cli(args)
    assert again.exit_code == 0, again.output
    assert "1 succeeded, 1 skipped" in again.output
    with rasterio.open(dem) as src:
        assert np.isfinite(src.read()).all()
    assert dem.stat().st_size == len(before)
