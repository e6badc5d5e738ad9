"""Every command as safe as `infer` (issue 34): no writes through a link planted under --out,
regular input files only (no hang on a FIFO), the environment's failures as one line and exit 9,
specs validated before anything is built, signals that clean up, plausible inputs, one-line
messages."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from scene_helpers import default_signals, smooth_s2, write_raster

from copgen_rt import Pipeline, specs
from copgen_rt.cli import main
from copgen_rt.demo import demo_weights
from copgen_rt.errors import OutputWriteError, command_line_report
from copgen_rt.files import atomic_write, output_folder, write_text
from copgen_rt.specs.limits import check_limits


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


def _two_scenes(tmp_path: Path, side: int) -> Path:
    """A folder of two small synthetic S2 scenes, for many-scene runs."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(2):
        write_raster(folder / f"s{i}.tif", smooth_s2(side, side, seed=i))
    return folder


def test_a_truncated_output_of_a_many_scene_run_is_made_again(tmp_path):
    folder = _two_scenes(tmp_path, 200)
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


# --- 2. one input-opening layer: regular files only, bounded JSON ------------------------------


@pytest.fixture
def deadline():
    """Fail (instead of hanging the suite) if a command blocks for 60 s."""
    def expired(signum, frame):
        raise TimeoutError("blocked: a read that can never end")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "scene.tif", smooth_s2(128, 128))


def test_a_fifo_spec_json_is_refused_at_once(tmp_path, deadline):
    r = _cli(["info", "--spec-json", _fifo(tmp_path / "spec.json")])
    _one_error(r, 3, "not a regular file (a FIFO")


def test_a_fifo_manifest_is_refused_at_once(tmp_path, deadline):
    r = _cli(["infer", "--manifest", _fifo(tmp_path / "scenes.csv"), "--out", tmp_path / "out"])
    _one_error(r, 3, "not a regular file (a FIFO")


def test_a_fifo_gap_mask_is_refused_at_once(tmp_path, scene, deadline):
    mask = _fifo(tmp_path / "mask.tif")
    r = _cli(["fill", scene, "--mask", mask, "--out", tmp_path / "out", "--steps", "1"])
    _one_error(r, 3, "not a regular file (a FIFO")


