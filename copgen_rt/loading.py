"""What `Pipeline.from_weights` and `from_pretrained` load: the device, the precision names, the
engines chosen (and measured, with "auto" on a CPU), the denoiser backend, VAEs loaded on first
use, the provenance of every file; where the weights of a spec are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from copgen_rt.backends import DenoiserBackend, VAEBackend
from copgen_rt.device import EngineChoice, int8_rest_precision
from copgen_rt.errors import CheckpointError
from copgen_rt.provenance import Provenance
from copgen_rt.specs import ModelSpec
from copgen_rt.tuning import Tuning, measured_choice
from copgen_rt.weights import (
    Checkpoint,
    load_autoencoder,
    load_denoiser,
    parse_dtype,
    read_checkpoint,
    resolve_weights,
    warn_random_weights,
)


def dtype_name(dtype: torch.dtype | str) -> str:
    """fp32 | fp16 | bf16 for a torch dtype or any name `parse_dtype` takes."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[parse_dtype(dtype)]


def torch_device(device: str | torch.device | None) -> torch.device:
    try:
        chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "meta"):  # meta: shapes only, no data
        raise ValueError(f"device {device!r}: copgen-rt runs on 'cpu', 'cuda' or 'cuda:N'")
    return chosen


def load_weights(
    spec: ModelSpec,
    denoiser: str | Path,
    vaes: Mapping[str, str | Path] | None,
    device: torch.device,
    dtype: torch.dtype | str,
    vae_dtype: torch.dtype | str,
    backend: str | Mapping[str, str],
    cuda_graphs: bool,
) -> tuple[DenoiserBackend, Callable[[str], VAEBackend], Provenance, EngineChoice, Tuning | None]:
    """-> (denoiser backend, VAE loader by modality, provenance, engines, tuning); see
    `Pipeline.from_weights` for the arguments."""
    from copgen_rt.backends import EXPORTED_ENGINES, denoiser_backend, vae_backend
    from copgen_rt.device import choose_engine

    requested = None if dtype == "auto" else "int8" if dtype == "int8" else dtype_name(dtype)
    engines = choose_engine(str(device), backend, requested, dtype_name(vae_dtype))
    ckpt = read_checkpoint(denoiser)
    engines, tuning = measured_choice(spec, engines)  # after the checkpoint read: it may be broken
    exported = engines.denoiser in EXPORTED_ENGINES  # exports are fp32 graphs
    # int8: the layers it leaves unquantized run in the engine's best float precision
    den_dtype = int8_rest_precision() if engines.dtype == "int8" else engines.dtype
    model = load_denoiser(spec, ckpt, device, torch.float32 if exported else parse_dtype(den_dtype))
    engine = f"{engines.denoiser} {engines.dtype} (VAEs {engines.vae} {dtype_name(vae_dtype)})"
    provenance = Provenance(spec.name, {"denoiser": str(ckpt.path)}, ckpt.is_random, engine)
    den_backend = denoiser_backend(engines.denoiser, spec, model, ckpt.path, den_dtype, cuda_graphs)
    vae_files: dict[str, Path] = {}
    for name, path in (vaes or {}).items():
        key = spec.modality(name).vae if name in spec.names else name
        if key is None or key not in spec.vaes:
            raise ValueError(f"{name}: not a modality with a VAE in {spec.name}")
        vae_files[key] = Path(path)
    vae_precision = dtype_name(vae_dtype)
    # every file the pipeline may load, known up front: provenance does not change as VAEs load
    provenance.files.update({f"vae/{k}": str(p) for k, p in vae_files.items()})

    def load_vae(modality: str) -> VAEBackend:
        key = spec.modality(modality).vae
        if key not in vae_files:
            raise CheckpointError(f"no VAE checkpoint given for {modality}")
        vckpt: Checkpoint = read_checkpoint(vae_files[key])
        if vckpt.is_random and not provenance.random:
            warn_random_weights(f"the {modality} VAE of this {spec.name} pipeline")
        provenance.random = provenance.random or vckpt.is_random
        load_dtype = torch.float32 if engines.vae in EXPORTED_ENGINES else parse_dtype(vae_dtype)
        vae = load_autoencoder(spec, modality, vckpt, device, load_dtype)
        return vae_backend(engines.vae, spec, key, vae, vckpt.path, vae_precision)

    return den_backend, load_vae, provenance, engines, tuning


def pretrained_files(spec: ModelSpec, weights: str | Path | None) -> tuple[Path, dict[str, Path]]:
    """The denoiser and {VAE key: file} of a weights directory (ours or the released layout) or a
    hub id; without `weights`, the bundled demo model's (copgen-demo only)."""
    if weights is None:
        from copgen_rt import demo

        if spec.name != demo.DEMO_MODEL:
            raise ValueError(
                f"{spec.name} needs weights (a directory or a hub id); only "
                f"{demo.DEMO_MODEL} ships with the package"
            )
        weights = demo.weights_path()
    files = resolve_weights(spec, weights)
    if files.denoiser is None:
        raise CheckpointError(f"{weights}: no denoiser checkpoint of {spec.name} found")
    return files.denoiser, dict(files.vaes)
