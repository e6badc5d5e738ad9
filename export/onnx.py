"""Export each component (denoiser, each VAE encoder and decoder) to its own ONNX file.

Opset 17, so every LayerNorm is one `LayerNormalization` node; attention is exported as
MatMul -> Softmax -> MatMul, the pattern TensorRT fuses into its MHA kernels; the batch axis is
dynamic; files over 2 GB keep their weights as external data. Every artifact is checked
(onnx.checker, shape inference, the TensorRT op list) and compared with the torch component on
fresh random inputs through onnxruntime; an export that fails parity raises `ExportError`.
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from copgen_rt import __version__, specs
from copgen_rt.errors import ExportError, TensorRTIncompatible
from copgen_rt.export.manifest import Component, Manifest, TensorInfo
from copgen_rt.export.tensorrt_support import check_tensorrt_compatible
from copgen_rt.files import onnx_sha256
from copgen_rt.models import Autoencoder, Denoiser
from copgen_rt.specs import ModelSpec

OPSET = 17
PARITY_TOL = {"fp32": 1e-3}
TWO_GB = 2 * 1024**3




def require_onnx():
    """onnx, with a runtime for the parity check (onnxruntime or OpenVINO), or an ImportError
    (exit 6 from the CLI) that names the extra."""
    try:
        import onnx
    except ImportError:
        raise ImportError("export needs onnx (not installed): pip install 'copgen-rt[onnx]'") from None
    for runtime in ("onnxruntime", "openvino"):
        try:
            importlib.import_module(runtime)
            return onnx
        except ImportError:
            continue
    raise ImportError("export checks parity through onnxruntime or openvino, and neither is installed: "
                      "pip install 'copgen-rt[onnx]'")


class DenoiserIO(nn.Module):
    """Flat positional inputs (latents then timesteps) -> tuple of eps, for the exporter."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.model = model

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        n = len(args) // 2
        return tuple(self.model(list(args[:n]), list(args[n:])))


class _Encoder(nn.Module):
    def __init__(self, vae: Autoencoder):
        super().__init__()
        self.vae = vae

    def forward(self, x: Tensor) -> Tensor:
        return self.vae.encode_moments(x)


class _Decoder(nn.Module):
    def __init__(self, vae: Autoencoder):
        super().__init__()
        self.vae = vae

    def forward(self, z: Tensor) -> Tensor:
        return self.vae.decode(z)


def denoiser_io(spec: ModelSpec) -> tuple[list[TensorInfo], list[TensorInfo]]:
    inputs = [TensorInfo(f"latent_{m.name}", "float32", ["batch", *m.latent_shape]) for m in spec.modalities]
    inputs += [TensorInfo(f"t_{m.name}", "float32", ["batch"]) for m in spec.modalities]
    outputs = [TensorInfo(f"eps_{m.name}", "float32", ["batch", *m.latent_shape]) for m in spec.modalities]
    return inputs, outputs


