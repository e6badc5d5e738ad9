"""The model's STAC MLM Item (Machine Learning Model extension, through pystac's `mlm` extension):
what it takes and gives per modality (bands, shapes, data types, the processing that scales the
values), its artifacts (weights with their checksums, ONNX exports) and accelerators;
`copgen-rt info --mlm ITEM.json` writes it (docs/chains.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pystac
import torch
from pystac.extensions import mlm

from copgen_rt.files import file_sha256, write_text
from copgen_rt.loading import pretrained_files
from copgen_rt.scenes.stac import EXTENSIONS
from copgen_rt.specs import Classes, Modality, ModelSpec

MLM_VERSION = mlm.DEFAULT_VERSION
ARCHITECTURE = "COP-GEN multimodal latent diffusion transformer (per-modality VAEs and timesteps)"
ONNX_TYPE = "onnx"
DIMS = ["batch", "bands", "height", "width"]
FLOAT32 = mlm.DataType.FLOAT32


def mlm_item(spec: ModelSpec, weights: str | Path | None = None, export: Path | None = None) -> pystac.Item:
    """The MLM Item of `spec`: with `weights` (None: the bundled demo model's, for copgen-demo)
    its files as `mlm:model` assets with sha256 multihashes; with `export` (a `copgen-rt export`
    folder) its ONNX files too."""
    images = [m for m in spec.modalities if m.is_image]
    item = pystac.Item(id=f"{spec.name}-mlm", geometry=_GLOBE, bbox=[-180.0, -90.0, 180.0, 90.0],
                       datetime=dt.datetime.now(dt.UTC).replace(microsecond=0), properties={
                           "description": f"{spec.name}: any subset of its modalities generates any other "
                                          "(copgen-rt)"})
    ext = mlm.MLMExtension.ext(item, add_if_missing=True)
    ext.apply(
        name=spec.name,
        architecture=ARCHITECTURE,
        tasks=[mlm.TaskType.GENERATIVE],
        input=[_input(spec, m) for m in images],
        output=[_output(spec, m) for m in images],
        framework="pytorch",
        framework_version=torch.__version__.split("+")[0],
        pretrained=True,
        accelerator=mlm.AcceleratorType.AMD64,
        accelerator_constrained=False,
        accelerator_summary="CPUs (OpenVINO, onnxruntime or torch engines) or CUDA GPUs (torch, TensorRT)",
        batch_size_suggestion=4,
    )
    files = _weight_files(spec, weights)
    if files or export is not None:
        item.stac_extensions.append(EXTENSIONS["file"])  # file:size and file:checksum of the artifacts
    for key, path in files.items():
        _add_artifact(item, key, path, "safetensors", ["mlm:model", "mlm:weights"])
    if export is not None:
        for path in sorted(Path(export).glob("*.onnx")):
            _add_artifact(item, f"onnx-{path.stem}", path, ONNX_TYPE, ["mlm:model"])
    return item


def write_mlm_item(path: Path, spec: ModelSpec, weights: str | Path | None = None,
                   export: Path | None = None) -> Path:
    item = mlm_item(spec, weights, export)
    write_text(path, json.dumps(item.to_dict(include_self_link=False), indent=1) + "\n")
    return path


def _shape(spec: ModelSpec, m: Modality) -> list[int]:
    return [-1, *spec.pixel_shape(m.name)]  # (batch, bands, y, x)


def _input(spec: ModelSpec, m: Modality) -> mlm.ModelInput:
    return mlm.ModelInput.create(
        name=m.name,
        bands=list(m.bands),
        input=mlm.InputStructure.create(shape=_shape(spec, m), dim_order=DIMS, data_type=FLOAT32),
        description=f"{m.description or m.name} at {m.gsd:g} m, in physical units; optional: any subset of "
                    "the inputs conditions the outputs",
        pre_processing_function=mlm.ProcessingExpression.create(
            format="python", expression="copgen_rt.processing:preprocess"),
    )


def _output(spec: ModelSpec, m: Modality) -> mlm.ModelOutput:
    classes = None
    if isinstance(m.processing, Classes):
        classes = [mlm.Classification.create(value=code, name=name)
                   for code, name in zip(m.processing.codes, m.processing.names, strict=True)]
    return mlm.ModelOutput.create(
        name=m.name,
        tasks=[mlm.TaskType.GENERATIVE],
        result=mlm.ResultStructure.create(shape=_shape(spec, m), dim_order=DIMS, data_type=FLOAT32),
        description=f"{m.description or m.name} at {m.gsd:g} m, generated where not given",
        classes=classes,
        post_processing_function=mlm.ProcessingExpression.create(
            format="python", expression="copgen_rt.processing:postprocess"),
    )


def _weight_files(spec: ModelSpec, weights: str | Path | None) -> dict[str, Path]:
    """{asset key: file} of the weights; none for a spec without bundled weights and no `weights`."""
    try:
        denoiser, vaes = pretrained_files(spec, weights)
    except ValueError:
        if weights is None:  # a released model described without its files
            return {}
        raise
    return {"denoiser": denoiser, **{f"vae-{key}": path for key, path in vaes.items()}}


def _add_artifact(item: pystac.Item, key: str, path: Path, artifact_type: str, roles: list[str]) -> None:
    asset = pystac.Asset(href=path.resolve().as_uri(), roles=roles, extra_fields={
        "file:size": path.stat().st_size, "file:checksum": "1220" + file_sha256(path)})
    item.add_asset(key, asset)
    mlm.AssetGeneralMLMExtension.ext(asset).artifact_type = artifact_type


_GLOBE = {"type": "Polygon", "coordinates": [[[-180.0, -90.0], [180.0, -90.0], [180.0, 90.0],
                                              [-180.0, 90.0], [-180.0, -90.0]]]}
