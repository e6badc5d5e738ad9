"""What `Pipeline.from_weights` and `from_pretrained` load: the device and precision names, the
denoiser backend and the VAEs (on first use) that a RuntimePlan names, the provenance of every
file; where the weights of a spec are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from copgen_rt.backends import DenoiserBackend, VAEBackend, denoiser_backend, engine, vae_backend
from copgen_rt.errors import CheckpointError
from copgen_rt.plan import RuntimePlan
from copgen_rt.provenance import Provenance
from copgen_rt.specs import ModelSpec
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
    ckpt: Checkpoint,
    vaes: Mapping[str, str | Path] | None,
    device: torch.device,
    plan: RuntimePlan,
    cuda_graphs: bool,
) -> tuple[DenoiserBackend, Callable[[str], VAEBackend], Provenance]:
    """-> (denoiser backend, VAE loader by modality, provenance): what `plan` names, loaded; see
    `Pipeline.from_weights` for the arguments."""
    den_engine, vae_engine = engine(plan.engines.denoiser), engine(plan.engines.vae)
    # exported engines run fp32 graphs whatever precision they compute in
    model = load_denoiser(spec, ckpt, device, torch.float32 if den_engine.exported else
                          parse_dtype(plan.denoiser_dtype))
    described = f"{plan.engines.denoiser} {plan.dtype} (VAEs {plan.engines.vae} {plan.vae_dtype})"
    provenance = Provenance(spec.name, {"denoiser": str(ckpt.path)}, ckpt.is_random, described)
    den_backend = denoiser_backend(den_engine.name, spec, model, ckpt.path, plan.denoiser_dtype, cuda_graphs)
    vae_files: dict[str, Path] = {}
    for name, path in (vaes or {}).items():
        key = spec.modality(name).vae if name in spec.names else name
        if key is None or key not in spec.vaes:
            raise ValueError(f"{name}: not a modality with a VAE in {spec.name}")
        vae_files[key] = Path(path)
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
        load_dtype = torch.float32 if vae_engine.exported else parse_dtype(plan.vae_dtype)
        vae = load_autoencoder(spec, modality, vckpt, device, load_dtype)
        return vae_backend(vae_engine.name, spec, key, vae, vckpt.path, plan.vae_dtype)

    return den_backend, load_vae, provenance


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
