"""The post-LayerNorm U-ViT denoiser shared by COP-GEN and COP-GEN-Beta.

One sequence: a time token per modality, then every modality's patch tokens, in canonical
order. State-dict keys are exactly those of the released `nnet_ema.pth` files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from copgen_rt.models.attention import attention
from copgen_rt.models.linear import linear
from copgen_rt.specs import ModelSpec


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding, cosine half first: (B,) -> (B, dim), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        # qkv feature layout is (3, heads, head_dim)
        qkv = linear(self.qkv, x).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = attention(q, k, v)
        return linear(self.proj, out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return linear(self.fc2, linear(self.fc1, x, gelu=True))


class Block(nn.Module):
    """x = LN(x + Attn(x)); x = LN(x + MLP(x)); out-blocks first fuse the long skip."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool):
        super().__init__()
        if skip:
            self.skip_linear: nn.Linear | None = nn.Linear(2 * dim, dim)
            self.norm1 = nn.LayerNorm(dim)
        else:
            self.skip_linear = None
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("an out-block needs the skip tokens of its in-block")
            x = self.norm1(linear(self.skip_linear, torch.cat([x, skip], dim=-1)))
        x = self.norm2(x + self.attn(x))
        return self.norm3(x + self.mlp(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Tokens of x, given in any float dtype (cast to the weights')."""
        return self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)


class Denoiser(nn.Module):
    """forward(latents, timesteps): lists in canonical modality order -> list of epsilon."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        cfg = spec.denoiser
        d = cfg.embed_dim
        self.spec = spec
        self.latent_shapes = [m.latent_shape for m in spec.modalities]
        self.patch_sizes = [m.patch_size for m in spec.modalities]
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(m.latent_shape[0], d, m.patch_size) for m in spec.modalities)
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.num_tokens, d))
        half = cfg.depth // 2
        block = lambda skip: Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, skip)  # noqa: E731
        self.in_blocks = nn.ModuleList(block(False) for _ in range(half))
        self.mid_block = block(False)
        self.out_blocks = nn.ModuleList(block(True) for _ in range(half))
        self.norm = nn.LayerNorm(d)
        self.decoder_preds = nn.ModuleList(
            nn.Linear(d, m.patch_size ** 2 * m.latent_shape[0]) for m in spec.modalities)

    def forward(self, latents: Sequence[Tensor], timesteps: Sequence[Tensor]) -> list[Tensor]:
        x = self.embed(latents, timesteps)
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        return self.heads(self.norm(x))

    def embed(self, latents: Sequence[Tensor], timesteps: Sequence[Tensor]) -> Tensor:
        """(B, tokens, d) float32: time tokens, then every modality's patches, plus pos_embed."""
        n_mod = len(self.patch_embeds)
        if len(latents) != n_mod or len(timesteps) != n_mod:
            raise ValueError(f"expected {n_mod} latents and timesteps, got {len(latents)}, {len(timesteps)}")
        d = self.pos_embed.shape[-1]
        # The residual stream is float32 whatever the weights: with bf16/fp16 weights the caller
        # runs under autocast, so matmuls are low precision and LayerNorm statistics fp32.
        time_tokens = torch.stack([timestep_embedding(t, d) for t in timesteps], dim=1)
        patches = [embed(x).float() for embed, x in zip(self.patch_embeds, latents, strict=True)]
        return torch.cat([time_tokens, *patches], dim=1) + self.pos_embed.float()

    def heads(self, x: Tensor) -> list[Tensor]:
        """Final tokens -> per-modality eps (B, C, H, W) float32; time-token outputs are dropped."""
        outputs, start = [], len(self.patch_embeds)
        for head, (c, h, w), p in zip(self.decoder_preds, self.latent_shapes, self.patch_sizes, strict=True):
            n = (h // p) * (w // p)
            tokens = head(x[:, start:start + n]).float()  # (B, N, p*p*C), channel fastest
            start += n
            b = tokens.shape[0]
            img = tokens.view(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
            outputs.append(img.reshape(b, c, h, w))
        return outputs
