"""Backends for an export folder (`copgen-rt export`): onnxruntime sessions or TensorRT engines,
chosen by the folder's manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from copgen_rt import specs
from copgen_rt.backends.base import DenoiserBackend, VAEBackend
from copgen_rt.export.manifest import Manifest
from copgen_rt.provenance import Provenance


def load_export(folder: Path, providers: Sequence[str] | None = None):
    """-> (spec, denoiser backend, VAE loader by modality, provenance)."""
    manifest = Manifest.load(folder)
    spec = specs.from_dict(manifest.spec)
    names = {c.name for c in manifest.components}
    if "denoiser" not in names:
        raise ValueError(f"{folder}: the export has no denoiser")
    files = {c.name: str(folder / c.file) for c in manifest.components}
    provenance = Provenance(spec.name, files, manifest.random_weights)

    if manifest.format == "tensorrt":
        from copgen_rt.backends.tensorrt_backend import TrtDenoiser, TrtVAE

        engines = {name: folder / e["engine"] for name, e in manifest.tensorrt["components"].items()}
        denoiser: DenoiserBackend = TrtDenoiser(engines["denoiser"])

        def make_vae(key: str) -> VAEBackend:
            return TrtVAE(engines.get(f"vae_encoder/{key}"), engines.get(f"vae_decoder/{key}"))
    else:
        from copgen_rt.backends.onnxruntime_backend import OrtVAE, denoiser_from_export

        denoiser = denoiser_from_export(folder, providers)

        def make_vae(key: str) -> VAEBackend:
            enc, dec = (folder / f"vae_{part}/{key}.onnx" for part in ("encoder", "decoder"))
            return OrtVAE(enc if enc.exists() else None, dec if dec.exists() else None, providers)

    def vae_loader(modality: str) -> VAEBackend:
        key = spec.modality(modality).vae
        if key is None or (f"vae_encoder/{key}" not in names and f"vae_decoder/{key}" not in names):
            raise ValueError(f"the export in {folder} has no VAE for {modality}")
        return make_vae(key)

    return spec, denoiser, vae_loader, provenance
