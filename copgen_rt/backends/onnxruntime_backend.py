"""onnxruntime execution of exported components (CPU here; CUDA/TensorRT providers when present)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from copgen_rt.backends.base import Engine

if TYPE_CHECKING:
    from copgen_rt.export.manifest import Component
    from copgen_rt.models import Autoencoder, Denoiser
    from copgen_rt.specs import ModelSpec


def _session(path: Path, providers: Sequence[str] | None) -> Any:  # an onnxruntime.InferenceSession
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("onnxruntime is not installed: pip install copgen-rt[onnx]") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    chosen = [p for p in (providers or available) if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as e:  # onnxruntime raises its own types for missing, truncated or invalid files
        from copgen_rt.errors import CheckpointError, first_line

        raise CheckpointError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None


class OrtDenoiser:
    name = "onnxruntime"

    def __init__(self, path: Path, input_names: list[str], output_names: list[str],
                 providers: Sequence[str] | None = None):
        self.session = _session(path, providers)
        self.input_names, self.output_names = input_names, output_names

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        device = latents[0].device
        feeds = {n: np.ascontiguousarray(t.detach().float().cpu().numpy())
                 for n, t in zip(self.input_names, [*latents, *timesteps], strict=True)}
        outs = self.session.run(self.output_names, feeds)
        return [torch.from_numpy(o).to(device) for o in outs]


class OrtVAE:
    name = "onnxruntime"

    def __init__(self, encoder: Path | None, decoder: Path | None,
                 providers: Sequence[str] | None = None):
        self.encoder = _session(encoder, providers) if encoder else None
        self.decoder = _session(decoder, providers) if decoder else None

    @staticmethod
    def _run(session: Any, name: str, x: Tensor) -> Tensor:
        out = session.run(None, {name: np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out).to(x.device)

    def encode_moments(self, x: Tensor) -> Tensor:
        if self.encoder is None:
            raise RuntimeError("this export has no VAE encoder for the modality")
        return self._run(self.encoder, "x", x)

    def decode(self, z: Tensor) -> Tensor:
        if self.decoder is None:
            raise RuntimeError("this export has no VAE decoder for the modality")
        return self._run(self.decoder, "z", z)


def cached_onnx_denoiser(spec: ModelSpec, model: Denoiser, checkpoint: Path) -> OrtDenoiser:
    """Export the denoiser once per (spec, checkpoint) into the cache, then run it."""
    from copgen_rt.backends.export_cache import cached_export

    folder, _ = cached_export(spec, "denoiser", model, checkpoint)
    return denoiser_from_export(folder, None)


def cached_onnx_vae(spec: ModelSpec, key: str, vae: Autoencoder, checkpoint: Path) -> OrtVAE:
    from copgen_rt.backends.export_cache import cached_export

    folder, _ = cached_export(spec, f"vae/{key}", vae, checkpoint)
    return OrtVAE(folder / f"vae_encoder/{key}.onnx", folder / f"vae_decoder/{key}.onnx")


def denoiser_from_export(folder: Path, providers: Sequence[str] | None) -> OrtDenoiser:
    from copgen_rt.export.manifest import Manifest

    c = Manifest.load(folder).component("denoiser")
    return OrtDenoiser(folder / c.file, [t.name for t in c.inputs], [t.name for t in c.outputs], providers)


def _component_denoiser(folder: Path, component: Component, dtype: str, static_batch: bool | None
                        ) -> OrtDenoiser:
    """onnxruntime runs the fp32 graph with a dynamic batch whatever is asked."""
    return OrtDenoiser(folder / component.file, [t.name for t in component.inputs],
                       [t.name for t in component.outputs])


ENGINE = Engine("onnxruntime", devices=("cpu", "cuda"), dtypes=("fp32",), vae_dtypes=("fp32",),
                requires="onnxruntime", install="pip install 'copgen-rt[onnx]'",
                cached_denoiser=lambda spec, model, ckpt, dtype: cached_onnx_denoiser(spec, model, ckpt),
                component_denoiser=_component_denoiser,
                make_vae=lambda spec, key, vae, ckpt, dtype: cached_onnx_vae(spec, key, vae, ckpt))
