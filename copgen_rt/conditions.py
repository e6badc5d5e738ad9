"""What `Pipeline.generate` is given, checked and brought to model space: condition values and
shapes, the batch, the seeds, the known regions of gap filling (values with their masked pixels
filled, valid masks, latent cells), and the cache of condition moments."""

from __future__ import annotations

import hashlib
import numbers
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

import torch
from torch import Tensor

from copgen_rt import processing
from copgen_rt.specs import ModelSpec


class MomentsCache:
    """Condition moments by content (modality, shape, dtype, bytes): a repeat call skips the VAE."""

    def __init__(self, max_entries: int = 64):
        self.entries: OrderedDict[tuple, Tensor] = OrderedDict()
        self.max_entries = max_entries
        self.hits = self.misses = 0

    @staticmethod
    def key(modality: str, x: Tensor) -> tuple:
        digest = hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16)
        return modality, tuple(x.shape), str(x.dtype), digest.hexdigest()

    def get(self, key: tuple, compute: Callable[[], Tensor]) -> Tensor:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        value = compute()
        self.entries[key] = value
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_dtype(name: str, value: object) -> None:
    """Booleans and complex numbers are no physical values: refused, never cast."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and (dtype in (torch.bool, torch.complex64, torch.complex128) or
                              getattr(dtype, "kind", "") in ("b", "c")):
        raise ValueError(f"condition {name}: values of dtype {dtype} are not physical values")


def check_shape(what: str, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return x.float()


# model-space pixels lie about in [-1, 1] (S2 DNs of 65535 give 12.1): beyond this, values are in
# other units (physical ones given with physical_units=False, say) and the model diverges
MODEL_SPACE_LIMIT = 64.0


def check_plausible(spec: ModelSpec, name: str, values: object, what: str) -> None:
    """Physical values no product holds (an S2 DN of 1e30, a DEM of -1e6 m) are refused, as the
    command line refuses them in a scene (NaN is the caller's to judge)."""
    p = spec.modality(name).processing
    bounds = getattr(p, "plausible", None)
    if bounds is None:
        return
    v = processing.as_float32(values).double()  # refuses what is no array of numbers
    v = v[torch.isfinite(v)]
    if v.numel() and (float(v.min()) < bounds[0] or float(v.max()) > bounds[1]):
        raise ValueError(f"{what}: values {float(v.min()):.4g} to {float(v.max()):.4g} {p.units} are not "
                         f"plausible ({bounds[0]:g} to {bounds[1]:g}); check their units and scaling")


def check_model_space(what: str, x: Tensor) -> None:
    """Model-space values far beyond [-1, 1] are other units (physical_units=False given physical
    values): refused, not fed to the model."""
    finite = x[torch.isfinite(x)]
    if finite.numel() and float(finite.abs().max()) > MODEL_SPACE_LIMIT:
        raise ValueError(f"{what}: model-space values reach {float(finite.abs().max()):.4g}, beyond "
                         f"+-{MODEL_SPACE_LIMIT:g}: physical values given with physical_units=False?")


def check_condition(spec: ModelSpec, name: str, x: Tensor, is_latent: bool) -> Tensor:
    m = spec.modality(name)
    shape = m.latent_shape if is_latent or not m.is_image else spec.pixel_shape(name)
    if x.dim() == len(shape):
        x = x.unsqueeze(0)
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"condition {name}: expected (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )
    x = check_shape(f"condition {name}", x, (x.shape[0], *shape))
    if not is_latent:
        check_model_space(f"condition {name}", x)
    return x


def batch_of(
    inputs: Mapping[str, Tensor],
    batch_size: int | None,
    initial_noise: Mapping[str, Tensor],
    n_samples: int,
) -> int:
    """The conditions' batch, else `batch_size`, else the injected noise's (rows / n_samples), else 1."""
    sizes = {x.shape[0] for x in inputs.values()}
    if 0 in sizes:
        raise ValueError("conditions have batch size 0")
    if len(sizes) > 1:
        raise ValueError(f"conditions have different batch sizes: {sorted(sizes)}")
    if sizes:
        (b,) = sizes
        if batch_size is not None and batch_size != b:
            raise ValueError(f"batch_size={batch_size} but conditions have batch {b}")
        return b
    if batch_size is None:
        return _noise_batch(initial_noise, n_samples) if initial_noise else 1
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return batch_size


def _noise_batch(initial_noise: Mapping[str, Tensor], n_samples: int) -> int:
    """Unconditional generation with injected noise: its rows are batch x n_samples (each row
    is one sample of one batch entry); the shapes past the first axis are checked later."""
    rows = {name: tuple(torch.as_tensor(x).shape[:1]) for name, x in initial_noise.items()}
    counts = {r[0] for r in rows.values() if r}
    if len(counts) > 1:
        raise ValueError(
            "initial_noise entries have different numbers of rows: "
            + ", ".join(f"{n} {r[0] if r else 'none'}" for n, r in sorted(rows.items()))
        )
    if not counts:
        return 1  # scalars: refused with the expected shape by check_shape
    (count,) = counts
    if count == 0 or count % n_samples:
        raise ValueError(
            f"initial_noise has {count} rows, which is not batch x n_samples for n_samples={n_samples}"
        )
    return count // n_samples


def condition_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """One seed per batch entry: `seed + b` for one int, the list as given, a random one if None."""
    if seed is None:
        seed = secrets.randbits(62)
    cond_seeds: list[Any] = (  # checked below
        [seed + b for b in range(batch)]
        if _is_int(seed)
        else list(seed)
        if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes))
        else [seed]
    )
    if not all(map(_is_int, cond_seeds)):
        raise ValueError(f"seed must be an int or a sequence of ints (one per condition), got {seed!r}")
    if len(cond_seeds) != batch:
        raise ValueError(f"seed list has {len(cond_seeds)} entries for a batch of {batch}")
    return cond_seeds


