"""Which model a command runs and where, as its options name it (--model/--spec-json, --weights
or --export, --engine, --device, --dtype): the spec, the RuntimePlan (combinations that cannot
work refused before anything loads) and the loaded pipeline with its notes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from copgen_rt import demo, device, specs
from copgen_rt.pipeline import Pipeline
from copgen_rt.plan import EngineChoice, RuntimePlan, resolve
from copgen_rt.runs.report import say
from copgen_rt.runs.source import PipelineSource
from copgen_rt.weights import resolve_weights


def resolve_spec(model: str, spec_json: str | None) -> specs.ModelSpec:
    """A custom spec.json, else the registered spec `model`."""
    if spec_json:
        return specs.from_json(spec_json)
    return specs.get(model)


def say_if_random(random: bool) -> None:
    """The RANDOM WEIGHTS line, for a run on random weights."""
    if random:
        say("RANDOM WEIGHTS: outputs are synthetic, not predictions (pass --weights for a real model)")


@dataclass(frozen=True)
class ModelOptions:
    """The model options of `infer`, `fill`, `info` and `export`; None where not given."""

    model: str | None = None
    spec_json: str | None = None
    weights: str | None = None  # a weights directory or hub id; None: the demo model's
    export: str | None = None  # an export folder of `copgen-rt export` instead of weights
    engine: str | None = None  # an engine name, or auto
    device: str | None = None
    dtype: str | None = None

    def check(self) -> None:
        """Fail on options that cannot go together, before anything loads."""
        if self.export and self.weights:
            raise ValueError("give --weights or --export, not both")
        if self.export and (self.model or self.spec_json):
            raise ValueError("--export carries the spec it was exported with: drop --model/--spec-json")
        if self.model is not None and self.spec_json is None:
            specs.get(self.model)  # an unknown name fails here, before anything else
        if self.weights is None and self.export is None and self.model not in (None, "copgen-demo"):
            raise ValueError(f"--model {self.model} needs --weights (a directory or a hub id)")
        if self.export and (self.engine or self.dtype):
            raise ValueError("--export runs the export's own engine and precision: drop --engine/--dtype")

    def plan(self, spec: specs.ModelSpec, batch_size: int | None = None, measure: bool = True) -> RuntimePlan:
        """The run's RuntimePlan. `measure`: "auto" measures the CPU engines now where this CPU kind
        has not been measured yet (after checking that the weights exist: missing or mismatched
        weights fail before a minute of measuring), saying so."""
        if self.export:
            from copgen_rt.export.manifest import Manifest

            manifest = Manifest.load(Path(self.export))
            chosen = device.choose(self.device)
            engines = EngineChoice(manifest.format, manifest.format, "fp32", "the export's own engine")
            batch = batch_size or device.memory_batch_limit(spec, chosen.device)
            return RuntimePlan(chosen.device, chosen.hardware, engines, "fp32", batch,
                               "requested" if batch_size else "the most the free memory allows")
        plan = resolve(spec, self.device, self.engine, self.dtype, batch_size=batch_size, measure=False)
        if measure and not plan.measured:
            resolve_weights(spec, self.weights_or_demo(spec))
            say(f"measuring which CPU engine runs {spec.name} fastest here "
                f"({', '.join(plan.engines.candidates)}), once for this CPU kind")
            plan = resolve(spec, self.device, self.engine, self.dtype, batch_size=batch_size)
        return plan

    def spec(self) -> specs.ModelSpec:
        """The spec an export was made with, else --model/--spec-json (demo without weights)."""
        if self.export:
            from copgen_rt.export.manifest import Manifest

            return specs.from_dict(Manifest.load(Path(self.export)).spec)
        return resolve_spec(self.model or ("copgen-demo" if self.weights is None else "copgen-base"),
                            self.spec_json)

    def weights_or_demo(self, spec: specs.ModelSpec) -> str:
        """--weights, or the demo model's for the demo spec; other specs need --weights."""
        if self.weights is None and spec.name != "copgen-demo":
            raise ValueError(f"{spec.name} needs --weights (a directory or a hub id)")
        return self.weights or demo.demo_weights()

    def load(self, spec: specs.ModelSpec, plan: RuntimePlan) -> Pipeline:
        """The pipeline the plan names, saying what the user must know."""
        if self.export:
            pipeline = Pipeline.from_export(self.export, device=plan.device)
        else:
            if plan.dtype == "int8":
                say("int8: a model's first int8 run calibrates and quantizes its denoiser "
                    "(minutes at copgen-base size); later runs load it from the cache")
            pipeline = Pipeline.from_pretrained(spec, self.weights_or_demo(spec), plan=plan)
        say_if_random(pipeline.is_random)
        return pipeline

    def source(self, spec: specs.ModelSpec, plan: RuntimePlan) -> PipelineSource:
        """How every worker of a many-scene run loads the pipeline: the same plan everywhere."""
        weights = None if self.export else self.weights_or_demo(spec)
        return PipelineSource.create(spec, weights, self.export, plan)
