"""The LDM KL autoencoder ("AutoencoderKL", f = 8) used by both model families.

State-dict keys are exactly those of the released `model-50-ema.pth` (COP-GEN) and
`autoencoder_kl_ema.pth` (COP-GEN-Beta) files: encoder.*, decoder.*, quant_conv, post_quant_conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copgen_rt.models.attention import attention
from copgen_rt.specs import ModelSpec, VAESpec


def posterior_sample(moments: Tensor, noise: Tensor, scale_factor: float) -> Tensor:
    """scale_factor * (mean + exp(0.5 * clamp(logvar, -30, 20)) * noise)."""
    mean, logvar = moments.chunk(2, dim=1)
    return scale_factor * (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = attention(q, k, v)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level; `attn` stays empty (attn_resolutions = []) and has no keys."""

    def __init__(self, blocks: Sequence[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        self.resample_name = name if resample is not None else None
        if resample is not None:
            self.add_module(name, resample)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.block:
            x = blk(x)
        return x if self.resample_name is None else getattr(self, self.resample_name)(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VAESpec):
        super().__init__()
        mults = (1, *cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        levels = []
        for i in range(len(cfg.ch_mult)):
            c_in, c_out = cfg.ch * mults[i], cfg.ch * mults[i + 1]
            blocks = [ResnetBlock(c_in if j == 0 else c_out, c_out) for j in range(cfg.num_res_blocks)]
            last = i == len(cfg.ch_mult) - 1
            levels.append(_Level(blocks, None if last else Downsample(c_out), "downsample"))
        self.down = nn.ModuleList(levels)
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = _Mid(top)
        self.norm_out = _norm(top)
        self.conv_out = nn.Conv2d(top, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAESpec):
        super().__init__()
        top = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = _Mid(top)
        levels: list[_Level] = []
        c_in = top
        for i in reversed(range(len(cfg.ch_mult))):
            c_out = cfg.ch * cfg.ch_mult[i]
            blocks = [ResnetBlock(c_in if j == 0 else c_out, c_out) for j in range(cfg.num_res_blocks + 1)]
            levels.insert(0, _Level(blocks, Upsample(c_out) if i > 0 else None, "upsample"))
            c_in = c_out
        self.up = nn.ModuleList(levels)  # index = resolution level; up.3 runs first
        self.norm_out = _norm(cfg.ch * cfg.ch_mult[0])
        self.conv_out = nn.Conv2d(cfg.ch * cfg.ch_mult[0], cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """KL autoencoder of one modality (or of several sharing one VAE, as in COP-GEN-Beta).

    encode_moments(x) -> (B, 2z, h, w) mean then log-variance (unclamped);
    sample(moments, noise) -> scale_factor * posterior sample; decode(z) divides by scale_factor.
    """

    def __init__(self, spec: ModelSpec | VAESpec, modality: str | None = None):
        super().__init__()
        if isinstance(spec, ModelSpec):
            if modality is None:
                raise ValueError(f"Autoencoder({spec.name}): which modality's autoencoder?")
            cfg = spec.vae_for(modality)
        else:
            cfg = spec
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def encode_moments(self, x: Tensor) -> Tensor:
        return self.quant_conv(self.encoder(x))

    def sample(self, moments: Tensor, noise: Tensor) -> Tensor:
        return posterior_sample(moments, noise, self.scale_factor)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z / self.scale_factor))

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)
