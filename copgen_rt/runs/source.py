"""How every worker of a many-scene run loads the pipeline: the spec, the weights or export and
the one RuntimePlan, picklable for Ray; and the provenance recorded with every scene."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from copgen_rt import __version__, specs
from copgen_rt.errors import CheckpointError
from copgen_rt.pipeline import Pipeline
from copgen_rt.plan import RuntimePlan
from copgen_rt.weights import RandomWeightsWarning, file_sha256, resolve_weights


@dataclass(frozen=True)
class PipelineSource:
    """How to load the pipeline, picklable so that every Ray worker loads its own copy of the same
    plan."""

    spec: dict  # specs.to_dict (ModelSpec itself does not pickle)
    weights: str | None  # a weights directory or hub id; None with an export
    export: str | None
    plan: RuntimePlan
    software: str = f"copgen-rt {__version__}"  # the driver's: a worker of another version refuses

    @classmethod
    def create(cls, spec: specs.ModelSpec, weights: str | None, export: str | None, plan: RuntimePlan
               ) -> PipelineSource:
        local = lambda p: str(Path(p).absolute()) if p and Path(p).exists() else p  # noqa: E731
        return cls(specs.to_dict(spec), local(weights), local(export), plan)

    def load(self) -> Pipeline:
        """The pipeline, without its RandomWeightsWarning: the driver says so once for the run."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            if self.export:
                return Pipeline.from_export(self.export, device=self.plan.device)
            return Pipeline.from_pretrained(specs.from_dict(self.spec), self.weights, plan=self.plan)

    def weight_files(self) -> dict[str, str]:
        """Every weight file the pipeline may load (not for an export), found without loading."""
        if self.weights is None:
            raise ValueError("a pipeline source needs weights or an export")
        found = resolve_weights(specs.from_dict(self.spec), self.weights)
        if found.denoiser is None:
            raise CheckpointError(f"{self.weights}: no denoiser checkpoint")
        return {"denoiser": str(found.denoiser), **{f"vae/{k}": str(p) for k, p in found.vaes.items()}}

    @staticmethod
    def weight_hashes(files: dict[str, str]) -> dict[str, str]:
        return {k: file_sha256(Path(p))[:16] for k, p in sorted(files.items())}

    def provenance(self, pipeline: Pipeline) -> dict:
        """Model and hashes of every weight file the pipeline may load (hashed once per run)."""
        files = dict(pipeline.provenance.files) if self.export else self.weight_files()
        return {
            "model": pipeline.spec.name,
            "software": f"copgen-rt {__version__}",
            "weights": self.weight_hashes(files),
            "random_weights": pipeline.is_random,
            "plan": self.plan.to_json(),
            # the run identity's parts (copgen_rt.scenes.state.run_key), as a single-scene run has them
            "files": dict(pipeline.provenance.files),
            "engine": pipeline.provenance.engine,
        }
