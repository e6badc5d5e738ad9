"""Outputs you can trust: planted links change nothing outside --out, one run per scene, resume
bit for bit after a kill inside a batch, damaged outputs and latents are made again, no exit 0
with non-finite outputs, environment errors and signals in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from scene_helpers import default_signals, interrupt_after_tiles, smooth_s2, write_raster

from copgen_rt import Pipeline, specs
from copgen_rt.cli import main
from copgen_rt.demo import demo_weights
from copgen_rt.errors import OutputBusyError, SceneError
from copgen_rt.files import exclusive
from copgen_rt.scenes import run as run_module
from copgen_rt.scenes import sampling, state
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.state import DamagedFileWarning

DEMO = specs.get("copgen-demo")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    return Pipeline.from_pretrained(DEMO, demo_weights())


def _cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error(output: str, code_words: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("copgen-rt: error: ")]
    assert len(errors) == 1 and code_words in errors[0], output
    assert not any(line.lstrip().startswith(("Traceback", "File ")) for line in lines), output


def _read_all(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(folder.glob("*.tif")):
        with rasterio.open(p) as src:
            out[p.name] = src.read()
    return out


# --- planted links --------------------------------------------------------------------------


def test_planted_symlinks_change_nothing_outside_out(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(200, 200))
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    stem, outputs = "scene", ["DEM_DEM", "S1RTC_VV_VH"]  # the files: bands in stored order
    planted = [f".{stem}_{m}.tif.partial.tif" for m in outputs] \
        + [f".{stem}_{m}.tif.cog.tmp" for m in outputs] \
        + [f".{stem}_tiles.json.tmp", ".copgen-run.json.lock", ".copgen-run.json.tmp"]
    for name in planted:
        (out / name).symlink_to(victim)
    r = _cli(["infer", scene, "--generate", "DEM_DEM,S1RTC_vh_vv", "--steps", "1", "--out", out, "-q"])
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious" and list(victim_dir.iterdir()) == []
    for m in outputs:
        final = out / f"{stem}_{m}.tif"
        assert final.is_file() and not final.is_symlink()
    assert all((out / name).is_symlink() for name in planted)  # left alone, never written through
    assert not list(out.glob(".copgen-tmp-*"))

    # final names that are links: replaced (with --overwrite), never followed
    (out / f"{stem}_DEM_DEM.tif").unlink()
    (out / f"{stem}_DEM_DEM.tif").symlink_to(victim)
    r = _cli(["infer", scene, "--generate", "DEM_DEM,S1RTC_vh_vv", "--steps", "1", "--out", out, "-q"])
    assert r.exit_code == 5, r.output  # not ours: refused without --overwrite
    r = _cli(["infer", scene, "--generate", "DEM_DEM,S1RTC_vh_vv", "--steps", "1", "--out", out, "-q",
              "--overwrite"])
    assert r.exit_code == 0 and victim.read_text() == "precious", r.output
    assert not (out / f"{stem}_DEM_DEM.tif").is_symlink()

    # a work folder or a lock that is a link: refused in one line, nothing written through it
    for name in (f".copgen-work-{stem}", f".copgen-lock-{stem}"):
        fresh = tmp_path / f"out-{name}"
        fresh.mkdir()
        (fresh / name).symlink_to(victim_dir if "work" in name else victim)
        r = _cli(["infer", scene, "--generate", "DEM_DEM", "--steps", "1", "--out", fresh, "-q"])
        assert r.exit_code == 9, r.output
        _one_error(r.output, "symlink")
        assert list(victim_dir.iterdir()) == [] and victim.read_text() == "precious"


def test_a_fifo_under_an_output_name_is_refused_not_opened(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(200, 200))
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "scene_DEM_DEM.tif")
    r = _cli(["infer", scene, "--generate", "DEM_DEM", "--steps", "1", "--out", out, "-q"])
    assert r.exit_code == 5, r.output
    _one_error(r.output, "scene_DEM_DEM.tif exists")


# --- one run per output ---------------------------------------------------------------------


def test_a_scene_held_by_another_run_fails_at_once(tmp_path, demo):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(200, 200))
    job = SceneJob(DEMO, [open_input(scene)], tmp_path / "out", SceneOptions(steps=1, generate=("DEM_DEM",)))
    job.out_dir.mkdir()
    with exclusive(job.lock_path, "the other run"):
        with pytest.raises(OutputBusyError, match="being written by another run"):
            run_scene(job, demo)
        r = _cli(["infer", scene, "--generate", "DEM_DEM", "--steps", "1", "--out", job.out_dir, "-q"])
        assert r.exit_code == 10, r.output
        _one_error(r.output, "being written by another run")
    assert run_scene(job, demo).tiles == len(job.plan)


def _spawn(args: list[str], preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def child() -> None:
        default_signals()
        if preexec is not None:
            preexec()

    return subprocess.Popen([sys.executable, "-m", "copgen_rt", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, preexec_fn=child)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)


def test_two_identical_runs_at_once_give_one_result_and_one_clear_message(tmp_path):
    """The first run is stopped (SIGSTOP) once it is working, so the second surely meets it."""
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(300, 300))
    out = tmp_path / "out"
    # 8 steps a tile: the run is still going when the poll sees its first tile, however busy the machine
    args = ["infer", scene, "--generate", "DEM_DEM", "--steps", "8", "--batch-size", "1", "--out", out, "-q"]
    first = _spawn(args)
    _wait_for(lambda: (out / ".copgen-work-scene").exists(), first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = _spawn(args)
        err2 = second.communicate(timeout=300)[1]
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=300)
    assert second.returncode == 10, err2
    _one_error(err2, "being written by another run")
    assert first.returncode == 0, err1
    with rasterio.open(out / "scene_DEM_DEM.tif") as src:
        assert np.isfinite(src.read(1)).all()


# --- resume bit for bit ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_resume_after_a_kill_inside_a_batch_is_bit_identical(tmp_path, monkeypatch, dtype):
    if dtype == "bf16" and not torch.backends.mkldnn.is_available():
        pytest.skip("no bf16 matmuls in this torch build")
    pipe = Pipeline.from_pretrained(DEMO, demo_weights(), dtype=dtype)
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(400, 300))  # 6 tiles
    make = lambda out: SceneJob(DEMO, [open_input(scene)], out,  # noqa: E731
                                SceneOptions(steps=2, batch_size=4, generate=("DEM_DEM", "S1RTC_vh_vv")))
    fresh = _read_all(run_scene(make(tmp_path / "fresh"), pipe).outputs[0].parent)

    job = make(tmp_path / "out")
    save = state.save_latents
    saved = []

    def killed_after_two_saves(path, latents):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(path)
        save(path, latents)

    monkeypatch.setattr(sampling, "save_latents", killed_after_two_saves)
    with pytest.raises(KeyboardInterrupt):
        run_scene(job, pipe)
    monkeypatch.setattr(sampling, "save_latents", save)
    assert len(list(job.work_dir.glob("latents/*.safetensors"))) == 2  # half of the first batch
    resumed = run_scene(job, pipe)
    again = _read_all(job.out_dir)
    assert again.keys() == fresh.keys()
    for name in fresh:
        assert np.array_equal(again[name], fresh[name], equal_nan=True), name
    assert resumed.resumed == 0  # the half-saved batch was sampled again, whole


# --- reruns check what is on disk ---------------------------------------------------------


def test_a_truncated_output_is_made_again(tmp_path, demo):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(250, 250))
    make = lambda: SceneJob(DEMO, [open_input(scene)], tmp_path / "out",  # noqa: E731
                            SceneOptions(steps=1, generate=("DEM_DEM", "S1RTC_vh_vv")))
    first = run_scene(make(), demo)
    before = _read_all(tmp_path / "out")
    dem = first.outputs[0]
    dem.write_bytes(dem.read_bytes()[:5000])
    with pytest.warns(DamagedFileWarning, match="scene_DEM_DEM.tif: changed since this run wrote it"):
        again = run_scene(make(), demo)
    assert not again.already_complete
    after = _read_all(tmp_path / "out")
    assert all(np.array_equal(after[k], before[k], equal_nan=True) for k in before)
    assert run_scene(make(), demo).already_complete


@pytest.mark.parametrize("damage", ["nan", "truncated", "flipped"])
def test_damaged_cached_latents_are_recomputed(tmp_path, demo, damage):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(400, 300))
    make = lambda out: SceneJob(DEMO, [open_input(scene)], out,  # noqa: E731
                                SceneOptions(steps=2, batch_size=2, generate=("DEM_DEM",)))
    job = make(tmp_path / "out")
    stop_after_two_batches = interrupt_after_tiles(4)  # batches of 2: the first two are saved

    with pytest.raises(KeyboardInterrupt):
        run_scene(job, demo, progress=stop_after_two_batches)
    cached = sorted(job.work_dir.glob("latents/*.safetensors"))[0]
    if damage == "nan":  # a valid file with a valid checksum, holding NaN
        latents = state.load_latents(cached, job)
        state.save_latents(cached, {k: torch.full_like(v, float("nan")) for k, v in latents.items()})
    elif damage == "truncated":
        cached.write_bytes(cached.read_bytes()[:20])
    else:
        raw = bytearray(cached.read_bytes())
        raw[-3] ^= 0xFF
        cached.write_bytes(bytes(raw))
    with pytest.warns(DamagedFileWarning, match=f"cached latents {cached.name}"):
        run_scene(job, demo)
    fresh = run_scene(make(tmp_path / "fresh"), demo)
    assert _read_all(job.out_dir).keys() == _read_all(fresh.outputs[0].parent).keys()
    for name, values in _read_all(job.out_dir).items():
        assert np.isfinite(values).all() and np.array_equal(values, _read_all(tmp_path / "fresh")[name])


def test_quicklooks_are_added_to_a_complete_run_without_running_it(tmp_path, demo, monkeypatch):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(200, 200))
    make = lambda quicklook: SceneJob(DEMO, [open_input(scene)], tmp_path / "out",  # noqa: E731
                                      SceneOptions(steps=1, generate=("DEM_DEM",), quicklook=quicklook))
    run_scene(make(False), demo)
    monkeypatch.setattr(run_module, "batch_latents", lambda *a: pytest.fail("sampled again"))
    result = run_scene(make(True), demo)
    assert result.already_complete and [p.name for p in result.added] == ["scene_DEM_DEM.png"]
    assert (tmp_path / "out" / "scene_DEM_DEM.png").is_file()
    record = json.loads((tmp_path / "out" / "scene_tiles.json").read_text())["outputs"]
    assert set(record) == {"scene_DEM_DEM.tif", "scene_DEM_DEM.png", "scene_item.json"}  # the STAC Item too
    assert run_scene(make(True), demo).added == []


# --- no exit 0 with non-finite outputs ------------------------------------------------------


def test_values_the_model_cannot_take_are_an_error_not_nan_rasters(tmp_path, demo, monkeypatch):
    data = smooth_s2(200, 200).astype(np.float32)
    data[:, :50, :50] = 1e30
    scene = write_raster(tmp_path / "huge.tif", data)
    r = _cli(["infer", scene, "--generate", "DEM_DEM", "--steps", "1", "--out", tmp_path / "o1", "-q"])
    assert r.exit_code == 3, r.output
    _one_error(r.output, "huge.tif: S2L2A_")
    assert "are no Sentinel-2 DNs" in r.output and not list((tmp_path / "o1").glob("*.tif"))
    r = _cli(["infer", write_raster(tmp_path / "ok.tif", smooth_s2(200, 200)), "--s2-offset", "1e30",
              "--generate", "DEM_DEM", "--steps", "1", "--out", tmp_path / "o2", "-q"])
    assert r.exit_code == 3, r.output
    _one_error(r.output, "are no Sentinel-2 DNs")

    # whatever gets past the inputs: a non-finite output is an error too, never a product
    from copgen_rt import conditions
    from copgen_rt import pipeline as pipeline_module
    from copgen_rt.scenes import tile_inputs

    monkeypatch.setattr(tile_inputs, "_check_plausible", lambda *a: None)
    monkeypatch.setattr(pipeline_module, "check_plausible", lambda *a: None)  # the API's own checks
    monkeypatch.setattr(conditions, "check_model_space", lambda *a: None)
    job = SceneJob(DEMO, [open_input(scene)], tmp_path / "o3", SceneOptions(steps=1, generate=("DEM_DEM",)))
    nan_decoder = type(demo)(demo.spec, demo.denoiser, demo._vae_loader, demo.provenance, demo.device)
    nan_decoder.decode = lambda latents, physical_units=True: {n: z * float("nan") for n, z in
                                                              demo.decode(latents, physical_units).items()}
    with pytest.raises(SceneError, match=r"tile r0000c0000: the generated DEM_DEM is not finite"):
        run_scene(job, nan_decoder)
    assert not list((tmp_path / "o3").glob("*.tif"))


def test_a_band_without_data_and_a_centimetre_scene_are_refused(tmp_path):
    data = smooth_s2(200, 200)
    data[3] = -9999
    no_red = write_raster(tmp_path / "no_red.tif", data, nodata=-9999)
    with pytest.raises(SceneError, match=r"no_red.tif: band 4 .* has no valid pixel"):
        open_input(no_red)
    tiny = write_raster(tmp_path / "tiny.tif", smooth_s2(224, 224),
                        transform=Affine(0.01, 0, 500000, 0, -0.01, 5200000))
    with pytest.raises(SceneError, match=r"tiny.tif: covers only 2.24 x 2.24 m"):
        SceneJob(DEMO, [open_input(tiny)], tmp_path / "o", SceneOptions(steps=1))


def test_implausible_georeferencing_names_the_file(tmp_path):
    for name, transform in [("far.tif", Affine(10, 0, 1e15, 0, -10, 5e6)),
                            ("nan.tif", Affine(10, 0, float("nan"), 0, -10, 5e6))]:
        path = write_raster(tmp_path / name, smooth_s2(50, 50), transform=transform)
        r = _cli(["info", path])
        assert r.exit_code == 3, r.output
        _one_error(r.output, f"{name}: its georeferencing is not plausible")


# --- environment errors, before any work ----------------------------------------------------


def test_an_out_folder_that_cannot_be_made_fails_before_loading(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded weights"))
    r = _cli(["infer", "--out", blocker / "sub", "-q"])
    assert r.exit_code == 9, r.output
    _one_error(r.output, f"cannot write {blocker / 'sub'}")


def _small_files() -> None:
    """RLIMIT_FSIZE makes writes fail as a full disk does (EFBIG instead of ENOSPC)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_full_disk_is_one_line(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(200, 200))
    out = tmp_path / "out"
    # eager torch writes no engine cache: the first large file is an output
    proc = _spawn(["infer", scene, "--generate", "S1RTC_vh_vv", "--steps", "1", "--backend", "torch",
                   "--out", out, "-q"], preexec=_small_files)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 9, err
    _one_error(err, "cannot write")
    assert "scene_S1RTC_VV_VH.tif" in err and ("no space left" in err or "disk full" in err), err
    assert "_tiffSeekProc" not in err and "TIFFAppendToStrip" not in err, err
    assert not list(out.glob(".copgen-tmp-*"))


