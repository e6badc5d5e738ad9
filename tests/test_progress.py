"""Progress moves with every network call, even when all tiles share one batch, and logs stay
plain lines when stderr is not a terminal."""

from __future__ import annotations

import logging
import re
from unittest.mock import patch

from click.testing import CliRunner

from copgen_rt import Pipeline, specs
from copgen_rt.cli import main
from copgen_rt.cli.progress import LineProgress, describe_tiles
from copgen_rt.demo import default_scene
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene


def test_the_bundled_chip_reports_every_network_call(tmp_path):
    demo = Pipeline.demo()
    job = SceneJob(specs.get("copgen-demo"), [open_input(default_scene())], tmp_path / "out",
                   SceneOptions(steps=3, batch_size=9, generate=("DEM_DEM",)))
    assert len(job.plan) == 9  # one batch: 3 x 3 Earth-anchored tiles touch the 2.24 km chip
    reports: list[float] = []
    run_scene(job, demo, progress=reports.append)
    assert len(reports) == 3 and abs(sum(reports) - len(job.plan)) < 1e-9


def test_logs_get_plain_lines_whole_tiles_and_every_phase(tmp_path):
    """Plain lines; whole tile counts; the 100% line once, when sampling ends; decoding and
    writing with lines of their own; a rerun with nothing to do prints no tile count."""
    # the scene's own tiling: 4 tiles (the Earth-anchored grid gives the chip 9; tested elsewhere)
    args = ["infer", "--steps", "1", "--generate", "DEM_DEM,LULC", "--batch-size", "2", "--engine", "torch",
            "--tiling", "scene", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output
    assert not re.search(r"\d\.\d+/4 tiles", r.output), r.output
    lines = r.output.splitlines()
    assert len([line for line in lines if "4/4 tiles sampled (100%)" in line]) == 1, r.output
    phases = [line for line in lines if line.endswith(" ...") or ": done in " in line or "outputs: " in line]
    assert "copgen-rt: decoding and blending tiles 1-2 of 4 ..." in phases, r.output
    assert "copgen-rt: decoding and blending tiles 3-4 of 4 ..." in phases, r.output
    assert "copgen-rt: writing outputs: 2/2" in lines, r.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "already complete" in again.output, again.output
    assert "tiles sampled" not in again.output, again.output
    assert "copgen-rt: loading the copgen-demo denoiser" in again.output  # a phase, said
    quiet = CliRunner().invoke(main, [*args, "-q"])
    assert quiet.exit_code == 0 and "copgen-rt: loading" not in quiet.output, quiet.output


def test_line_progress_counts_whole_tiles():
    lines = []
    progress = LineProgress(4, interval=1e9)
    progress.clock, progress.start = lambda: 0.0, 0.0
    with patch("click.echo", lambda text, err: lines.append(text)), progress:
        for _ in range(6):
            progress(4 / 6)  # fractions of a batch of 4 tiles, as network calls finish
    assert lines == ["copgen-rt: 4/4 tiles sampled (100%), 0 s"]  # at once, and not again at the end
    assert describe_tiles(1.8, 4) == "1/4 tiles sampled (45%)"
    with patch("click.echo", lambda text, err: lines.append(text)), LineProgress(4):
        pass  # nothing sampled (a complete run): no "0/4"
    assert len(lines) == 1


def test_engine_measurement_says_so(monkeypatch, caplog):
    """The measurement (minutes with torch-compile) is a phase the command line prints."""
    from copgen_rt import tuning

    measured = tuning.Tuning("torch", {"torch": 0.1}, {1: 0.1}, {})
    monkeypatch.setattr(tuning, "cached", lambda *a: None)
    monkeypatch.setattr(tuning, "measure", lambda *a: measured)
    monkeypatch.setattr(tuning, "write_text", lambda *a: None)
    with caplog.at_level(logging.INFO, logger="copgen_rt.phases"):
        assert tuning.tuned(specs.get("copgen-demo"), "fp32", ("torch", "openvino")) is measured
    assert [r.getMessage() for r in caplog.records] == [
        "measuring the CPU engines torch, openvino for copgen-demo fp32 on this CPU kind (once; cached) ..."]
