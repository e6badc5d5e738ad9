"""Pipeline: wires spec, weights, backends, processing and the sampler. Nothing else."""

from __future__ import annotations

import hashlib
import numbers
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from copgen_rt import processing, specs
from copgen_rt.backends import DenoiserBackend, VAEBackend
from copgen_rt.device import EngineChoice, int8_rest_precision
from copgen_rt.models.autoencoder import posterior_sample
from copgen_rt.provenance import Provenance
from copgen_rt.sampler import NoiseSource, row_seeds, sample
from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import build_program, resolve_preset
from copgen_rt.specs import LatLon, ModelSpec
from copgen_rt.tuning import Tuning, measured_choice
from copgen_rt.weights import (
    Checkpoint,
    CheckpointError,
    load_autoencoder,
    load_denoiser,
    parse_dtype,
    read_checkpoint,
    resolve_weights,
    warn_random_weights,
)


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


def dtype_name(dtype: torch.dtype | str) -> str:
    """fp32 | fp16 | bf16 for a torch dtype or any name `parse_dtype` takes."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[parse_dtype(dtype)]


def _device(device: str | torch.device | None) -> torch.device:
    try:
        chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "meta"):  # meta: shapes only, no data
        raise ValueError(f"device {device!r}: copgen-rt runs on 'cpu', 'cuda' or 'cuda:N'")
    return chosen


class _Reporting:
    """A denoiser that reports each call (a progress bar's step) and otherwise is the one it wraps."""

    def __init__(self, inner: DenoiserBackend, progress: Callable[[float], None], calls: int):
        self.inner, self.progress, self.share = inner, progress, 1.0 / max(calls, 1)

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        out = self.inner(latents, timesteps)
        self.progress(self.share)
        return out


class _Recording:
    """A denoiser that keeps the inputs of every call (`Pipeline.chip_calls`)."""

    name = "recording"

    def __init__(self, inner: DenoiserBackend):
        self.inner = inner
        self.calls: list[list[Tensor]] = []

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        self.calls.append([*latents, *timesteps])
        return self.inner(latents, timesteps)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_dtype(name: str, value: object) -> None:
    """Booleans and complex numbers are no physical values: refused, never cast."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and (dtype in (torch.bool, torch.complex64, torch.complex128) or
                              getattr(dtype, "kind", "") in ("b", "c")):
        raise ValueError(f"condition {name}: values of dtype {dtype} are not physical values")


class Pipeline:
    """Any-to-any generation for one model spec.

    `generate` takes conditions in physical units (see `copgen_rt.processing`), in model space
    (`physical_units=False`) or as latents (`conditions_are_latents=True`), and returns physical
    values (decode=True) or final latents (decode=False).

    Gap filling: `known={modality: (values, valid_mask)}` for a generated image modality holds
    its valid pixels (same units as the conditions) and the mask of them (True = valid, on the
    modality's own pixel grid, or on its latent grid with `conditions_are_latents`). See
    `_known_cells` for how the mask reaches the latent grid.
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
        if self.provenance.random:
            warn_random_weights(f"this {spec.name} pipeline")
        self.engines: EngineChoice | None = None  # from_weights: what runs what, and why
        self.tuning: Tuning | None = None  # from_weights with "auto" on a CPU: what was measured

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_weights(cls, spec: ModelSpec | str, denoiser: str | Path,
                     vaes: Mapping[str, str | Path] | None = None, device: str | torch.device | None = None,
                     dtype: torch.dtype | str = torch.float32,
                     vae_dtype: torch.dtype | str = torch.float32,
                     backend: str | Mapping[str, str] = "auto", cuda_graphs: bool = True) -> Pipeline:
        """Checkpoint files: the denoiser and {modality: VAE file} (VAEs load on first use).

        `backend` is one name for every component or {"denoiser": ..., "vae": ...}: "auto"
        (OpenVINO on CPUs where it is installed, else torch), "torch", "triton" (denoiser only),
        "onnxruntime" or "openvino" (exported on first use into a cache folder, compiled once);
        `copgen_rt.device.choose_engine` decides and refuses bad pairs. `dtype="auto"` picks what
        the device runs natively. On CUDA the torch denoiser replays CUDA graphs per batch bucket
        unless `cuda_graphs=False`.
        """
        from copgen_rt.backends import EXPORTED_ENGINES, denoiser_backend, vae_backend
        from copgen_rt.device import choose_engine

        spec = specs.get(spec) if isinstance(spec, str) else spec
        device = _device(device)
        requested = None if dtype == "auto" else "int8" if dtype == "int8" else dtype_name(dtype)
        engines = choose_engine(str(device), backend, requested, dtype_name(vae_dtype))
        ckpt = read_checkpoint(denoiser)
        engines, tuning = measured_choice(spec, engines)  # after the checkpoint read: it may be broken
        exported = engines.denoiser in EXPORTED_ENGINES  # exports are fp32 graphs
        # int8: the layers it leaves unquantized run in the engine's best float precision
        den_dtype = int8_rest_precision() if engines.dtype == "int8" else engines.dtype
        model = load_denoiser(spec, ckpt, device, torch.float32 if exported else parse_dtype(den_dtype))
        engine = f"{engines.denoiser} {engines.dtype} (VAEs {engines.vae} {dtype_name(vae_dtype)})"
        provenance = Provenance(spec.name, {"denoiser": str(ckpt.path)}, ckpt.is_random, engine)
        den_backend = denoiser_backend(engines.denoiser, spec, model, ckpt.path, den_dtype, cuda_graphs)
        vae_files: dict[str, Path] = {}
        for name, path in (vaes or {}).items():
            key = spec.modality(name).vae if name in spec.names else name
            if key is None or key not in spec.vaes:
                raise ValueError(f"{name}: not a modality with a VAE in {spec.name}")
            vae_files[key] = Path(path)
        vae_precision = dtype_name(vae_dtype)
        # every file the pipeline may load, known up front: provenance does not change as VAEs load
        provenance.files.update({f"vae/{k}": str(p) for k, p in vae_files.items()})

        def load_vae(modality: str) -> VAEBackend:
            key = spec.modality(modality).vae
            if key not in vae_files:
                raise CheckpointError(f"no VAE checkpoint given for {modality}")
            vckpt: Checkpoint = read_checkpoint(vae_files[key])
            if vckpt.is_random and not provenance.random:
                warn_random_weights(f"the {modality} VAE of this {spec.name} pipeline")
            provenance.random = provenance.random or vckpt.is_random
            load_dtype = torch.float32 if engines.vae in EXPORTED_ENGINES else parse_dtype(vae_dtype)
            vae = load_autoencoder(spec, modality, vckpt, device, load_dtype)
            return vae_backend(engines.vae, spec, key, vae, vckpt.path, vae_precision)

        pipeline = cls(spec, den_backend, load_vae, provenance, device)
        pipeline.engines, pipeline.tuning = engines, tuning
        if engines.dtype == "int8":
            from copgen_rt.backends.openvino_backend import OpenVinoDenoiser, quantize_int8

            assert isinstance(den_backend, OpenVinoDenoiser)  # choose_engine: int8 is openvino's
            pipeline.denoiser = quantize_int8(den_backend, pipeline.chip_calls)
        return pipeline

    @classmethod
    def from_export(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        providers: Sequence[str] | None = None,
    ) -> Pipeline:
        """An export folder of `copgen-rt export`: ONNX files (onnxruntime) or TensorRT engines."""
        from copgen_rt.backends.exported import load_export

        spec, denoiser_backend, vae_loader, provenance = load_export(Path(folder), providers)
        return cls(spec, denoiser_backend, vae_loader, provenance, _device(device))

    @classmethod
    def from_pretrained(
        cls, spec: ModelSpec | str, weights: str | Path | None = None, **kwargs: Any
    ) -> Pipeline:
        """A weights directory (ours or the released layout) or a hub id; without `weights`, the
        bundled demo model (copgen-demo only). `kwargs` go to `from_weights`."""
        spec = specs.get(spec) if isinstance(spec, str) else spec
        if weights is None:
            from copgen_rt import demo

            if spec.name != demo.DEMO_MODEL:
                raise ValueError(
                    f"{spec.name} needs weights (a directory or a hub id); only "
                    f"{demo.DEMO_MODEL} ships with the package"
                )
            weights = demo.weights_path()
        files = resolve_weights(spec, weights)
        if files.denoiser is None:
            raise CheckpointError(f"{weights}: no denoiser checkpoint of {spec.name} found")
        return cls.from_weights(spec, files.denoiser, vaes=dict(files.vaes), **kwargs)

    @classmethod
    def demo(cls, **kwargs: Any) -> Pipeline:
        """The bundled demo model (copgen-demo): RANDOM weights, so its outputs are synthetic
        textures, not predictions; for trying the API (`copgen_rt.demo.read_chip` gives inputs)."""
        return cls.from_pretrained("copgen-demo", **kwargs)

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

    def generate(
        self,
        generate: Sequence[str],
        conditions: Mapping[str, object] | None = None,
        conditions_are_latents: bool = False,
        n_samples: int = 1,
        steps: int | None = None,
        solver: str | None = None,
        others: str = "reference",
        preset: str | None = None,
        seed: int | Sequence[int] | None = None,
        initial_noise: Mapping[str, Tensor] | None = None,
        others_noise: Callable[[int, str], Tensor] | None = None,
        posterior_noise: Mapping[str, Tensor] | None = None,
        decode: bool = True,
        physical_units: bool = True,
        batch_size: int | None = None,
        known: Mapping[str, tuple[object, object]] | None = None,
        jumps: int = 0,
        jump_length: int = 1,
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, Tensor]:
        """Generate `generate` given `conditions`; see the class docstring for units.

        progress: called after every network call with the share of this call's work it did
        (1 / number of calls), e.g. for a progress bar that moves within one batch.

        known: {generated image modality: (values (B, C, H, W), valid mask (B, H, W))}. Its valid
        latent cells are held to the encoded values (RePaint replacement at every network call)
        and come back exactly; the other cells are generated. If every pixel of every known
        modality is valid and nothing else is generated, the input comes back without any
        network call. A known modality without one fully valid latent cell is dropped, so the
        call is the plain generation with the same seed. `jumps`/`jump_length`: RePaint
        resampling (`copgen_rt.solvers.build_program`); only with a known region.
        """
        spec = self.spec
        if isinstance(generate, str):
            generate = [generate]
        generate = spec.canonical(generate)
        conditions = dict(conditions or {})
        cond_names = spec.canonical(conditions)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a whole number >= 1, got {n_samples!r}")
        unknown = set(initial_noise or {}) - set(generate)
        if unknown:
            raise ValueError(f"initial_noise for {', '.join(sorted(unknown))}, which is not generated")
        unknown = set(posterior_noise or {}) - set(cond_names)
        if unknown:
            raise ValueError(f"posterior_noise for {', '.join(sorted(unknown))}, which is not a condition")
        solver_steps = resolve_preset(preset, solver, steps)
        both = set(generate) & set(cond_names)
        if both:
            raise ValueError(f"modalities both generated and conditioned: {', '.join(sorted(both))}")
        model_inputs = {}
        for name in cond_names:
            value = conditions[name]
            _check_dtype(name, value)
            if physical_units and not conditions_are_latents:
                x = processing.preprocess(spec.modality(name), value, spec.pixel_shape(name))
            else:
                x = torch.as_tensor(value, dtype=torch.float32)
            model_inputs[name] = self._check_condition(name, x, conditions_are_latents)
        known = dict(known or {})
        if jumps and not known:
            raise ValueError("resampling jumps need a known region (known=...)")
        known_inputs = self._known_inputs(generate, known, physical_units, conditions_are_latents)
        batch = self._batch_size(
            {**model_inputs, **{k: x for k, (x, _) in known_inputs.items()}},
            batch_size,
            initial_noise or {},
            n_samples,
        )
        if (
            known_inputs
            and set(known_inputs) == set(generate)
            and (decode or conditions_are_latents)
            and all(bool(valid.all()) for _, valid in known_inputs.values())
        ):
            return self._known_as_output(
                known, known_inputs, n_samples, physical_units, decode, conditions_are_latents
            )
        known_inputs = {
            k: (x, cells)
            for k, (x, valid) in known_inputs.items()
            if bool((cells := self._known_cells(k, valid, conditions_are_latents)).any())
        }
        program = build_program(
            self.schedule, *solver_steps, jumps=jumps if known_inputs else 0, jump_length=jump_length
        )
        if seed is None:
            seed = secrets.randbits(62)
        cond_seeds = (
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
        noise = NoiseSource(row_seeds(cond_seeds, n_samples), self.device)
        rows = batch * n_samples

        latents = {}
        for name in cond_names:  # posterior noise first, then x_init, then per-call noise
            latents[name] = self._condition_latent(
                name,
                model_inputs[name],
                conditions_are_latents,
                n_samples,
                noise,
                (posterior_noise or {}).get(name),
            )
        known_latents = {
            name: (
                self._condition_latent(name, x, conditions_are_latents, n_samples, noise, None),
                cells.to(self.device).repeat_interleave(n_samples, dim=0),
            )
            for name, (x, cells) in known_inputs.items()
        }
        x_init = {}
        for name in generate:
            shape = spec.modality(name).latent_shape
            given = (initial_noise or {}).get(name)
            x_init[name] = (
                noise.draw(shape)
                if given is None
                else self._check_shape(f"initial_noise[{name}]", torch.as_tensor(given), (rows, *shape))
            )
        if others_noise is None:
            others_noise = lambda call, name: noise.draw(spec.modality(name).latent_shape)  # noqa: E731

        total = sum(spec.modality(n).latent_size for n in generate)
        denoiser = (
            self.denoiser if progress is None else _Reporting(self.denoiser, progress, program.num_calls)
        )
        result = sample(
            spec,
            denoiser,
            program,
            generate,
            latents,
            x_init,
            others,
            others_noise,
            known_latents,
            lambda call: noise.draw((total,)),
        )
        return self.decode(result, physical_units) if decode else result

    def chip_calls(self, seeds: Sequence[int] = (0, 1)) -> list[list[Tensor]]:
        """The denoiser's inputs ([*latents, *timesteps] per network call) over a `draft` run on
        the bundled real chip, its S2 L2A groups and location given and every other modality
        generated, one sample per seed: what `--dtype int8` calibrates on (seeds 0 and 1), and
        what the precision benchmarks evaluate on (other seeds)."""
        from copgen_rt import demo

        given = [m.name for m in self.spec.modalities if m.product == "S2L2A"]
        if not given:
            raise ValueError(f"the bundled chip is S2 L2A; {self.spec.name} has no S2 L2A modality")
        batch = len(seeds)
        conditions: dict[str, object] = {n: demo.read_chip(n).repeat(batch, 1, 1, 1) for n in given}
        location = next((m.name for m in self.spec.modalities if isinstance(m.processing, LatLon)), None)
        if location:
            conditions[location] = demo.chip_location().repeat(batch, 1)
        recording = _Recording(self.denoiser)
        inner, self.denoiser = self.denoiser, recording
        try:
            self.generate([n for n in self.spec.names if n not in conditions], conditions, preset="draft",
                          seed=list(seeds), decode=False)
        finally:
            self.denoiser = inner
        return recording.calls

    def decode(self, latents: Mapping[str, Tensor], physical_units: bool = True) -> dict[str, Tensor]:
        """Final latents -> model-space pixels (physical_units=False) or physical values."""
        return {name: self._decode(name, z, physical_units) for name, z in latents.items()}

    # --- helpers ------------------------------------------------------------------------------

    def _batch_size(
        self,
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
            return self._noise_batch(initial_noise, n_samples) if initial_noise else 1
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return batch_size

    @staticmethod
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
            return 1  # scalars: refused with the expected shape by _check_shape
        (count,) = counts
        if count == 0 or count % n_samples:
            raise ValueError(
                f"initial_noise has {count} rows, which is not batch x n_samples for n_samples={n_samples}"
            )
        return count // n_samples

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
            raise ValueError(
                f"condition {name}: expected (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
            )
        return self._check_shape(f"condition {name}", x, (x.shape[0], *shape))

    def _condition_latent(
        self,
        name: str,
        x: Tensor,
        is_latent: bool,
        n_samples: int,
        noise: NoiseSource,
        injected: Tensor | None,
    ) -> Tensor:
        m = self.spec.modality(name)
        if is_latent or not m.is_image:
            return x.to(self.device).repeat_interleave(n_samples, dim=0)
        vae = self.vae(name)
        moments = self._moments.get(self._moments.key(name, x), lambda: vae.encode_moments(x.to(self.device)))
        moments = moments.repeat_interleave(n_samples, dim=0)
        shape = (moments.shape[1] // 2, *moments.shape[2:])
        eps = noise.draw(shape)  # every row draws, so streams stay aligned whatever the policy
        if injected is not None:
            eps = self._check_shape(
                f"posterior_noise[{name}]", torch.as_tensor(injected), tuple(eps.shape)
            ).to(self.device)
        elif not self.spec.posterior_per_copy:  # COP-GEN: the copies share the first one's sample
            eps = eps[::n_samples].repeat_interleave(n_samples, dim=0)
        return posterior_sample(moments, eps, self.spec.vae_for(name).scale_factor)

    def _known_inputs(
        self,
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
        for name in self.spec.canonical(known):
            if name not in generate:
                raise ValueError(f"known values for {name}, which is not generated")
            m = self.spec.modality(name)
            if not m.is_image:
                raise ValueError(
                    f"known {name}: only image modalities can be partly known; give it as a condition"
                )
            entry = known[name]
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise ValueError(f"known {name}: expected a pair (values, valid_mask)")
            values, valid = entry
            shape = m.latent_shape if is_latent else self.spec.pixel_shape(name)
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
            valid = self._valid_mask(name, valid, (x.shape[0], *shape[1:])).to(x.device)
            where = valid.unsqueeze(1).expand_as(x)
            if not bool(torch.isfinite(x[where]).all()):
                raise ValueError(f"known {name}: NaN or infinite values at valid pixels")
            count = where.sum(dim=(2, 3), keepdim=True)
            mean = torch.where(where, x, 0.0).sum(dim=(2, 3), keepdim=True) / count.clamp_min(1)
            out[name] = (torch.where(where, x, mean), valid)
        return out

    @staticmethod
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

    def _known_cells(self, name: str, valid: Tensor, is_latent: bool) -> Tensor:
        """Pixel mask -> latent-cell mask: a cell is known only if ALL its pixels are valid.

        Strict on purpose: a partly clouded cell's latent would encode the fill, and the
        generated cell is replaced by valid pixels in pixel-space compositing anyway.
        """
        if is_latent:
            return valid
        _, h, w = self.spec.modality(name).latent_shape
        b, ph, pw = valid.shape
        return valid.reshape(b, h, ph // h, w, pw // w).all(dim=4).all(dim=2)

    def _known_as_output(
        self,
        known: Mapping[str, tuple[object, object]],
        inputs: Mapping[str, tuple[Tensor, Tensor]],
        n_samples: int,
        physical_units: bool,
        decode: bool,
        is_latent: bool,
    ) -> dict[str, Tensor]:
        """Every pixel is valid: the input itself, in the units generate would return (decoded,
        or the given latents when they are latents)."""
        out = {}
        for name, (x, _) in inputs.items():
            m = self.spec.modality(name)
            if decode and physical_units and not is_latent:
                given = torch.as_tensor(known[name][0]).to(processing.physical_dtype(m))
                x = given.unsqueeze(0) if given.dim() == x.dim() - 1 else given
            elif decode and is_latent:
                x = self._decode(name, x.to(self.device), physical_units)
            out[name] = x.to(self.device).repeat_interleave(n_samples, dim=0)
        return out

    def _decode(self, name: str, z: Tensor, physical_units: bool) -> Tensor:
        m = self.spec.modality(name)
        x = self.vae(name).decode(z) if m.is_image else z
        return processing.postprocess(m, x) if physical_units else x
