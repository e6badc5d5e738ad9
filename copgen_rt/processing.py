"""Physical units <-> model space, per processing kind (constants come from the spec registry).

Image conventions: tensors (..., C, H, W) with channels in the modality's band order; class
rasters carry codes in a channel axis of size 1 and become one-hot (..., K, H, W). Location is
(..., 2) [lat, lon] in degrees, date (..., 3) [day, month, year]. Everything is float32 except
class codes and dates (int64) and thumbnails (uint8).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from copgen_rt.specs import RGB8, Classes, Date, LatLon, LogRange, Modality, Reflectance

# what the API takes as values: tensors, arrays, nested sequences (dates: strings and dates too),
# checked at run time with one-line errors
ArrayLike = Any


class UnknownClassCodeWarning(UserWarning):
    """Class codes outside the modality's table were mapped to index 0 (reference behaviour)."""


def preprocess(modality: Modality, values: ArrayLike,
               pixel_shape: tuple[int, int, int] | None = None) -> Tensor:
    """Physical values -> model-space tensor (the VAE input, or the scalar latent).

    Thumbnails of another size are centre-cropped (or reflect-padded) to `pixel_shape` as the
    reference CLI does; other kinds must already have the model's shape.
    """
    p = modality.processing
    if isinstance(p, Reflectance):
        return as_float32(values) / p.scale * 2.0 - 1.0
    if isinstance(p, LogRange):
        v = as_float32(values)
        v = torch.where(v <= 0, torch.full_like(v, p.min_positive), v)
        logv = 10.0 * torch.log10(v) if p.log == "db" else torch.log1p(v)
        return (logv - p.low) / (p.high - p.low) * 2.0 - 1.0
    if isinstance(p, Classes):
        return _one_hot(modality.name, p, torch.as_tensor(values))
    if isinstance(p, LatLon):
        return latlon_to_vector(values)
    if isinstance(p, Date):
        return date_to_vector(values)
    if isinstance(p, RGB8):
        u = torch.as_tensor(values)
        if u.dtype != torch.uint8:
            raise ValueError(f"{modality.name}: expected uint8 RGB, got {u.dtype}")
        if pixel_shape is not None and tuple(u.shape[-3:-1]) != tuple(pixel_shape[1:]):
            from copgen_rt.thumbnails import center_crop

            u = torch.from_numpy(center_crop(u.numpy(), pixel_shape[-1]))
        x = u.movedim(-1, -3).float() / 255.0
        return (x - 0.5) / 0.5
    raise TypeError(f"no pre-processing for {type(p).__name__}")


def postprocess(modality: Modality, x: Tensor) -> Tensor:
    """Model-space tensor (VAE output or scalar latent) -> physical values, computed in float32."""
    p = modality.processing
    x = x.float()
    if isinstance(p, Reflectance):
        return (x + 1.0) / 2.0 * p.scale
    if isinstance(p, LogRange):
        v = ((x + 1.0) / 2.0).clamp(0.0, 1.0) * (p.high - p.low) + p.low
        v = torch.pow(10.0, v / 10.0) if p.log == "db" else torch.expm1(v)
        return v.clamp_min(p.min_positive)
    if isinstance(p, Classes):
        index = ((x + 1.0) / 2.0).argmax(dim=-3, keepdim=True)
        return torch.tensor(p.codes, dtype=torch.int64, device=x.device)[index]
    if isinstance(p, LatLon):
        return vector_to_latlon(x)
    if isinstance(p, Date):
        return vector_to_date(x)
    if isinstance(p, RGB8):
        v = (0.5 * (x + 1.0)).clamp(0.0, 1.0)
        return (v * 255.0 + 0.5).clamp(0.0, 255.0).to(torch.uint8).movedim(-3, -1)
    raise TypeError(f"no post-processing for {type(p).__name__}")


def physical_dtype(modality: Modality) -> torch.dtype:
    """The dtype `postprocess` returns for this modality."""
    p = modality.processing
    if isinstance(p, (Classes, Date)):
        return torch.int64
    return torch.uint8 if isinstance(p, RGB8) else torch.float32


def as_float32(values: ArrayLike) -> Tensor:
    """Any array-like of numbers as a float32 tensor; anything else is a one-line ValueError."""
    try:
        return torch.as_tensor(values).to(torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"expected a tensor or array of numbers, got {type(values).__name__}") from None