def test_a_vrt_with_a_fifo_source_is_refused_before_gdal_opens_it(tmp_path, deadline):
    _fifo(tmp_path / "band.tif")
    vrt = tmp_path / "scene.vrt"
    vrt.write_text('<VRTDataset rasterXSize="128" rasterYSize="128">'
                   '<VRTRasterBand dataType="Float32" band="1">'
                   '<SimpleSource><SourceFilename relativeToVRT="1">band.tif</SourceFilename>'
                   '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    r = _cli(["infer", vrt, "--out", tmp_path / "out", "--steps", "1", "--generate", "DEM"])
    _one_error(r, 3, "band.tif: not a regular file (a FIFO")


def _infer_with(scene: Path, weights: Path, out: Path) -> list:
    """`infer` of the demo model (named: with --weights the default is copgen-base) on `weights`."""
    return ["infer", scene, "--model", "copgen-demo", "--weights", weights, "--out", out, "--generate", "DEM"]


def _weights_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "weights"
    shutil.copytree(demo_weights(), copy)
    return copy


def test_fifo_checkpoints_and_weights_manifests_are_refused_at_once(tmp_path, scene, deadline):
    weights = _weights_copy(tmp_path)
    vae = sorted((weights / "vae").iterdir())[0]
    vae.unlink()
    _fifo(vae)
    args = _infer_with(scene, weights, tmp_path / "out")
    _one_error(_cli(args), 4, "not a regular file (a FIFO")
    assert not list((tmp_path / "out").glob(".copgen-work-*"))
    (weights / "weights.json").unlink()
    _fifo(weights / "weights.json")  # not silently skipped (nor the sha256 checks with it)
    _one_error(_cli(args), 4, "weights.json: not a regular file (a FIFO")


def test_a_checkpoint_linked_to_dev_zero_is_not_a_regular_file(tmp_path, scene):
    weights = _weights_copy(tmp_path)
    (weights / "weights.json").unlink()
    (weights / "denoiser.safetensors").unlink()
    (weights / "denoiser.safetensors").symlink_to("/dev/zero")
    r = _cli(_infer_with(scene, weights, tmp_path / "out"))
    _one_error(r, 4, "not a regular file (a device)")


@pytest.mark.parametrize("where", ["spec", "weights.json", "stac"])
def test_deeply_nested_json_is_one_line(tmp_path, scene, where):
    nested = "[" * 100_000 + "]" * 100_000
    if where == "spec":
        (tmp_path / "spec.json").write_text(nested)
        r, code = _cli(["info", "--spec-json", tmp_path / "spec.json"]), 3
    elif where == "weights.json":
        weights = _weights_copy(tmp_path)
        (weights / "weights.json").write_text(nested)
        r = _cli(_infer_with(scene, weights, tmp_path / "out"))
        code = 4
    else:
        (tmp_path / "item.json").write_text('{"type": "Feature", "x": ' + "[" * 200 + "]" * 200 + "}")
        r, code = _cli(["infer", tmp_path / "item.json", "--out", tmp_path / "out", "--generate", "DEM"]), 3
    _one_error(r, code, "nested more than")


# --- 3. the environment's failures: one line, exit 9, in every command -------------------------

COPGEN_RT = [sys.executable, "-m", "copgen_rt"]


def _run(args: list, stdout=subprocess.PIPE, shell_prefix: str = "") -> subprocess.CompletedProcess:
    command = " ".join(shlex.quote(str(a)) for a in [*COPGEN_RT, *args])
    return subprocess.run(f"{shell_prefix}{command}", shell=True, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=300)


def _one_line_stderr(p: subprocess.CompletedProcess, code: int, words: str) -> None:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == code and len(lines) == 1, p.stderr
    assert lines[0].startswith("copgen-rt: error: ") and words in lines[0], p.stderr


@pytest.mark.parametrize("command", ["convert", "make-random-weights"])
def test_weights_writers_report_an_out_under_a_file_and_a_too_long_name(tmp_path, command):
    (tmp_path / "file").write_text("")
    weights = ["--weights", demo_weights()] if command == "convert" else []
    for out, words in [(tmp_path / "file" / "o", "Not a directory"), (tmp_path / ("a" * 300), "too long")]:
        _one_error(_cli([command, "--model", "copgen-demo", "--out", out, *weights]), 9, words)


def test_a_file_size_limit_while_writing_weights_is_one_line(tmp_path):
    args = ["make-random-weights", "--model", "copgen-demo", "--out", tmp_path / "o"]
    p = _run(args, shell_prefix="ulimit -f 64; ")
    _one_line_stderr(p, 9, "no space left")
    assert not [f for f in (tmp_path / "o").rglob("*") if f.is_file() and f.name.endswith(".tmp")]


def test_a_cache_folder_that_is_a_file_is_one_line(tmp_path, scene, monkeypatch):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("COPGEN_RT_CACHE", str(tmp_path / "cache"))
    r = _cli(["infer", scene, "--engine", "onnxruntime", "--out", tmp_path / "out", "--generate", "DEM"])
    _one_error(r, 9, "Not a directory")


def test_standard_output_closed_or_full_is_not_a_silent_success(tmp_path):
    _one_line_stderr(_run(["info"], shell_prefix="exec >&-; "), 9, "standard output is closed")
    _one_line_stderr(_run(["info"], stdout=open(os.devnull, "w"), shell_prefix="exec >/dev/full; "), 9,
                     "cannot write to standard output (No space left on device)")


@pytest.mark.parametrize("error", [
    RuntimeError("Exception from src/inference/src/infer_request.cpp: std::bad_alloc"),  # OpenVINO
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),  # torch
    MemoryError(),
])
def test_running_out_of_memory_in_any_engine_is_exit_9(error):
    code, line = command_line_report(error)
    assert code == 9 and line.startswith("out of memory") and "\n" not in line


# --- 4. spec JSON validated field by field ---------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_registered_spec_and_fixture_is_within_the_limits():
    for name in specs.names():
        check_limits(specs.get(name), name)
    for folder in ("copgen-tiny", "copgen-beta-tiny"):
        specs.from_json(FIXTURES / folder / "spec.json")


@pytest.mark.parametrize(("field", "value", "words"), [
    ("num_heads", 0, "num_heads = 0: must be between 1"),
    ("num_heads", 5, "num_heads = 5 does not divide embed_dim"),
    ("embed_dim", 1e7, "embed_dim = 10000000.0: must be a whole number"),
    ("embed_dim", 10_000_000, "embed_dim = 10000000: must be between"),
    ("depth", 1_000_000, "depth = 1000000: must be between"),
    ("latent", -8, "latent channels of DEM_DEM = -8"),
])
def test_an_impossible_spec_json_is_one_line_before_anything_is_built(tmp_path, field, value, words):
    data = json.loads((FIXTURES / "copgen-tiny" / "spec.json").read_text())
    if field == "latent":
        data["latent_shapes"]["DEM_DEM"][0] = value
    else:
        data["denoiser"][field] = value
    (tmp_path / "spec.json").write_text(json.dumps(data))
    _one_error(_cli(["info", "--spec-json", tmp_path / "spec.json"]), 3, words)


# --- 5. every terminating signal cleans up as Ctrl-C does; failed runs leave no work folder -----


