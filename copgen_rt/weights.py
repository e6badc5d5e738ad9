"""Checkpoints: reading (.pth weights-only, .safetensors), strict checking, resolving a weights
directory or a Hugging Face hub id, conversion to safetensors and synthetic random weights.

Our directory layout (written by `convert` and `make-random-weights`):
    DIR/denoiser.safetensors, DIR/vae/<vae key>.safetensors, DIR/weights.json
The released layouts are found too (`500000_nnet_ema.pth`, `models/vae/<folder>/model-50-ema.pth`,
`model-50.pt` training checkpoints, `autoencoder_kl_ema.pth`, ...).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from copgen_rt.errors import CheckpointError, first_line
from copgen_rt.files import file_sha256, write_bytes, write_text
from copgen_rt.models import Autoencoder, Denoiser
from copgen_rt.reading import read_json, regular_file
from copgen_rt.specs import ModelSpec

ModelT = TypeVar("ModelT", bound=nn.Module)

RANDOM_KEY = "copgen_rt.random"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
          "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class RandomWeightsWarning(UserWarning):
    """A pipeline runs on random weights (the demo model, make-random-weights): its outputs are
    synthetic, not predictions."""


def warn_random_weights(what: str) -> None:
    """A RandomWeightsWarning pointing at the line that made the pipeline (the first caller
    outside copgen_rt, however deep the constructors nest), not at our own code."""
    warnings.warn(f"{what} has RANDOM weights: outputs are synthetic, not predictions "
                  "(load released weights for a real model)", RandomWeightsWarning,
                  stacklevel=_outside_the_package())


def _outside_the_package() -> int:
    """`warnings.warn`'s stacklevel, counted from our caller, of the first frame outside copgen_rt."""
    package = str(Path(__file__).parent)
    frame, level = sys._getframe(1), 1  # level 1: the function that calls warnings.warn
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level




def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose fp32, fp16 or bf16") from None


@dataclass(frozen=True)
class Checkpoint:
    """A state dict read from one file, with what we know about where it came from."""

    path: Path
    state_dict: Mapping[str, Tensor]
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_random(self) -> bool:
        return self.metadata.get(RANDOM_KEY) == "true"


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a .safetensors or a pickled PyTorch file (weights only, never arbitrary code)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    path = regular_file(path, "checkpoint", CheckpointError)  # /dev/zero or a FIFO would never end
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
            return Checkpoint(path, sd, metadata)
        with warnings.catch_warnings():  # its failures become our one-line error, not a warning too
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.search(r"unsupported GLOBAL (\S+)", str(e))
        if needs is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (not a PyTorch weights file)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint: refused, the pickle holds more than "
                              f"weights (it would run {needs.group(1)}); only weights are ever loaded"
                              ) from None
    except Exception as e:  # corrupt or truncated
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(e)})") from None
    return Checkpoint(path, _unwrap(obj, path))


def _unwrap(obj, path: Path) -> dict[str, Tensor]:
    """Accept a raw state dict or an LDM training checkpoint (EMA weights under ['ema'])."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    if "ema" in obj and isinstance(obj["ema"], dict):  # model-50.pt training form
        prefix = "ema_model."
        sd = {k[len(prefix):]: v for k, v in obj["ema"].items() if k.startswith(prefix)}
        sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
        if not sd:
            raise CheckpointError(f"{path}: training checkpoint without 'ema_model.' weights")
        return sd
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {bad[0]!r} is not a tensor; not a state dict")
    return dict(obj)


def check_state_dict(model: nn.Module, sd: Mapping[str, Tensor], what: str) -> None:
    """Strict check, naming the first mismatching key and the shapes involved."""
    expected = model.state_dict()
    for key, ref in expected.items():
        if key not in sd:
            raise CheckpointError(f"{what}: missing key {key!r} (expected shape {tuple(ref.shape)})")
        if tuple(sd[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{what}: key {key!r} has shape {tuple(sd[key].shape)}, "
                                  f"the spec expects {tuple(ref.shape)}")
    for key in sd:
        if key not in expected:
            raise CheckpointError(f"{what}: unexpected key {key!r} (shape {tuple(sd[key].shape)})")
    for key, t in sd.items():
        if not t.is_floating_point():
            raise CheckpointError(f"{what}: key {key!r} has dtype {t.dtype}, expected floating point")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{what}: key {key!r} holds NaN or infinite values (corrupt checkpoint)")


def _load(model_factory: Callable[[], ModelT], ckpt: Checkpoint, what: str, device: str | torch.device,
          dtype: torch.dtype) -> ModelT:
    with torch.device("meta"):
        model = model_factory()
    check_state_dict(model, ckpt.state_dict, what)
    sd = {k: v.to(device=device, dtype=dtype) for k, v in ckpt.state_dict.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    if dtype != torch.float32:  # low precision for matmuls only: norms and embeddings stay fp32
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                module.float()
        if isinstance(model, Denoiser):
            model.pos_embed.data = model.pos_embed.data.float()
    return model.eval().requires_grad_(False)


def load_denoiser(spec: ModelSpec, ckpt: Checkpoint, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> Denoiser:
    return _load(lambda: Denoiser(spec), ckpt, f"{ckpt.path} (denoiser of {spec.name})", device, dtype)


def load_autoencoder(spec: ModelSpec, modality: str, ckpt: Checkpoint, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> Autoencoder:
    return _load(lambda: Autoencoder(spec, modality), ckpt, f"{ckpt.path} (VAE of {modality})",
                 device, dtype)


# --- locating files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFiles:
    """Where each component's checkpoint is: the denoiser and one file per VAE key."""

    denoiser: Path | None
    vaes: Mapping[str, Path]

    def vae_for(self, spec: ModelSpec, modality: str) -> Path:
        key = spec.modality(modality).vae
        if key is None or key not in self.vaes:
            raise CheckpointError(f"no VAE checkpoint for {modality} (looked for {key!r})")
        return self.vaes[key]


