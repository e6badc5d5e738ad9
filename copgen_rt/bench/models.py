"""What the measurements share: the mid-size spec, random models and inputs, FLOP counts."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from copgen_rt import specs
from copgen_rt.backends import scratch_export
from copgen_rt.backends.export_cache import cache_root
from copgen_rt.export.manifest import Component
from copgen_rt.models import Denoiser
from copgen_rt.specs import ModelSpec
from copgen_rt.weights import Checkpoint, load_denoiser, random_state_dict


def mid_spec() -> ModelSpec:
    """A mid-size denoiser (384 wide, 8 deep) with the demo's small VAEs (a full-size VAE decode
    costs ~3 s per modality per tile on a 2-core CPU, which would swamp the scene benchmark)."""
    base = specs.get("copgen-base")
    return base.replace(name="copgen-mid", vaes=specs.get("copgen-demo").vaes,
                        denoiser=dataclasses.replace(base.denoiser, embed_dim=384, depth=8, num_heads=6))


def denoiser_flops(spec: ModelSpec) -> float:
    """FLOPs (multiply-add = 2) of one denoiser call for one sample: linear layers + attention."""
    d, L = spec.denoiser.embed_dim, spec.num_tokens
    hidden = int(d * spec.denoiser.mlp_ratio)
    half = spec.denoiser.depth // 2
    per_block = 3 * d * d + d * d + 2 * d * hidden  # qkv, proj, fc1, fc2 (per token)
    linear = (2 * half + 1) * per_block + half * 2 * d * d  # + skip_linear in out-blocks
    heads = sum(m.num_tokens * (m.latent_shape[0] * m.patch_size ** 2) * d * 2 for m in spec.modalities)
    return 2.0 * (linear * L + heads / 2) + attention_flops(spec)


def attention_flops(spec: ModelSpec) -> float:
    """FLOPs of one denoiser call's attention (QK^T and AV in every block) for one sample."""
    d, L = spec.denoiser.embed_dim, spec.num_tokens
    blocks = 2 * (spec.denoiser.depth // 2) + 1  # in-blocks, the mid-block, out-blocks
    return 2.0 * blocks * 2 * L * L * d


def random_denoiser(spec: ModelSpec, device: str, dtype: torch.dtype, seed: int = 0) -> Denoiser:
    """A denoiser of `spec` with random weights (speed does not depend on weight values)."""
    with torch.device("meta"):
        shapes = Denoiser(spec)
    return load_denoiser(spec, Checkpoint(Path("random"), random_state_dict(shapes, seed)), device, dtype)


def scratch_folder(prefix: str) -> Path:
    """A new folder under the cache root: in a bench run, the bench's own cache, which it removes
    at the end."""
    cache_root().mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=cache_root()))


def export_denoiser(spec: ModelSpec, model: Denoiser) -> tuple[Path, Component]:
    """The fp32 ONNX export of a model in a scratch folder."""
    folder = scratch_folder("bench-onnx-")
    return folder, scratch_export(spec, model, folder)


def call_error(out: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """Relative L2 error of one call's outputs against a reference call's, all outputs together."""
    a, b = (torch.cat([t.double().flatten() for t in ts]) for ts in (out, ref))
    return float((a - b).norm() / b.norm())


def tile_drift(pipe: Any, variants: dict[str, Any], preset: str = "exact") -> dict[str, float]:
    """One tile on the bundled chip's S2 L2A groups and location, sampled with `preset` (`exact`:
    50 calls) through each denoiser with the same noise: the final latents' relative distance
    from those of the first variant (the reference). `pipe` is a Pipeline; its denoiser is restored."""
    from copgen_rt import demo

    given = {m.name: demo.read_chip(m.name) for m in pipe.spec.modalities if m.product == "S2L2A"}
    given["3d_cartesian_lat_lon"] = demo.chip_location()
    inner, tiles = pipe.denoiser, {}
    try:
        for name, fn in variants.items():
            pipe.denoiser = fn
            out = pipe.generate([n for n in pipe.spec.names if n not in given], given, preset=preset,
                                seed=[7], decode=False)
            tiles[name] = torch.cat([z.double().flatten() for z in out.values()])
    finally:
        pipe.denoiser = inner
    reference = next(iter(tiles.values()))
    return {name: float((z - reference).norm() / reference.norm()) for name, z in tiles.items()}


def random_vae_pipeline(spec: ModelSpec, denoiser: Any) -> Any:
    """A CPU Pipeline around `denoiser` whose VAEs (torch) have random weights."""
    from copgen_rt import Pipeline
    from copgen_rt.backends import TorchVAE
    from copgen_rt.models import Autoencoder
    from copgen_rt.provenance import Provenance

    def load_vae(modality: str) -> TorchVAE:
        with torch.device("meta"):
            shapes = Autoencoder(spec, modality)
        model = Autoencoder(spec, modality)
        model.load_state_dict(random_state_dict(shapes, 7))
        return TorchVAE(model.eval())

    return Pipeline(spec, denoiser, load_vae, Provenance(spec.name, random=True), "cpu")
