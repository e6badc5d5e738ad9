"""The export manifest: what each artifact is, how to feed it, and how well it matches torch."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list  # ints, or "batch" for the dynamic axis


@dataclass
class Component:
    name: str  # "denoiser", "vae_encoder/<vae key>", "vae_decoder/<vae key>"
    file: str  # relative to the export folder
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    precision: str
    parity: dict = field(default_factory=dict)  # {"max_rel_err": x, "batch": b, "runtime": ...}
    sha256: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Component:
        d = dict(d)
        d["inputs"] = [TensorInfo(**t) for t in d["inputs"]]
        d["outputs"] = [TensorInfo(**t) for t in d["outputs"]]
        return cls(**d)


@dataclass
class Manifest:
    format: str  # "onnx" or "tensorrt"
    spec: dict  # copgen_rt.specs.to_dict
    weights: dict  # component -> "file:sha256-prefix"
    random_weights: bool
    opset: int
    batch: list[int]  # [min, opt, max]
    versions: dict
    components: list[Component] = field(default_factory=list)
    tensorrt: dict = field(default_factory=dict)  # build plan / engine info

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"the export has no component {name!r}")

    def save(self, folder: Path) -> Path:
        from copgen_rt.files import write_text

        path = Path(folder) / MANIFEST
        write_text(path, json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        from copgen_rt.errors import CheckpointError
        from copgen_rt.reading import read_json

        path = Path(folder) / MANIFEST
        if not os.path.lexists(path):
            raise CheckpointError(f"{folder}: no {MANIFEST}; not an export folder (made by copgen-rt export)")
        d = read_json(path, error=CheckpointError)
        try:
            d["components"] = [Component.from_dict(c) for c in d.get("components", [])]
            return cls(**d)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{path}: not a valid export manifest ({type(e).__name__}: {e})") from None
