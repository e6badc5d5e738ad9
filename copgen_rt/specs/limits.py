"""The limits a model spec can have, checked field by field before anything is built from it: a
spec read from JSON (`--spec-json`) is the user's input, and a `num_heads` of 0, a negative latent
shape or an `embed_dim` of 1e7 would otherwise fail deep inside an engine (a ZeroDivisionError, a
1.28 GB allocation) or run for hours (`depth` 1e6). The bounds admit every registered spec
(copgen-huge: embed 1536, depth 30, 24 heads) with room to spare."""

from __future__ import annotations

import math

from copgen_rt.errors import InputError
from copgen_rt.specs.model import ModelSpec

MAX_EMBED_DIM = 16_384
MAX_DEPTH = 256
MAX_HEADS = 1_024
MAX_MLP_RATIO = 16.0
MAX_LATENT_CHANNELS = 1_024
MAX_LATENT_SIDE = 4_096
MAX_TOKENS = 65_536
MAX_TIMESTEPS = 100_000
MAX_VAE_WIDTH = 4_096
MAX_VAE_LEVELS = 8
MAX_VAE_BLOCKS = 16
MAX_VAE_CHANNELS = 1_024


def _integer(where: str, field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {field} = {value!r}: must be a whole number")
    if not low <= value <= high:
        raise InputError(f"{where}: {field} = {value}: must be between {low} and {high}")
    return value


def _number(where: str, field: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where}: {field} = {value!r}: must be a finite number")
    if not low < value <= high:
        raise InputError(f"{where}: {field} = {value}: must be above {low} and at most {high}")
    return float(value)


def check_limits(spec: ModelSpec, where: str) -> ModelSpec:
    """`spec` if every field is within what a model can have, else one InputError (exit 3)."""
    den = spec.denoiser
    embed = _integer(where, "denoiser.embed_dim", den.embed_dim, 1, MAX_EMBED_DIM)
    _integer(where, "denoiser.depth", den.depth, 1, MAX_DEPTH)
    heads = _integer(where, "denoiser.num_heads", den.num_heads, 1, MAX_HEADS)
    if embed % heads:
        raise InputError(f"{where}: denoiser.num_heads = {heads} does not divide embed_dim = {embed}")
    _number(where, "denoiser.mlp_ratio", den.mlp_ratio, 0.0, MAX_MLP_RATIO)
    tokens = 0
    for m in spec.modalities:
        shape = tuple(m.latent_shape)
        if len(shape) != 3:
            raise InputError(f"{where}: latent shape of {m.name} = {list(shape)}: must be [C, H, W]")
        _integer(where, f"latent channels of {m.name}", shape[0], 1, MAX_LATENT_CHANNELS)
        for side in shape[1:]:
            _integer(where, f"latent height/width of {m.name}", side, 1, MAX_LATENT_SIDE)
        patch = _integer(where, f"patch size of {m.name}", m.patch_size, 1, MAX_LATENT_SIDE)
        if shape[1] % patch or shape[2] % patch:
            raise InputError(f"{where}: patch size {patch} of {m.name} does not divide its latent "
                             f"{shape[1]}x{shape[2]}")
        tokens += m.num_tokens
    if tokens > MAX_TOKENS:
        raise InputError(f"{where}: {tokens} tokens: at most {MAX_TOKENS}")
    for key, vae in spec.vaes.items():
        _integer(where, f"vae {key} in_channels", vae.in_channels, 1, MAX_VAE_CHANNELS)
        _integer(where, f"vae {key} ch", vae.ch, 1, MAX_VAE_WIDTH)
        _integer(where, f"vae {key} z_channels", vae.z_channels, 1, MAX_LATENT_CHANNELS)
        _integer(where, f"vae {key} num_res_blocks", vae.num_res_blocks, 0, MAX_VAE_BLOCKS)
        _number(where, f"vae {key} scale_factor", vae.scale_factor, 0.0, 1e6)
        if not 1 <= len(vae.ch_mult) <= MAX_VAE_LEVELS:
            raise InputError(f"{where}: vae {key} ch_mult has {len(vae.ch_mult)} levels: "
                             f"1 to {MAX_VAE_LEVELS}")
        for mult in vae.ch_mult:
            _integer(where, f"vae {key} ch_mult", mult, 1, MAX_VAE_WIDTH // vae.ch or 1)
    sched = spec.schedule
    _integer(where, "schedule.n", sched.num_timesteps, 1, MAX_TIMESTEPS)
    start = _number(where, "schedule.beta_start", sched.beta_start, 0.0, 1.0)
    if not start < _number(where, "schedule.beta_end", sched.beta_end, 0.0, 1.0):
        raise InputError(f"{where}: schedule.beta_start {start} must be below beta_end {sched.beta_end}")
    return spec