def _one_hot(name: str, p: Classes, codes: Tensor) -> Tensor:
    if codes.is_floating_point():
        if not torch.equal(codes, codes.round()):
            raise ValueError(f"{name}: class codes must be whole numbers")
    codes = codes.long()
    if codes.dim() < 3 or codes.shape[-3] != 1:
        raise ValueError(f"{name}: expected codes of shape (..., 1, H, W), got {tuple(codes.shape)}")
    lookup = torch.zeros(max(max(p.codes), int(codes.max().item()) if codes.numel() else 0) + 1,
                         dtype=torch.int64)
    known = torch.zeros_like(lookup, dtype=torch.bool)
    for class_index, code in enumerate(p.codes):
        lookup[code] = class_index
        known[code] = True
    if codes.numel() and int(codes.min()) < 0:
        raise ValueError(f"{name}: negative class codes")
    unknown = int((~known[codes]).sum())
    if unknown:
        warnings.warn(f"{name}: {unknown} pixel(s) with codes outside {list(p.codes)} were mapped to "
                      f"class {p.names[0]!r} (reference behaviour)", UnknownClassCodeWarning, stacklevel=3)
    index = lookup[codes].squeeze(-3)
    one_hot = torch.nn.functional.one_hot(index, len(p.codes)).movedim(-1, -3)
    return one_hot.float() * 2.0 - 1.0


def latlon_to_vector(latlon: ArrayLike) -> Tensor:
    """(..., 2) [lat, lon] degrees -> (..., 1, 1, 3) unit vector, computed in float64."""
    ll = torch.as_tensor(latlon, dtype=torch.float64)
    if ll.shape[-1] != 2:
        raise ValueError(f"location must be (..., 2) [lat, lon], got {tuple(ll.shape)}")
    if not torch.isfinite(ll).all() or (ll[..., 0].abs() > 90).any() or (ll[..., 1].abs() > 360).any():
        raise ValueError("location must be finite with |lat| <= 90 and |lon| <= 360 degrees")
    lat, lon = torch.deg2rad(ll[..., 0]), torch.deg2rad(ll[..., 1])
    v = torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)
    return v.float()[..., None, None, :]


def vector_to_latlon(v: Tensor) -> Tensor:
    """(..., 1, 1, 3) -> (..., 2) [lat, lon] degrees; the vector is not re-normalised (reference)."""
    v = v.float().reshape(*v.shape[:-3], 3)
    z = v[..., 2]
    if (z.abs() > 1).any():
        warnings.warn("generated location has |z| > 1; clamped", RuntimeWarning, stacklevel=3)
    lat = torch.rad2deg(torch.asin(z.clamp(-1.0, 1.0)))
    lon = torch.rad2deg(torch.atan2(v[..., 1], v[..., 0]))
    return torch.stack([lat, lon], -1)


def _days_in_year(year: int) -> int:
    return 366 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 365


def _as_dates(dates: ArrayLike) -> list[dt.date]:
    if isinstance(dates, (str, dt.date)):
        dates = [dates]
    if isinstance(dates, (Tensor, np.ndarray)):
        arr = np.asarray(dates).reshape(-1, 3)
        return [dt.date(int(y), int(m), int(d)) for d, m, y in arr]
    out = []
    for d in dates:
        if isinstance(d, dt.datetime):
            out.append(d.date())
        elif isinstance(d, dt.date):
            out.append(d)
        elif isinstance(d, str):
            out.append(dt.date.fromisoformat(d[:10]))
        else:
            day, month, year = d
            out.append(dt.date(int(year), int(month), int(day)))
    return out


def date_to_vector(dates: Sequence | Tensor | str | dt.date) -> Tensor:
    """Dates (ISO strings, datetime.date, or (..., 3) [day, month, year]) -> (B, 1, 1, 3)."""
    rows = []
    for d in _as_dates(dates):
        doy, days = d.timetuple().tm_yday, _days_in_year(d.year)
        angle = 2.0 * math.pi * doy / days
        rows.append([math.sin(angle), math.cos(angle), 2.0 * (d.year - 1950) / 100.0 - 1.0])
    return torch.tensor(rows, dtype=torch.float64).float()[:, None, None, :]


def vector_to_date(v: Tensor) -> Tensor:
    """(..., 1, 1, 3) -> (..., 3) int64 [day, month, year]."""
    flat = v.double().reshape(-1, 3)
    rows = []
    for s, c, yn in flat.tolist():
        year = min(max(int(round((yn + 1.0) / 2.0 * 100.0 + 1950.0)), 1), 9999)
        days = _days_in_year(year)
        angle = math.atan2(s, c) % (2.0 * math.pi)
        doy = int(round(angle * days / (2.0 * math.pi))) % days
        d = dt.date(year, 1, 1) + dt.timedelta(days=(doy or days) - 1)
        rows.append([d.day, d.month, d.year])
    return torch.tensor(rows, dtype=torch.int64).reshape(*v.shape[:-3], 3)
