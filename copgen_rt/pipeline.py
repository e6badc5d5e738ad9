"""Pipeline: wires spec, weights, backends, processing and the sampler. Nothing else."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from copgen_rt import processing, specs
from copgen_rt.backends import DenoiserBackend, TorchVAE, VAEBackend, make_denoiser_backend
from copgen_rt.models.autoencoder import posterior_sample
from copgen_rt.sampler import NoiseSource, row_seeds, sample
from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import build_program, resolve_preset
from copgen_rt.specs import ModelSpec
from copgen_rt.weights import (Checkpoint, CheckpointError, file_sha256, load_autoencoder,
                               load_denoiser, parse_dtype, read_checkpoint, resolve_weights)


@dataclass
class Provenance:
    """What produced the outputs: written into every artifact."""

    spec: str
    files: dict[str, str] = field(default_factory=dict)  # component -> path
    random: bool = False

    def hashes(self) -> dict[str, str]:
        return {k: _short_hash(Path(p)) for k, p in self.files.items()}


def _short_hash(path: Path) -> str:
    stat = path.stat()
    return _cached_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_hash(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of a weights file, computed once per (path, size, mtime)."""
    return file_sha256(Path(path))[:16]


class _MomentsCache:
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


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class Pipeline:
    """Any-to-any generation for one model spec.

    `generate` takes conditions in physical units (see `copgen_rt.processing`), in model space
    (`physical_units=False`) or as latents (`conditions_are_latents=True`), and returns physical
    values (decode=True) or final latents (decode=False).
    """

    def __init__(self, spec: ModelSpec, denoiser: DenoiserBackend,
                 vae_loader: Callable[[str], VAEBackend] | None = None,
                 provenance: Provenance | None = None, device: torch.device | str = "cpu"):
        self.spec = spec
        self.denoiser = denoiser
        self.device = torch.device(device)
        self.provenance = provenance or Provenance(spec.name)
        self.schedule = NoiseSchedule(spec.schedule)
        self._vae_loader = vae_loader
        self._vaes: dict[str, VAEBackend] = {}
        self._moments = _MomentsCache()

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_weights(cls, spec: ModelSpec | str, denoiser: str | Path,
                     vaes: Mapping[str, str | Path] | None = None, device=None,
                     dtype: torch.dtype | str = torch.float32,
                     vae_dtype: torch.dtype | str = torch.float32,
                     backend: str | Mapping[str, str] = "torch", cuda_graphs: bool = True) -> "Pipeline":
        """Checkpoint files: the denoiser and {modality: VAE file} (VAEs load on first use).

        `backend` is one name for every component or {"denoiser": ..., "vae": ...}: "torch",
        "triton" (denoiser only) or "onnxruntime" (exported on first use into a cache folder).
        `dtype="auto"` picks what the device runs natively (`copgen_rt.device`). On CUDA the torch
        denoiser replays CUDA graphs per batch bucket unless `cuda_graphs=False`.
        """
        spec = specs.get(spec) if isinstance(spec, str) else spec
        device = _device(device)
        choice = {"denoiser": backend, "vae": backend} if isinstance(backend, str) else \
            {"denoiser": "torch", "vae": "torch", **backend}
        ckpt = read_checkpoint(denoiser)
        if dtype == "auto":
            from copgen_rt.device import choose

            dtype = choose(str(device)).dtype
        model = load_denoiser(spec, ckpt, device, parse_dtype(dtype))
        provenance = Provenance(spec.name, {"denoiser": str(ckpt.path)}, ckpt.is_random)
        if choice["denoiser"] == "onnxruntime":
            from copgen_rt.backends.onnxruntime_backend import cached_onnx_denoiser

            den_backend = cached_onnx_denoiser(spec, model, ckpt.path)
        else:
            den_backend = make_denoiser_backend(choice["denoiser"], model)
            if cuda_graphs and device.type == "cuda" and choice["denoiser"] == "torch":
                from copgen_rt.backends.cuda_graphs import CudaGraphDenoiser

                den_backend = CudaGraphDenoiser(den_backend)
        vae_files: dict[str, Path] = {}
        for name, path in (vaes or {}).items():
            key = spec.modality(name).vae if name in spec.names else name
            if key not in spec.vaes:
                raise ValueError(f"{name}: not a modality with a VAE in {spec.name}")
            vae_files[key] = Path(path)
        vae_dtype = parse_dtype(vae_dtype)
        # every file the pipeline may load, known up front: provenance does not change as VAEs load
        provenance.files.update({f"vae/{k}": str(p) for k, p in vae_files.items()})

        def load_vae(modality: str) -> VAEBackend:
            key = spec.modality(modality).vae
            if key not in vae_files:
                raise CheckpointError(f"no VAE checkpoint given for {modality}")
            vckpt: Checkpoint = read_checkpoint(vae_files[key])
            provenance.random = provenance.random or vckpt.is_random
            vae = load_autoencoder(spec, modality, vckpt, device, vae_dtype)
            if choice["vae"] == "onnxruntime":
                from copgen_rt.backends.onnxruntime_backend import cached_onnx_vae

                return cached_onnx_vae(spec, key, vae, vckpt.path)
            if choice["vae"] != "torch":
                raise ValueError(f"unknown VAE backend {choice['vae']!r}; choose torch or onnxruntime")
            return TorchVAE(vae)

        return cls(spec, den_backend, load_vae, provenance, device)

    @classmethod
    def from_export(cls, folder: str | Path, device=None, providers: Sequence[str] | None = None
                    ) -> "Pipeline":
        """An export folder of `copgen-rt export`: ONNX files (onnxruntime) or TensorRT engines."""
        from copgen_rt.backends.exported import load_export

        spec, denoiser_backend, vae_loader, provenance = load_export(Path(folder), providers)
        return cls(spec, denoiser_backend, vae_loader, provenance, _device(device))

    @classmethod
    def from_pretrained(cls, spec: ModelSpec | str, weights: str | Path, **kwargs) -> "Pipeline":
        """A weights directory (ours or the released layout) or a hub id."""
        spec = specs.get(spec) if isinstance(spec, str) else spec
        files = resolve_weights(spec, weights)
        if files.denoiser is None:
            raise CheckpointError(f"{weights}: no denoiser checkpoint of {spec.name} found")
        return cls.from_weights(spec, files.denoiser, vaes=dict(files.vaes), **kwargs)

    @property
    def is_random(self) -> bool:
        return self.provenance.random

    def vae(self, modality: str) -> VAEBackend:
        key = self.spec.modality(modality).vae
        if key is None:
            raise ValueError(f"{modality} is a scalar modality without a VAE")
        if key not in self._vaes:
            if self._vae_loader is None:
                raise CheckpointError(f"this pipeline has no VAE for {modality}")
            self._vaes[key] = self._vae_loader(modality)
        return self._vaes[key]

    # --- generation ---------------------------------------------------------------------------

    def generate(self, generate: Sequence[str], conditions: Mapping[str, object] | None = None,
                 conditions_are_latents: bool = False, n_samples: int = 1, steps: int | None = None,
                 solver: str | None = None, others: str = "reference", preset: str | None = None,
                 seed: int | Sequence[int] | None = None,
                 initial_noise: Mapping[str, Tensor] | None = None,
                 others_noise: Callable[[int, str], Tensor] | None = None,
                 posterior_noise: Mapping[str, Tensor] | None = None,
                 decode: bool = True, physical_units: bool = True,
                 batch_size: int | None = None) -> dict[str, Tensor]:
        spec = self.spec
        if isinstance(generate, str):
            generate = [generate]
        generate = spec.canonical(generate)
        conditions = dict(conditions or {})
        cond_names = spec.canonical(conditions)
        if n_samples < 1:
            raise ValueError("n_samples must be >= 1")
        program = build_program(self.schedule, *resolve_preset(preset, solver, steps))
        both = set(generate) & set(cond_names)
        if both:
            raise ValueError(f"modalities both generated and conditioned: {', '.join(sorted(both))}")
        model_inputs = {}
        for name in cond_names:
            value = conditions[name]
            x = processing.preprocess(spec.modality(name), value, spec.pixel_shape(name)) if physical_units and not \
                conditions_are_latents else torch.as_tensor(value, dtype=torch.float32)
            model_inputs[name] = self._check_condition(name, x, conditions_are_latents)
        batch = self._batch_size(model_inputs, batch_size)
        if seed is None:
            seed = secrets.randbits(62)
        cond_seeds = [seed + b for b in range(batch)] if isinstance(seed, int) else list(seed)
        if len(cond_seeds) != batch:
            raise ValueError(f"seed list has {len(cond_seeds)} entries for a batch of {batch}")
        noise = NoiseSource(row_seeds(cond_seeds, n_samples), self.device)
        rows = batch * n_samples

        latents = {}
        for name in cond_names:  # posterior noise first, then x_init, then per-call noise
            latents[name] = self._condition_latent(name, model_inputs[name], conditions_are_latents,
                                                   n_samples, noise, (posterior_noise or {}).get(name))
        x_init = {}
        for name in generate:
            shape = spec.modality(name).latent_shape
            given = (initial_noise or {}).get(name)
            x_init[name] = noise.draw(shape) if given is None else \
                self._check_shape(f"initial_noise[{name}]", torch.as_tensor(given), (rows, *shape))
        if others_noise is None:
            others_noise = lambda call, name: noise.draw(spec.modality(name).latent_shape)  # noqa: E731

        result = sample(spec, self.denoiser, program, generate, latents, x_init, others, others_noise)
        return self.decode(result, physical_units) if decode else result

    def decode(self, latents: Mapping[str, Tensor], physical_units: bool = True) -> dict[str, Tensor]:
        """Final latents -> model-space pixels (physical_units=False) or physical values."""
        return {name: self._decode(name, z, physical_units) for name, z in latents.items()}

    # --- helpers ------------------------------------------------------------------------------

    def _batch_size(self, inputs: Mapping[str, Tensor], batch_size: int | None) -> int:
        sizes = {x.shape[0] for x in inputs.values()}
        if len(sizes) > 1:
            raise ValueError(f"conditions have different batch sizes: {sorted(sizes)}")
        if sizes:
            (b,) = sizes
            if batch_size is not None and batch_size != b:
                raise ValueError(f"batch_size={batch_size} but conditions have batch {b}")
            return b
        if batch_size is None:
            return 1
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return batch_size

    @staticmethod
    def _check_shape(what: str, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what}: contains NaN or infinite values")
        return x.float()

    def _check_condition(self, name: str, x: Tensor, is_latent: bool) -> Tensor:
        m = self.spec.modality(name)
        shape = m.latent_shape if is_latent or not m.is_image else self.spec.pixel_shape(name)
        if x.dim() == len(shape):
            x = x.unsqueeze(0)
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"condition {name}: expected (B, {', '.join(map(str, shape))}), "
                             f"got {tuple(x.shape)}")
        return self._check_shape(f"condition {name}", x, (x.shape[0], *shape))

    def _condition_latent(self, name: str, x: Tensor, is_latent: bool, n_samples: int,
                          noise: NoiseSource, injected: Tensor | None) -> Tensor:
        m = self.spec.modality(name)
        if is_latent or not m.is_image:
            return x.to(self.device).repeat_interleave(n_samples, dim=0)
        vae = self.vae(name)
        moments = self._moments.get(self._moments.key(name, x), lambda: vae.encode_moments(x.to(self.device)))
        moments = moments.repeat_interleave(n_samples, dim=0)
        shape = (moments.shape[1] // 2, *moments.shape[2:])
        eps = noise.draw(shape)  # every row draws, so streams stay aligned whatever the policy
        if injected is not None:
            eps = self._check_shape(f"posterior_noise[{name}]", torch.as_tensor(injected),
                                    tuple(eps.shape)).to(self.device)
        elif not self.spec.posterior_per_copy:  # COP-GEN: the copies share the first one's sample
            eps = eps[::n_samples].repeat_interleave(n_samples, dim=0)
        return posterior_sample(moments, eps, self.spec.vae_for(name).scale_factor)

    def _decode(self, name: str, z: Tensor, physical_units: bool) -> Tensor:
        m = self.spec.modality(name)
        x = self.vae(name).decode(z) if m.is_image else z
        return processing.postprocess(m, x) if physical_units else x