def vae_io(spec: ModelSpec, key: str) -> dict[str, tuple[list[TensorInfo], list[TensorInfo]]]:
    cfg = spec.vaes[key]
    modality = next(m for m in spec.modalities if m.vae == key)
    c, h, w = spec.pixel_shape(modality.name)
    f = cfg.downsampling
    z = cfg.z_channels
    return {
        "encoder": ([TensorInfo("x", "float32", ["batch", c, h, w])],
                    [TensorInfo("moments", "float32", ["batch", 2 * z, h // f, w // f])]),
        "decoder": ([TensorInfo("z", "float32", ["batch", z, h // f, w // f])],
                    [TensorInfo("x", "float32", ["batch", c, h, w])]),
    }


def _random_inputs(infos: Sequence[TensorInfo], batch: int, gen: torch.Generator) -> list[Tensor]:
    out = []
    for info in infos:
        shape = [batch if d == "batch" else d for d in info.shape]
        if info.name.startswith("t_"):  # timesteps span the schedule, including exactly 0
            t = torch.rand(shape, generator=gen) * 1000
            t[0] = 0.0
            out.append(t)
        else:
            out.append(torch.randn(shape, generator=gen))
    return out


def export_module(module: nn.Module, inputs: list[TensorInfo], outputs: list[TensorInfo], path: Path,
                  example_batch: int = 2, below: Path | None = None) -> None:
    """torch -> ONNX (TorchScript exporter, opset 17) in a private scratch folder in `below` (the
    export folder; default `path`'s folder), then published in place (`copgen_rt.files.publish`:
    no link under `below` followed): one file, or above 2 GB the graph plus one `<file>.data`
    with every weight."""
    import onnx

    from copgen_rt.files import output_folder, publish

    below = below or path.parent
    output_folder(path.parent, below)  # a link planted at a sub-folder is refused before the work
    example = tuple(_random_inputs(inputs, example_batch, torch.Generator().manual_seed(0)))
    names = [i.name for i in inputs] + [o.name for o in outputs]
    with tempfile.TemporaryDirectory(dir=below, prefix=".export-") as scratch:
        tmp = Path(scratch) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(tmp), input_names=[i.name for i in inputs],
                              output_names=[o.name for o in outputs], opset_version=OPSET,
                              dynamic_axes={n: {0: "batch"} for n in names}, dynamo=False,
                              do_constant_folding=True)
        model = onnx.load(str(tmp), load_external_data=True)
        _declare_shapes(model.graph, inputs, outputs)
        staged = Path(scratch) / path.name
        if sum(p.stat().st_size for p in Path(scratch).iterdir()) > TWO_GB:
            onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{path.name}.data", size_threshold=1024)
            publish(Path(scratch) / f"{path.name}.data", path.with_name(f"{path.name}.data"), below)
        else:
            onnx.save_model(model, str(staged))
        publish(staged, path, below)


def _declare_shapes(graph, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """State the exact I/O shapes (symbolic batch only): the tracer leaves some output dims
    symbolic, which downstream tools (and TensorRT's profile checks) handle worse."""
    declared = {t.name: t for t in [*inputs, *outputs]}
    for value in [*graph.input, *graph.output]:
        info = declared[value.name]
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for d in info.shape:
            dim = dims.add()
            if d == "batch":
                dim.dim_param = "batch"
            else:
                dim.dim_value = int(d)


def check_graph(path: Path, outputs: list[TensorInfo]) -> dict[str, int]:
    """onnx.checker, shape inference and the TensorRT op list; returns the op histogram."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
        inferred = path.with_name(f".{path.name}.inferred")
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        graph = onnx.load(str(inferred), load_external_data=False).graph
        inferred.unlink()
    except Exception as e:  # noqa: BLE001 - onnx raises several types
        raise ExportError(f"{path.name}: invalid ONNX graph ({str(e).splitlines()[0][:160]})") from None
    declared = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
                for o in graph.output}
    for o in outputs:
        if declared.get(o.name, [None])[1:] != list(o.shape[1:]):
            raise ExportError(f"{path.name}: output {o.name} has shape {declared.get(o.name)}, "
                              f"expected {o.shape}")
    try:
        return check_tensorrt_compatible(path)
    except TensorRTIncompatible as e:
        raise ExportError(str(e)) from None


def _run_onnxruntime(path: Path, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(output_names, feeds)


# (run(path, output names, feeds) -> outputs, description) of an fp32 ONNX runtime: onnxruntime
# by default; an engine that runs the export checks it on its own runtime (openvino's run_fp32)
ParityRuntime = tuple[Callable[[Path, list[str], dict[str, np.ndarray]], list[np.ndarray]], str]


def onnxruntime_parity() -> ParityRuntime:
    import onnxruntime as ort

    return _run_onnxruntime, f"onnxruntime {ort.__version__} CPU"


def check_parity(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 reference: Callable[[list[Tensor]], Sequence[Tensor]], batch: int, precision: str,
                 runtime: ParityRuntime | None = None) -> dict:
    """The ONNX file through `runtime` (default onnxruntime; fp32) vs torch on fresh random
    inputs; raises ExportError above the tolerance."""
    run, description = runtime or onnxruntime_parity()
    seed = int.from_bytes(os.urandom(4), "little")
    feeds = _random_inputs(inputs, batch, torch.Generator().manual_seed(seed))
    got = run(
        path, [o.name for o in outputs], {i.name: t.numpy() for i, t in zip(inputs, feeds, strict=True)}
    )
    with torch.no_grad():
        want = reference(feeds)
    err = max(
        float(np.abs(g - w.numpy()).max() / max(np.abs(w.numpy()).max(), 1e-30))
        for g, w in zip(got, want, strict=True)
    )
    tol = PARITY_TOL[precision]
    if not err <= tol:
        raise ExportError(f"{path.name}: {description.split()[0]} differs from torch by {err:.2e} "
                          f"(relative), above {tol:g}")
    return {"max_rel_err": err, "batch": batch, "runtime": description, "tolerance": tol}



def export_models(
    spec: ModelSpec,
    denoiser: Denoiser | None,
    vaes: dict[str, Autoencoder],
    out: Path,
    weights: dict[str, str],
    random_weights: bool,
    batch: tuple[int, int, int] = (1, 4, 16),
    precision: str = "fp32",
    check: str = "parity",
    parity_batch: int = 2,
    progress: Callable[[str], None] = lambda s: None,
    parity_runtime: ParityRuntime | None = None,
) -> Manifest:
    """Export the given torch components (fp32 graphs) into `out` and write the manifest.

    check: "parity" (graph checks and `parity_runtime`, default onnxruntime, vs torch), "graph"
    (checks only) or "none".
    """
    onnx = require_onnx()
    if precision not in PARITY_TOL:
        raise ExportError(
            f"ONNX graphs are exported in fp32 (the CPU runtime's precision); "
            f"build a TensorRT engine for {precision}"
        )
    out = Path(out)
    manifest = Manifest(
        format="onnx",
        spec=specs.to_dict(spec),
        weights=weights,
        random_weights=random_weights,
        opset=OPSET,
        batch=list(batch),
        versions={
            "copgen_rt": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            **runtime_versions(),
        },
    )
    jobs: list[tuple[str, nn.Module, list, list]] = []
    if denoiser is not None:
        ins, outs = denoiser_io(spec)
        jobs.append(("denoiser", DenoiserIO(denoiser), ins, outs))
    for key, vae in vaes.items():
        io = vae_io(spec, key)
        jobs.append((f"vae_encoder/{key}", _Encoder(vae), *io["encoder"]))
        jobs.append((f"vae_decoder/{key}", _Decoder(vae), *io["decoder"]))
    for name, module, ins, outs in jobs:
        progress(name)
        path = out / f"{name}.onnx"
        module = module.float().eval()
        export_module(module, ins, outs, path, below=out)
        parity: dict = {}
        if check in ("graph", "parity"):
            parity["ops"] = sum(check_graph(path, outs).values())
        if check == "parity":
            parity.update(
                check_parity(
                    path,
                    ins,
                    outs,
                    functools.partial(_run_module, module),
                    parity_batch,
                    precision,
                    parity_runtime,
                )
            )
        manifest.components.append(
            Component(name, str(path.relative_to(out)), ins, outs, precision, parity, onnx_sha256(path))
        )
    manifest.save(out)
    return manifest


def runtime_versions() -> dict[str, str]:
    """Versions of the installed ONNX runtimes (each is optional)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("onnxruntime", "openvino"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _run_module(module: nn.Module, feeds: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return _as_tuple(module(*feeds))


def _as_tuple(x) -> tuple[Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def export_weights(
    spec: ModelSpec,
    files,
    out: Path,
    modalities: Sequence[str] | None = None,
    batch: tuple[int, int, int] = (1, 4, 16),
    check: str = "parity",
    progress: Callable[[str], None] = lambda s: None,
) -> Manifest:
    """Export from checkpoint files (a `copgen_rt.weights.WeightFiles`), one component in memory
    at a time; `modalities` limits which VAEs are exported (default: every VAE found)."""
    from copgen_rt.errors import CheckpointError
    from copgen_rt.weights import file_sha256 as ckpt_sha
    from copgen_rt.weights import load_autoencoder, load_denoiser, read_checkpoint

    require_onnx()  # before loading any weights
    if files.denoiser is None:
        raise CheckpointError("no denoiser checkpoint to export")
    wanted = (spec.modality(m).vae for m in modalities or ())
    keys = list(files.vaes) if modalities is None else sorted({k for k in wanted if k})
    ckpt = read_checkpoint(files.denoiser)
    random = ckpt.is_random
    weights = {"denoiser": f"{files.denoiser.name}:{ckpt_sha(files.denoiser)[:16]}"}
    manifest = export_models(
        spec, load_denoiser(spec, ckpt), {}, out, weights, random, batch, check=check, progress=progress
    )
    del ckpt
    for key in keys:
        if key not in files.vaes:
            raise CheckpointError(f"no VAE checkpoint for {key}")
        vckpt = read_checkpoint(files.vaes[key])
        modality = next(m.name for m in spec.modalities if m.vae == key)
        part = export_models(
            spec,
            None,
            {key: load_autoencoder(spec, modality, vckpt)},
            out,
            {},
            False,
            batch,
            check=check,
            progress=progress,
        )
        manifest.components += part.components
        manifest.weights[f"vae/{key}"] = f"{files.vaes[key].name}:{ckpt_sha(files.vaes[key])[:16]}"
        manifest.random_weights = manifest.random_weights or vckpt.is_random
    manifest.save(out)
    return manifest