def test_a_full_disk_under_the_engine_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("COPGEN_RT_CACHE", str(tmp_path / "cache"))  # empty: the first run exports
    proc = _spawn(["infer", "--backend", "openvino", "--out", tmp_path / "out", "-q"],
                  preexec=_small_files)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 9, err
    _one_error(err, f"cannot write {tmp_path / 'cache' / 'onnx'}")
    assert "no space left" in err, err


# --- signals ---------------------------------------------------------------------------------


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    proc = _spawn(["infer", "--out", tmp_path / "o", "-q"])
    time.sleep(0.3)  # inside `import torch`
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["copgen-rt: error: interrupted"], err


def test_sigterm_mid_run_removes_temporaries_and_the_rerun_resumes(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", smooth_s2(300, 300))
    out = tmp_path / "out"
    # 8 steps a tile: the run is still going when the poll sees its first tile, however busy the machine
    args = ["infer", scene, "--generate", "DEM_DEM", "--steps", "8", "--batch-size", "1", "--out", out, "-q"]
    proc = _spawn(args)
    _wait_for(lambda: list(out.glob(".copgen-work-scene/latents/*.safetensors")), proc)
    proc.send_signal(signal.SIGSTOP)  # mid-run, whatever the machine's speed
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "copgen-rt: error: terminated (SIGTERM)", err
    assert not list(out.glob(".copgen-tmp-*")) and not list(out.glob("*.partial*"))
    assert not (out / "scene_DEM_DEM.tif").exists()
    r = _cli(args[:-1])
    assert r.exit_code == 0 and "resumed" in r.output, r.output


def test_a_fifo_as_the_scene_is_refused(tmp_path):
    fifo = tmp_path / "scene.tif"
    os.mkfifo(fifo)
    r = _cli(["info", fifo])
    assert r.exit_code == 3, r.output
    _one_error(r.output, "not a regular file")


# --- smaller ones ----------------------------------------------------------------------------


def test_export_and_weights_problems_are_checkpoint_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _cli(["infer", "--export", tmp_path / "empty", "-q"])
    assert r.exit_code == 4, r.output
    _one_error(r.output, "not an export folder")

    weights = tmp_path / "w"
    r = _cli(["make-random-weights", "--model", "copgen-demo", "--out", weights])
    assert r.exit_code == 0, r.output
    manifest = json.loads((weights / "weights.json").read_text())
    manifest["files"]["denoiser"]["path"] = "elsewhere.safetensors"  # lists another file than the one found
    (weights / "weights.json").write_text(json.dumps(manifest))
    r = _cli(["infer", "--model", "copgen-demo", "--weights", weights, "--out", tmp_path / "o", "-q"])
    assert r.exit_code == 4, r.output
    _one_error(r.output, "not listed in")


def test_a_pickle_with_code_is_refused_in_one_line(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, path)
    from copgen_rt.errors import CheckpointError
    from copgen_rt.weights import read_checkpoint

    with pytest.raises(CheckpointError, match=r"refused, the pickle holds more than weights \(it would run "
                                              r"posix.system\)"):
        read_checkpoint(path)
    proc = subprocess.run([sys.executable, "-W", "always", "-c",
                           "from copgen_rt.weights import read_checkpoint as r\n"
                           f"try: r({str(path)!r})\nexcept Exception: pass"],
                          capture_output=True, text=True, cwd=ROOT)
    assert "UserWarning" not in proc.stderr and "pwned" not in proc.stdout, proc.stderr


def test_api_arguments_are_checked(demo):
    with pytest.raises(ValueError, match="seed must be an int or a sequence of ints"):
        demo.generate(["DEM_DEM"], steps=1, seed="abc", decode=False)
    with pytest.raises(ValueError, match="seed must be an int"):
        demo.generate(["DEM_DEM"], steps=1, seed=[1.5], decode=False)
    s2 = torch.zeros(1, 4, 192, 192)
    for dtype in (torch.bool, torch.complex64):
        with pytest.raises(ValueError, match=f"dtype {dtype} are not physical values"):
            demo.generate(["DEM_DEM"], {"S2L2A_B02_B03_B04_B08": s2.to(dtype)}, steps=1, decode=False)
    with pytest.raises(ValueError, match="steps must be a whole number from 1 to 1000"):
        demo.generate(["DEM_DEM"], steps=5000, decode=False)
    with pytest.raises(ValueError, match="device 'tpu'"):
        Pipeline.from_pretrained(DEMO, demo_weights(), device="tpu")