def _spawn(args: list) -> subprocess.Popen:
    return subprocess.Popen([*COPGEN_RT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_signals)


def test_sighup_mid_run_removes_temporaries_and_keeps_resumable_tiles(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(300, 300))
    out = tmp_path / "out"
    # 8 steps a tile: the run is still going when the poll sees its first tile, however busy the machine
    args = ["infer", scene, "--generate", "DEM_DEM", "--steps", "8", "--batch-size", "1", "--out", out]
    proc = _spawn(args)
    start = time.monotonic()
    while not list(out.glob(".copgen-work-scene/latents/*.safetensors")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < 180, "timed out"
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # mid-run, whatever the machine's speed
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert err.strip().splitlines()[-1] == "copgen-rt: error: hung up (SIGHUP)", err
    assert not list(out.glob(".copgen-tmp-*")) and not list(out.glob("*.partial*"))
    assert list(out.glob(".copgen-work-scene/latents/*.safetensors"))  # what the rerun resumes from


@pytest.mark.parametrize(("signum", "words"), [(signal.SIGQUIT, "quit (SIGQUIT)"),
                                               (signal.SIGUSR1, "ended by SIGUSR1")])
def test_sigquit_and_sigusr1_are_one_line_and_their_exit_code(tmp_path, signum, words):
    proc = _spawn(["infer", "--out", tmp_path / "o", "-q"])
    caught = 0
    while not caught >> (signum - 1) & 1:  # wait until the handler is installed: before, the signal kills
        assert proc.poll() is None, proc.communicate()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines() == [f"copgen-rt: error: {words}"], err


def test_a_failed_run_without_finished_tiles_leaves_no_work_folder(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(200, 200) * 1e30)
    r = _cli(["infer", scene, "--out", tmp_path / "out", "--steps", "1", "--generate", "DEM"])
    assert r.exit_code == 3, r.output
    left = [p.name for p in (tmp_path / "out").iterdir()]
    assert not [n for n in left if n.startswith((".copgen-work-", ".copgen-tmp-"))], left


# --- 6. plausibility: DEM like S1 and S2; the API as the command line --------------------------


@pytest.mark.parametrize("height", [1e30, -1e6])
def test_an_implausible_dem_condition_is_refused(tmp_path, scene, height):
    dem = write_raster(tmp_path / "dem.tif", np.full((1, 128, 128), height, dtype=np.float32),
                       transform=Affine(10, 0, 500000, 0, -10, 5200000))
    r = _cli(["infer", scene, "--cond", f"DEM={dem}", "--generate", "S1RTC", "--steps", "1",
              "--out", tmp_path / "out"])
    _one_error(r, 3, "DEM_DEM values")
    assert "not plausible (-1000 to 10000 m)" in r.output


@pytest.fixture(scope="module")
def demo():
    return Pipeline.from_pretrained(specs.get("copgen-demo"), demo_weights())


S2 = "S2L2A_B02_B03_B04_B08"
DEMO = specs.get("copgen-demo")


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"conditions": {S2: torch.full((1, 4, 192, 192), 1e30)}}, "are not plausible"),
    ({"conditions": {S2: torch.full((1, 4, 192, 192), 1e6)}, "physical_units": False}, "model-space values"),
    ({"conditions": {"DEM_DEM": torch.full((1, 1, 64, 64), -1e6)}}, "are not plausible"),
    ({"conditions": {"DEM_DEM": torch.full((1, 1, 64, 64), 100.0)},
      "others_noise": lambda call, name: torch.full((1, *DEMO.modality(name).latent_shape), float("nan"))},
     "returned NaN"),
])
def test_the_api_refuses_what_the_command_line_refuses(demo, kwargs, words):
    with pytest.raises(ValueError, match=words):
        demo.generate(generate=["S1RTC_vh_vv"], steps=1, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        Pipeline.from_pretrained(specs.get("copgen-demo"), demo_weights(), device="cuda")


# --- 7. messages ------------------------------------------------------------------------------


def test_a_newline_in_a_path_does_not_split_the_error_line(tmp_path, scene):
    (tmp_path / "a\nb").write_text("")
    r = _cli(["infer", scene, "--out", tmp_path / "a\nb" / "o", "--generate", "DEM"])
    _one_error(r, 9, "a\\nb")
    r = _cli(["infer", tmp_path / "sc\nene.tif", "--out", tmp_path / "out", "--generate", "DEM"])
    _one_error(r, 3, "sc\\nene.tif")


def test_gcp_only_georeferencing_is_reported_as_such(tmp_path):
    from rasterio.control import GroundControlPoint

    path = tmp_path / "gcp.tif"
    gcps = [GroundControlPoint(0, 0, 500000, 5200000), GroundControlPoint(64, 0, 500640, 5200000),
            GroundControlPoint(0, 64, 500000, 5199360)]
    data = smooth_s2(64, 64).astype("uint16")
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": len(data), "dtype": "uint16"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(32633))
        dst.write(data)
    _one_error(_cli(["info", path]), 3, "georeferenced by 3 ground control points only")


def test_a_planted_run_record_lock_is_refused_before_any_scene_runs(tmp_path):
    folder = _two_scenes(tmp_path, 128)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".copgen-run.json.lock").symlink_to(tmp_path / "victim")
    r = _cli(["infer", folder / "*.tif", "--out", out, "--steps", "1", "--generate", "DEM"])
    _one_error(r, 9, "is a symlink: refusing to use it as a lock")
    assert not list(out.glob("*.tif")) and not (tmp_path / "victim").exists()
