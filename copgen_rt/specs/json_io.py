"""Specs to and from JSON: the spec.json of the golden fixtures (`from_json`) and the spec an
export manifest carries (`to_dict`, `from_dict`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from copgen_rt.errors import InputError
from copgen_rt.reading import read_json
from copgen_rt.specs.kinds import RGB8, Classes, Date, LatLon, LogRange, Processing, Reflectance
from copgen_rt.specs.limits import check_limits
from copgen_rt.specs.model import DenoiserSpec, Modality, ModelSpec, ReleaseSpec, ScheduleSpec, VAESpec
from copgen_rt.specs.registry import get


def from_json(path: str | Path) -> ModelSpec:
    """Read a spec.json of the golden fixtures (COP-GEN or COP-GEN-Beta layout).

    Modality facts (bands, processing) come from the registry's spec of the same family; the
    file replaces widths, latent shapes, patch sizes and VAE hyper-parameters. VAEs the file does
    not describe are absent from the resulting spec (their modalities cannot be encoded/decoded).
    Every field is checked against the limits a model can have (`check_limits`) before anything
    is built from it.
    """
    data = read_json(path, "--spec-json")
    try:
        spec = _from_json_data(data, Path(path))
    except InputError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        reason = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise InputError(f"{path}: not a valid spec.json ({reason})") from None
    return check_limits(spec, str(path))


def _from_json_data(data: dict, path: Path) -> ModelSpec:
    order = list(data["modality_order"])
    den = data["denoiser"]
    denoiser = DenoiserSpec(
        embed_dim=den["embed_dim"],
        depth=den["depth"],
        num_heads=den["num_heads"],
        mlp_ratio=float(den.get("mlp_ratio", 4.0)),
        qkv_bias=bool(den.get("qkv_bias", False)),
    )
    sched = data.get("schedule", {})
    schedule = ScheduleSpec(
        beta_start=sched.get("beta_start", 0.00085),
        beta_end=sched.get("beta_end", 0.012),
        num_timesteps=sched.get("n", sched.get("N", 1000)),
    )
    name = f"{Path(path).parent.name or 'custom'}"
    if "vae" in data:  # COP-GEN-Beta layout: one shared VAE
        base = get("copgen-beta")
        if order != list(base.names):
            raise ValueError(f"{path}: unexpected modality order {order}")
        dd = data["vae"]["ddconfig"]
        vae = VAESpec(
            in_channels=dd["in_channels"],
            scale_factor=data["vae"]["scale_factor"],
            ch=dd["ch"],
            ch_mult=tuple(dd["ch_mult"]),
            num_res_blocks=dd["num_res_blocks"],
            z_channels=dd["z_channels"],
        )
        shape = tuple(data["latent_shape"])
        mods = tuple(
            dataclasses.replace(m, latent_shape=shape, patch_size=den["patch_size"]) for m in base.modalities
        )
        return base.replace(
            name=name,
            modalities=mods,
            denoiser=denoiser,
            vaes={"sd-kl-f8": vae},
            schedule=schedule,
            release=ReleaseSpec(),
        )
    base = get("copgen-base")
    if order != list(base.names):
        raise ValueError(f"{path}: unexpected modality order {order}")
    patch = den.get("patch_size", {})
    patched: list[Modality] = []
    vaes = {}
    for m in base.modalities:
        latent = tuple(data["latent_shapes"][m.name])
        v = data.get("vaes", {}).get(m.name)
        if v is not None:
            vaes[m.name] = VAESpec(
                in_channels=v["in_channels"],
                scale_factor=v["scale_factor"],
                ch=v["ch"],
                ch_mult=tuple(v["ch_mult"]),
                num_res_blocks=v["num_res_blocks"],
                z_channels=v["z_channels"],
            )
        patched.append(
            dataclasses.replace(m, latent_shape=latent, patch_size=int(patch.get(m.name, m.patch_size)))
        )
    return base.replace(
        name=name,
        modalities=tuple(patched),
        denoiser=denoiser,
        vaes=vaes,
        schedule=schedule,
        release=ReleaseSpec(),
    )


# --- serialisation (export manifests carry their spec) -------------------------------------------

_PROCESSING_KINDS = {cls.__name__: cls for cls in (Reflectance, LogRange, Classes, LatLon, Date, RGB8)}


def to_dict(spec: ModelSpec) -> dict:
    """A JSON-ready description of a spec; `from_dict` gives the same spec back."""

    def encode(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            data = {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            if type(obj).__name__ in _PROCESSING_KINDS:
                data["kind"] = type(obj).__name__
            return data
        if isinstance(obj, Mapping):
            return {k: encode(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return [encode(v) for v in obj]
        return obj

    return encode(spec)


def from_dict(data: Mapping) -> ModelSpec:
    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    def processing(d: Mapping) -> Processing:
        d = dict(d)
        return _PROCESSING_KINDS[d.pop("kind")](**{k: tup(v) for k, v in d.items()})

    modalities = tuple(
        Modality(
            **{
                **{k: tup(v) for k, v in m.items() if k != "processing"},
                "processing": processing(m["processing"]),
            }
        )
        for m in data["modalities"]
    )
    release_data = dict(data.get("release", {}))
    release = ReleaseSpec(
        **{
            **{k: tup(v) for k, v in release_data.items() if k != "vae_files"},
            "vae_files": {k: tup(v) for k, v in release_data.get("vae_files", {}).items()},
        }
    )
    return ModelSpec(
        name=data["name"],
        family=data["family"],
        modalities=modalities,
        denoiser=DenoiserSpec(**data["denoiser"]),
        vaes={k: VAESpec(**{kk: tup(vv) for kk, vv in v.items()}) for k, v in data["vaes"].items()},
        schedule=ScheduleSpec(**data.get("schedule", {})),
        release=release,
        posterior_per_copy=data.get("posterior_per_copy", False),
    )