def known_values(
    spec: ModelSpec,
    generate: Sequence[str],
    known: Mapping[str, tuple[object, object]],
    physical_units: bool,
    is_latent: bool,
) -> dict[str, tuple[Tensor, Tensor]]:
    """{name: (model-space values with masked pixels filled, valid mask (B, H, W) bool)}.

    Masked pixels may hold anything (clouds, NaN nodata): before encoding they are replaced
    by the row's per-channel mean of valid pixels, so no cloud or NaN reaches the VAE.
    """
    out = {}
    for name in spec.canonical(known):
        if name not in generate:
            raise ValueError(f"known values for {name}, which is not generated")
        m = spec.modality(name)
        if not m.is_image:
            raise ValueError(
                f"known {name}: only image modalities can be partly known; give it as a condition"
            )
        entry = known[name]
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"known {name}: expected a pair (values, valid_mask)")
        values, valid = entry
        shape = m.latent_shape if is_latent else spec.pixel_shape(name)
        if physical_units and not is_latent:
            check_plausible(spec, name, values, f"known {name}")
        x = (
            processing.preprocess(m, values, shape)
            if physical_units and not is_latent
            else processing.as_float32(values)
        )
        x = x.unsqueeze(0) if x.dim() == len(shape) else x
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(
                f"known {name}: expected values (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
            )
        valid = _valid_mask(name, valid, (x.shape[0], *shape[1:])).to(x.device)
        where = valid.unsqueeze(1).expand_as(x)
        if not bool(torch.isfinite(x[where]).all()):
            raise ValueError(f"known {name}: NaN or infinite values at valid pixels")
        if not is_latent:
            check_model_space(f"known {name}", x[where])
        count = where.sum(dim=(2, 3), keepdim=True)
        mean = torch.where(where, x, 0.0).sum(dim=(2, 3), keepdim=True) / count.clamp_min(1)
        out[name] = (torch.where(where, x, mean), valid)
    return out


def _valid_mask(name: str, valid: object, shape: tuple[int, int, int]) -> Tensor:
    """(B, H, W), (B, 1, H, W) or (H, W) (one mask for every row) of bool or 0/1 -> (B, H, W) bool."""
    try:
        valid = torch.as_tensor(valid)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"known {name}: the valid mask must be an array, got {type(valid).__name__}"
        ) from None
    if valid.dtype != torch.bool:
        if valid.is_complex() or not bool(((valid == 0) | (valid == 1)).all()):
            raise ValueError(f"known {name}: the valid mask must be boolean or 0/1")
        valid = valid != 0
    valid = valid.squeeze(-3) if valid.dim() == 4 and valid.shape[-3] == 1 else valid
    valid = valid.expand(shape[0], *valid.shape) if valid.dim() == 2 else valid
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(
            f"known {name}: expected a valid mask of shape {tuple(shape)}, got {tuple(valid.shape)}"
        )
    return valid


def known_cells(spec: ModelSpec, name: str, valid: Tensor, is_latent: bool) -> Tensor:
    """Pixel mask -> latent-cell mask: a cell is known only if ALL its pixels are valid.

    Strict on purpose: a partly clouded cell's latent would encode the fill, and the
    generated cell is replaced by valid pixels in pixel-space compositing anyway.
    """
    if is_latent:
        return valid
    _, h, w = spec.modality(name).latent_shape
    b, ph, pw = valid.shape
    return valid.reshape(b, h, ph // h, w, pw // w).all(dim=4).all(dim=2)
