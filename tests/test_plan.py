"""The RuntimePlan (`copgen_rt.plan`): decided once, frozen, and what the pipeline and every worker
load without deciding again."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from copgen_rt import Pipeline, plan, specs
from copgen_rt.demo import demo_weights
from copgen_rt.errors import InputError
from copgen_rt.runs.source import PipelineSource

DEMO = specs.get("copgen-demo")


def test_a_plan_is_frozen_picklable_and_says_what_runs_where():
    resolved = plan.resolve(DEMO, "cpu", "torch", "fp32", batch_size=3)
    assert (resolved.device, resolved.engines.denoiser, resolved.engines.vae, resolved.dtype,
            resolved.batch_size, resolved.batch_reason) == ("cpu", "torch", "torch", "fp32", 3, "requested")
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.batch_size = 4  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(resolved)) == resolved  # it travels to Ray workers as it is
    assert resolved.to_json() == {"device": "cpu", "denoiser": "torch", "vae": "torch", "dtype": "fp32",
                                  "vae_dtype": "fp32", "batch_size": 3}
    assert "engine torch (VAEs torch), denoiser precision fp32: requested" in resolved.describe()


def test_the_pipeline_loads_the_plan_without_deciding_again(monkeypatch):
    resolved = plan.resolve(DEMO, "cpu", "torch", "fp32")

    def decided_again(*args, **kwargs):
        raise AssertionError("the engine was chosen again below the plan")

    monkeypatch.setattr(plan, "choose_engine", decided_again)
    monkeypatch.setattr(plan, "resolve", decided_again)
    with pytest.warns(UserWarning):  # the demo's random weights
        pipe = Pipeline.from_pretrained(DEMO, demo_weights(), plan=resolved)
    assert pipe.plan is resolved and pipe.denoiser.name == "torch"
    assert pipe.provenance.engine == "torch fp32 (VAEs torch fp32)"


def test_every_worker_loads_the_same_plan():
    resolved = plan.resolve(DEMO, "cpu", "torch", "fp32", batch_size=2)
    source = pickle.loads(pickle.dumps(PipelineSource.create(DEMO, demo_weights(), None, resolved)))
    with pytest.warns(UserWarning):
        pipeline = Pipeline.from_pretrained(DEMO, demo_weights(), plan=source.plan)
    assert source.plan == resolved
    assert source.provenance(pipeline)["plan"] == resolved.to_json()


def test_one_precision_vocabulary_and_bad_names_refused_before_anything_loads():
    assert plan.DTYPES == ("fp32", "fp16", "bf16", "int8")
    with pytest.raises(InputError, match="--dtype fp64: choose fp32, fp16, bf16, int8"):
        plan.resolve(DEMO, "cpu", dtype="fp64")
    with pytest.raises(InputError, match="unknown engine 'tensorrt'"):
        plan.resolve(DEMO, "cpu", "tensorrt")


def test_the_api_names_the_engine_as_the_command_line_does():
    """`engine=` as `--engine`; the old keyword `backend=` still loads the same, with a warning."""
    pipe = Pipeline.from_pretrained("copgen-demo", demo_weights(), engine="torch", dtype="fp32")
    with pytest.warns(DeprecationWarning, match="engine="):
        old = Pipeline.from_pretrained("copgen-demo", demo_weights(), backend="torch", dtype="fp32")
    assert pipe.plan == old.plan and pipe.plan.engines.denoiser == "torch"
