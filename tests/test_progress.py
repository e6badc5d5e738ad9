"""Progress moves with every network call, even when all tiles share one batch, and logs stay
plain lines when stderr is not a terminal."""

from __future__ import annotations

from click.testing import CliRunner

from copgen_rt import Pipeline, specs
from copgen_rt.cli import main
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


def test_logs_get_plain_lines_not_carriage_returns(tmp_path):
    r = CliRunner().invoke(
        main, ["infer", "--steps", "1", "--generate", "DEM_DEM", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output
    assert "copgen-rt: 9.0/9 tiles (100%)" in r.output  # 3 x 3 Earth-anchored tiles
