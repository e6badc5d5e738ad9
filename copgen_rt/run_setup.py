"""Which model a command runs and where, as its options name it (--model/--spec-json, --weights
or --engine, --backend, --device, --dtype): the spec, the device and engines (combinations that
cannot work refused before anything loads) and the loaded pipeline with its notes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from copgen_rt import demo, specs
from copgen_rt.device import Choice, EngineChoice, choose, choose_engine
from copgen_rt.driver import PipelineSource, say
from copgen_rt.pipeline import Pipeline
from copgen_rt.tuning import Tuning, cached, measured_choice
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
    engine: str | None = None  # an export folder instead of weights
    backend: str | None = None
    device: str | None = None
    dtype: str | None = None

    def check(self) -> tuple[Choice, EngineChoice | None]:
        """Fail on options that cannot go together, before anything loads; the device choice and
        the engines (None with an export)."""
        if self.engine and self.weights:
            raise ValueError("give --weights or --engine, not both")
        if self.engine and (self.model or self.spec_json):
            raise ValueError("--engine carries the spec it was exported with: drop --model/--spec-json")
        if self.model is not None and self.spec_json is None:
            specs.get(self.model)  # an unknown name fails here, before anything else
        if self.weights is None and self.engine is None and self.model not in (None, "copgen-demo"):
            raise ValueError(f"--model {self.model} needs --weights (a directory or a hub id)")
        if self.engine and (self.backend or self.dtype):
            raise ValueError("--engine runs the export's own engine and precision: drop --backend/--dtype")
        choice = choose(self.device, self.dtype)
        return choice, None if self.engine else choose_engine(choice.device, self.backend, self.dtype)

    def measured(self, spec: specs.ModelSpec, engines: EngineChoice | None
                 ) -> tuple[EngineChoice | None, Tuning | None]:
        """The engines with "auto"'s denoiser the fastest measured on this CPU kind (measured
        now, before the weights load, where it was not yet), and the measurement."""
        if engines is None:
            return None, None
        if engines.candidates and cached(spec, engines.dtype, engines.candidates) is None:
            if not self.engine:  # missing or mismatched weights fail before a minute of measuring
                resolve_weights(spec, self.weights_or_demo(spec))
            say(f"measuring which CPU engine runs {spec.name} fastest here "
                f"({', '.join(engines.candidates)}), once for this CPU kind")
        return measured_choice(spec, engines)

    def spec(self) -> specs.ModelSpec:
        """The spec an export was made with, else --model/--spec-json (demo without weights)."""
        if self.engine:
            from copgen_rt.export.manifest import Manifest

            return specs.from_dict(Manifest.load(Path(self.engine)).spec)
        return resolve_spec(self.model or ("copgen-demo" if self.weights is None else "copgen-base"),
                            self.spec_json)

    def weights_or_demo(self, spec: specs.ModelSpec) -> str:
        """--weights, or the demo model's for the demo spec; other specs need --weights."""
        if self.weights is None and spec.name != "copgen-demo":
            raise ValueError(f"{spec.name} needs --weights (a directory or a hub id)")
        return self.weights or demo.demo_weights()

    def load(self, spec: specs.ModelSpec, choice: Choice, engines: EngineChoice | None) -> Pipeline:
        """The pipeline on the chosen device and engines, saying what the user must know."""
        if self.engine:
            pipeline = Pipeline.from_export(self.engine, device=choice.device)
        else:
            assert engines is not None  # `check` chose them for every run from weights
            weights = self.weights_or_demo(spec)
            if engines.dtype == "int8":
                say("int8: a model's first int8 run calibrates and quantizes its denoiser "
                    "(minutes at copgen-base size); later runs load it from the cache")
            pipeline = Pipeline.from_pretrained(spec, weights, device=choice.device, dtype=engines.dtype,
                                                backend={"denoiser": engines.denoiser, "vae": engines.vae})
        say_if_random(pipeline.is_random)
        return pipeline

    def source(self, spec: specs.ModelSpec) -> PipelineSource:
        """How every worker of a many-scene run loads the pipeline."""
        weights = None if self.engine else self.weights_or_demo(spec)
        return PipelineSource.create(spec, weights, self.engine, self.backend, self.device, self.dtype)
