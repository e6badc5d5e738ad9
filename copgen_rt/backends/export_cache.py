"""ONNX exports of loaded components, made once per (spec, component, checkpoint) into a cache
folder and shared by the engines that run ONNX (onnxruntime, openvino)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from copgen_rt.export.manifest import Manifest
from copgen_rt.export.onnx import ParityRuntime
from copgen_rt.files import write_error
from copgen_rt.models import Autoencoder, Denoiser
from copgen_rt.specs import ModelSpec


def cache_root() -> Path:
    """$COPGEN_RT_CACHE, else ~/.cache/copgen-rt: exports under onnx/, compiled models beside."""
    return Path(os.environ.get("COPGEN_RT_CACHE") or Path.home() / ".cache" / "copgen-rt")


def _cache_key(spec: ModelSpec, component: str, checkpoint: Path) -> str:
    from copgen_rt import specs
    from copgen_rt.files import file_sha256

    data = json.dumps([specs.to_dict(spec), component, file_sha256(checkpoint)], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:24]


def cached_export(spec: ModelSpec, component: str, module: nn.Module, checkpoint: Path,
                  parity_runtime: ParityRuntime | None = None) -> tuple[Path, Manifest]:
    """The export folder of `component` ("denoiser" or "vae/<key>") and its manifest; exported
    (fp32, parity-checked through `parity_runtime`) on first use."""
    folder = cache_root() / "onnx" / _cache_key(spec, component, checkpoint)
    if not (folder / "manifest.json").exists():
        try:
            _export_into(folder, spec, component, module, parity_runtime)
        except OSError as e:  # a full disk or an unwritable cache: one line, not an internal error
            raise write_error(folder, e) from None
    return folder, Manifest.load(folder)


def _export_into(folder: Path, spec: ModelSpec, component: str, module: nn.Module,
                 parity_runtime: ParityRuntime | None) -> None:
    """Exported beside `folder`, then renamed into place: processes exporting at once never mix files."""
    from copgen_rt.export.onnx import export_models

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        if isinstance(module, Denoiser):
            export_models(spec, module, {}, staging, weights={}, random_weights=False, parity_batch=1,
                          parity_runtime=parity_runtime)
        else:
            assert isinstance(module, Autoencoder) and component.startswith("vae/")
            export_models(spec, None, {component[4:]: module}, staging, weights={}, random_weights=False,
                          parity_batch=1, parity_runtime=parity_runtime)
        try:
            os.rename(staging, folder)
        except OSError:  # another process published it first (or left a broken folder: replace it)
            if not (folder / "manifest.json").exists():
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
