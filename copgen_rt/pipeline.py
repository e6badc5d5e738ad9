"""Pipeline: wires spec, weights, backends, processing and the sampler. Nothing else.

What it loads is in `copgen_rt.loading`, the checks of what `generate` is given in
`copgen_rt.conditions`."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from copgen_rt import processing, specs
from copgen_rt.backends import DenoiserBackend, VAEBackend
from copgen_rt.conditions import (
    MomentsCache,
    batch_of,
    check_condition,
    check_dtype,
    check_plausible,
    check_shape,
    condition_seeds,
    known_cells,
    known_values,
)
from copgen_rt.errors import CheckpointError
from copgen_rt.loading import dtype_name, load_weights, pretrained_files, torch_device
from copgen_rt.models.autoencoder import posterior_sample
from copgen_rt.plan import RuntimePlan
from copgen_rt.plan import resolve as resolve_plan
from copgen_rt.provenance import Provenance
from copgen_rt.sampler import NoiseSource, row_seeds, sample
from copgen_rt.schedule import NoiseSchedule
from copgen_rt.solvers import build_program, resolve_preset
from copgen_rt.specs import LatLon, ModelSpec
from copgen_rt.weights import read_checkpoint, warn_random_weights


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


class Pipeline:
    """Any-to-any generation for one model spec.

    `generate` takes conditions in physical units (see `copgen_rt.processing`), in model space
    (`physical_units=False`) or as latents (`conditions_are_latents=True`), and returns physical
    values (decode=True) or final latents (decode=False).

    Gap filling: `known={modality: (values, valid_mask)}` for a generated image modality holds
    its valid pixels (same units as the conditions) and the mask of them (True = valid, on the
    modality's own pixel grid, or on its latent grid with `conditions_are_latents`). See
    `copgen_rt.conditions.known_cells` for how the mask reaches the latent grid.
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
        self._moments = MomentsCache()
        if self.provenance.random:
            warn_random_weights(f"this {spec.name} pipeline")
        self.plan: RuntimePlan | None = None  # from_weights: what runs where, and why

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_weights(cls, spec: ModelSpec | str, denoiser: str | Path,
                     vaes: Mapping[str, str | Path] | None = None, device: str | torch.device | None = None,
                     dtype: torch.dtype | str = torch.float32,
                     vae_dtype: torch.dtype | str = torch.float32,
                     engine: str | Mapping[str, str] = "auto", cuda_graphs: bool = True,
                     plan: RuntimePlan | None = None, backend: str | Mapping[str, str] | None = None
                     ) -> Pipeline:
        """Checkpoint files: the denoiser and {modality: VAE file} (VAEs load on first use).

        `plan` (`copgen_rt.plan.resolve`) says what runs where; without one it is resolved here
        from `device`, `dtype` ("auto": what the device runs natively; "int8": W8A8 OpenVINO on
        CPUs), `vae_dtype` and `engine`: one engine name for every component or {"denoiser":
        ..., "vae": ...}: "auto" (on CPUs the fastest measured on this CPU kind), "torch",
        "torch-compile", "triton" (denoiser only), "onnxruntime" or "openvino" (exported on first
        use into a cache folder, compiled once). Bad pairs are refused before anything loads. On
        CUDA the torch denoiser replays CUDA graphs per batch bucket unless `cuda_graphs=False`.
        `backend` is the old name of `engine` (deprecated).
        """
        if backend is not None:
            warnings.warn("Pipeline.from_weights(backend=...) is now engine=...", DeprecationWarning,
                          stacklevel=2)
            engine = backend
        spec = specs.get(spec) if isinstance(spec, str) else spec
        ckpt = read_checkpoint(denoiser)  # before any engine is measured: it may be broken
        if plan is None:
            requested = dtype if dtype in ("auto", "int8") else dtype_name(dtype)
            plan = resolve_plan(spec, None if device is None else str(torch_device(device)), engine,
                                str(requested), dtype_name(vae_dtype))
        den_backend, load_vae, provenance = load_weights(spec, ckpt, vaes, torch_device(plan.device), plan,
                                                         cuda_graphs)
        pipeline = cls(spec, den_backend, load_vae, provenance, plan.device)
        pipeline.plan = plan
        if plan.dtype == "int8":
            from copgen_rt.backends.openvino_backend import OpenVinoDenoiser, quantize_int8

            assert isinstance(den_backend, OpenVinoDenoiser)  # the plan: int8 is openvino's
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
        return cls(spec, denoiser_backend, vae_loader, provenance, torch_device(device))

    @classmethod
    def from_pretrained(
        cls, spec: ModelSpec | str, weights: str | Path | None = None, **kwargs: Any
    ) -> Pipeline:
        """A weights directory (ours or the released layout) or a hub id; without `weights`, the
        bundled demo model (copgen-demo only). `kwargs` go to `from_weights`."""
        spec = specs.get(spec) if isinstance(spec, str) else spec
        denoiser, vaes = pretrained_files(spec, weights)
        return cls.from_weights(spec, denoiser, vaes=vaes, **kwargs)

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
            check_dtype(name, value)
            if physical_units and not conditions_are_latents:
                check_plausible(spec, name, value, f"condition {name}")
                x = processing.preprocess(spec.modality(name), value, spec.pixel_shape(name))
            else:
                x = torch.as_tensor(value, dtype=torch.float32)
            model_inputs[name] = check_condition(spec, name, x, conditions_are_latents)
        known = dict(known or {})
        if jumps and not known:
            raise ValueError("resampling jumps need a known region (known=...)")
        known_inputs = known_values(spec, generate, known, physical_units, conditions_are_latents)
        batch = batch_of(
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
            if bool((cells := known_cells(spec, k, valid, conditions_are_latents)).any())
        }
        program = build_program(
            self.schedule, *solver_steps, jumps=jumps if known_inputs else 0, jump_length=jump_length
        )
        cond_seeds = condition_seeds(seed, batch)
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
                else check_shape(f"initial_noise[{name}]", torch.as_tensor(given), (rows, *shape))
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
            eps = check_shape(
                f"posterior_noise[{name}]", torch.as_tensor(injected), tuple(eps.shape)
            ).to(self.device)
        elif not self.spec.posterior_per_copy:  # COP-GEN: the copies share the first one's sample
            eps = eps[::n_samples].repeat_interleave(n_samples, dim=0)
        return posterior_sample(moments, eps, self.spec.vae_for(name).scale_factor)

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
