"""One scene job from the command line, shared by `infer` and `fill`: the job planned before
anything is measured (bad options fail at once), the RuntimePlan, checks before loading, the
lock, progress."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt import specs
from copgen_rt.cli.progress import progress_bar
from copgen_rt.options import ModelOptions
from copgen_rt.plan import RuntimePlan
from copgen_rt.scenes.job import SceneJob, SceneRequest
from copgen_rt.scenes.run import SceneResult


def planned_job(request: SceneRequest, spec: specs.ModelSpec, scene: str, p: dict, model: ModelOptions
                ) -> tuple[SceneJob, RuntimePlan]:
    """The scene's job and the run's plan. The job is planned once before anything is measured,
    so that bad options fail at once, and again where the measured batch size differs."""
    plan = model.plan(spec, p["batch_size"], measure=False)
    job = request.job(spec, scene, p["conds"], Path(p["out"]), plan.batch_size)
    if plan.measured:
        return job, plan
    measured = model.plan(spec, p["batch_size"])
    if measured.batch_size != plan.batch_size:
        job = request.job(spec, scene, p["conds"], Path(p["out"]), measured.batch_size)
    return job, measured


def run_scene_job(job: SceneJob, model: ModelOptions, plan: RuntimePlan, quiet: bool, verbose: bool
                  ) -> SceneResult:
    from copgen_rt.describe import describe_plan
    from copgen_rt.files import check_writable
    from copgen_rt.scenes.run import run_scene
    from copgen_rt.scenes.state import check_outputs, scene_lock

    check_writable(job.out_dir)  # before loading any weights
    check_outputs(job)
    job.check_memory()
    with scene_lock(job):  # a second run of the same scene fails here, before loading anything
        pipeline = model.load(job.spec, plan)
        if verbose:
            click.echo(plan.describe(), err=True)
            click.echo(describe_plan(job), err=True)
        with progress_bar(len(job.plan), quiet) as bar:
            result = run_scene(job, pipeline, progress=bar, locked=True)
    if not quiet and result.already_complete:
        added = f"; added {', '.join(p.name for p in result.added)}" if result.added else ""
        click.echo("already complete: every output exists from the same settings (--overwrite to "
                   f"run again){added}; outputs:", err=True)
    return result
