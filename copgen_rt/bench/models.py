"""What the measurements share: the mid-size spec, random models and inputs, FLOP counts."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

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