def _denoiser_candidates(spec: ModelSpec) -> list[str]:
    return ["denoiser.safetensors", *spec.release.denoiser_files]


def _vae_candidates(spec: ModelSpec, key: str) -> list[str]:
    names = [f"vae/{key}.safetensors", f"vae-{key}.safetensors", *spec.release.vae_files.get(key, ())]
    if len(spec.vaes) == 1:
        names.append("vae.safetensors")
    return names


def _find(root: Path, candidates: Iterable[str]) -> Path | None:
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    for rel in candidates:  # released files may sit deeper: match the whole relative path
        hits = sorted(p for p in root.rglob(Path(rel).name) if p.as_posix().endswith("/" + rel))
        if hits:
            return hits[0]
    return None


def find_weights(spec: ModelSpec, root: str | Path) -> WeightFiles:
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: weights directory not found")
    vaes = {}
    for key in spec.vaes:
        found = _find(root, _vae_candidates(spec, key))
        if found is not None:
            vaes[key] = found
    files = WeightFiles(denoiser=_find(root, _denoiser_candidates(spec)), vaes=vaes)
    _verify_manifest(root, files)
    return files


def _verify_manifest(root: Path, files: WeightFiles) -> None:
    """A weights.json (written by make-random-weights and convert) records each file's sha256:
    a file that no longer matches it is corrupt or was replaced, and is refused."""
    manifest = root / "weights.json"
    if not os.path.lexists(manifest):
        return
    data = read_json(manifest, error=CheckpointError)  # a FIFO or a link to one is refused, not skipped
    try:
        recorded = {(root / e["path"]).resolve(): e["sha256"] for e in data["files"].values()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{manifest}: not a valid weights manifest ({type(e).__name__}: {e})") from None
    for path in [files.denoiser, *files.vaes.values()]:
        if path is None:
            continue
        regular_file(path, "checkpoint", CheckpointError)
        expected = recorded.get(path.resolve())
        if expected is None:
            listed = ", ".join(sorted(p.name for p in recorded)) or "nothing"
            raise CheckpointError(f"{path}: not listed in {manifest} (which lists {listed}): "
                                  "cannot verify it")
        if file_sha256(path) != expected:
            raise CheckpointError(f"{path}: sha256 differs from {manifest.name} (corrupt or replaced file)")


# the hub's repo id rule: owner/name, word characters, '-' and '.', no '--' or '..', neither
# part starting or ending with '-' or '.'
_HUB_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"(?!.*(--|\.\.)){_HUB_PART}/{_HUB_PART}")


def is_hub_id(text: str) -> bool:
    """A well-formed 'owner/name' (anything else that does not exist locally is a missing path)."""
    return _HUB_ID.fullmatch(text) is not None


def resolve_weights(spec: ModelSpec, source: str | Path) -> WeightFiles:
    """A local directory (an existing path always wins), or a hub id like 'mespinosami/copgen-base'
    (needs network)."""
    path = Path(source).expanduser()
    if path.exists():
        return find_weights(spec, path)
    if isinstance(source, Path) or not is_hub_id(source):
        raise CheckpointError(f"no such weights directory: {source} (nor a hub id 'owner/name')")
    return _from_hub(spec, source)


def _from_hub(spec: ModelSpec, repo_id: str) -> WeightFiles:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError("huggingface_hub is not installed; pip install huggingface_hub") from None
    roots = []
    repos = [repo_id] + [r for r in (spec.release.vae_hub_id,) if r and r != repo_id]
    for repo in repos:
        try:
            roots.append(Path(snapshot_download(repo, allow_patterns=["*.pth", "*.pt", "*.safetensors"])))
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot fetch {repo} from the Hugging Face hub (offline?): {msg}. "
                                  "Download the files elsewhere and pass the directory.") from None
    found = [find_weights(spec, r) for r in roots]
    vaes: dict[str, Path] = {}
    for f in reversed(found):
        vaes.update(f.vaes)
    return WeightFiles(denoiser=found[0].denoiser, vaes=vaes)


# --- writing ------------------------------------------------------------------------------------


def write_safetensors(sd: Mapping[str, Tensor], path: Path, metadata: Mapping[str, str],
                      below: Path | None = None) -> None:
    """Atomic write (`copgen_rt.files.write_bytes`: no link below the output folder `below`
    followed)."""
    from safetensors.torch import save

    write_bytes(path, save({k: v.contiguous() for k, v in sd.items()}, metadata=dict(metadata)), below)


def _write_manifest(out: Path, spec: ModelSpec, random: bool, files: Mapping[str, Path]) -> None:
    manifest = {"spec": spec.name, "random": random,
                "files": {k: {"path": str(p.relative_to(out)), "sha256": file_sha256(p)}
                          for k, p in files.items()}}
    write_text(out / "weights.json", json.dumps(manifest, indent=1) + "\n", below=out)


def _random_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Weights that keep activations O(1): unit norms, zero biases, N(0, 1/fan_in) matrices."""
    leaf = key.rsplit(".", 1)[-1]
    is_norm = ".norm" in key or key.startswith("norm.")
    if leaf == "bias":
        return torch.zeros(shape)
    if is_norm:
        return torch.ones(shape)
    if key == "pos_embed":
        return torch.randn(shape, generator=gen) * 0.02
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=gen) / math.sqrt(fan_in)


def random_state_dict(model: nn.Module, seed: int) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: _random_tensor(k, tuple(v.shape), gen) for k, v in model.state_dict().items()}


def make_random_weights(spec: ModelSpec, out: str | Path, seed: int = 0,
                        dtype: torch.dtype = torch.float32, vaes: Iterable[str] | None = None) -> Path:
    """A synthetic checkpoint set with the spec's real shapes, marked random in its metadata."""
    out = Path(out)
    meta = {RANDOM_KEY: "true", "spec": spec.name, "seed": str(seed)}
    files: dict[str, Path] = {}
    with torch.device("meta"):
        denoiser = Denoiser(spec)
    files["denoiser"] = out / "denoiser.safetensors"
    sd = {k: v.to(dtype) for k, v in random_state_dict(denoiser, seed).items()}
    write_safetensors(sd, files["denoiser"], {**meta, "component": "denoiser"}, below=out)
    del sd
    for i, key in enumerate(spec.vaes if vaes is None else vaes):
        modality = next(m.name for m in spec.modalities if m.vae == key)
        with torch.device("meta"):
            vae = Autoencoder(spec, modality)
        files[f"vae/{key}"] = out / "vae" / f"{key}.safetensors"
        sd = {k: v.to(dtype) for k, v in random_state_dict(vae, seed + 1 + i).items()}
        write_safetensors(sd, files[f"vae/{key}"], {**meta, "component": f"vae/{key}"}, below=out)
    _write_manifest(out, spec, True, files)
    return out


def convert(spec: ModelSpec, source: str | Path, out: str | Path,
            dtype: torch.dtype | None = None) -> Path:
    """Check every found checkpoint against the spec and write our safetensors layout."""
    found = resolve_weights(spec, source)
    out = Path(out)
    files: dict[str, Path] = {}
    random = False
    jobs: list[tuple[str, Path, nn.Module]] = []
    if found.denoiser is not None:
        with torch.device("meta"):
            jobs.append(("denoiser", found.denoiser, Denoiser(spec)))
    for key, path in found.vaes.items():
        modality = next(m.name for m in spec.modalities if m.vae == key)
        with torch.device("meta"):
            jobs.append((f"vae/{key}", path, Autoencoder(spec, modality)))
    if not jobs:
        raise CheckpointError(f"{source}: no checkpoint of {spec.name} found")
    for name, path, model in jobs:
        ckpt = read_checkpoint(path)
        check_state_dict(model, ckpt.state_dict, f"{path} ({name})")
        random = random or ckpt.is_random
        sd = {k: v if dtype is None else v.to(dtype) for k, v in ckpt.state_dict.items()}
        files[name] = out / f"{name}.safetensors"
        write_safetensors(sd, files[name], {**ckpt.metadata, "spec": spec.name, "component": name,
                                            "source": path.name}, below=out)
    _write_manifest(out, spec, random, files)
    return out
