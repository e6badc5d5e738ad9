"""Run keys, the run record and the work folder: what lets a rerun trust what is on disk.

Every output carries the run key of the settings that made it (`COPGEN_RUN_KEY`). The sidecar,
published last, is the run record: each output's size and sha256. The work folder keeps every
finished tile's final latents (with a sha256 of their tensors) until the scene is complete, so
that an interrupted run resumes. A scene's outputs and work folder belong to one run at a time
(`scene_lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
import torch

from copgen_rt.errors import CopgenError, OutputExistsError
from copgen_rt.files import (
    atomic_write,
    check_writable,
    exclusive,
    file_sha256,
    is_regular_file,
    own_folder,
    write_error,
    write_text,
)
from copgen_rt.pipeline import Pipeline
from copgen_rt.reading import read_json
from copgen_rt.scenes.job import SceneJob


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """Without `overwrite`, the first of `paths` that exists is an OutputExistsError."""
    if not overwrite:
        for path in paths:
            if path.exists():
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")


class DamagedFileWarning(UserWarning):
    """An output or a cached latent of ours no longer matches its record: it is made again."""


def run_key_of(job: SceneJob, pipeline: Pipeline) -> str:
    return run_key(job, pipeline.provenance.files, pipeline.provenance.engine)


def run_key(job: SceneJob, weights: Mapping[str, str], engine: str) -> str:
    """The one run identity, of single-scene, many-scene and Ray runs alike: everything that decides
    a scene's outputs (the model's files, the engines and precisions, the options, every input file
    of every form with its size and time), the batch size aside (it only changes rounding)."""
    o = job.options
    parts = {"spec": job.spec.name, "weights": dict(weights), "engine": engine, "seed": o.seed,
             "sampler": o.sampler, "others": o.others, "samples": o.samples, "overlap": o.overlap_m,
             "generate": job.generate, "date": str(job.date),
             "inputs": [(str(s.path.resolve()), s.path.stat().st_size, s.path.stat().st_mtime_ns,
                         s.product, s.bands, s.units, s.dn_offset) for s in job.inputs]}
    files = [_file_stamp(href) for s in job.inputs for _, href, _ in s.sources]
    if files:  # several files per input: each one's size and time (a folder's say nothing of them)
        parts["files"] = files
    if o.grid:
        parts["grid"] = o.grid
    parts["tiling"] = o.tiling  # always: work folders of earlier versions (scene-anchored) are stale
    if o.fill:
        f = o.fill
        mask = f.mask or f.scl
        parts["fill"] = {"mask": mask and _file_stamp(str(mask.resolve())), "scl": f.scl is not None,
                         "classes": f.scl_classes, "feather": f.feather, "jumps": (f.jumps, f.jump_length)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_stamp(href: str) -> tuple[str, int, int] | str:
    if href.startswith("/vsi"):  # inside a zip (whose own stamp is in the key) or remote
        return href
    stat = os.stat(href)
    return href, stat.st_size, stat.st_mtime_ns


RUN_KEY_TAG = "COPGEN_RUN_KEY"  # in every output: which settings made it (`run_key_of`)
RECORD_FIELD = "outputs"  # in the sidecar, the run record: {file name: {"sha256", "bytes"}} of each output


@dataclass
class OutputState:
    """A scene's output files as a run with a given run key finds them."""

    intact: list[Path] = field(default_factory=list)  # the run record vouches for them
    damaged: list[Path] = field(default_factory=list)  # ours, but they no longer match the record
    # carry our run key, no record yet (publish cut short)
    unrecorded: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)

    def complete(self, job: SceneJob) -> bool:
        """Every raster and the sidecar intact (quicklooks exist only where a recipe does)."""
        return all(p in self.intact for p in [o.path for o in job.outputs] + [job.sidecar])


def check_outputs(job: SceneJob, run_key: str | None = None) -> OutputState:
    """Which of the scene's files exist and whether this run may replace them. Files it did not
    make, or made with other settings (another run key), are refused without --overwrite; its
    own files are checked against the run record (sizes and sha256 in the sidecar). Without a
    key (before the weights are loaded) any copgen-rt output passes; run_scene checks again."""
    expected = expected_files(job)
    if job.options.overwrite:
        return OutputState(missing=expected)
    record = read_record(job.sidecar)
    if record is not None and run_key is not None and record.get(RUN_KEY_TAG) != run_key:
        record = None
    listed = record.get(RECORD_FIELD, {}) if record else {}
    state = OutputState()
    for path in expected:
        if not os.path.lexists(path):
            state.missing.append(path)
        elif path == job.sidecar and record is not None:
            state.intact.append(path)
        elif path.name in listed and _matches(path, listed[path.name]):
            state.intact.append(path)
        else:
            readable, found = _stored_run_key(path)
            truncated = not readable and path.name in listed and is_regular_file(path)
            if not truncated and (found is None or (run_key is not None and found != run_key)):
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
            (state.damaged if path.name in listed else state.unrecorded).append(path)
    return state


def read_record(sidecar: Path) -> dict | None:
    if not is_regular_file(sidecar):
        return None
    try:
        record = read_json(sidecar)
    except CopgenError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get(RECORD_FIELD, {}), dict) else None


def checksum(path: Path) -> dict[str, object]:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def _matches(path: Path, entry: object) -> bool:
    if not isinstance(entry, dict) or not is_regular_file(path):
        return False
    return entry.get("bytes") == path.stat().st_size and entry.get("sha256") == file_sha256(path)


def outputs_intact(job: SceneJob, key: str) -> bool:
    """Whether the run with `key` finished the scene and every output is as it recorded it (sizes
    and sha256 in the sidecar), whatever --overwrite says: what lets a rerun skip it."""
    record = read_record(job.sidecar)
    if record is None or record.get(RUN_KEY_TAG) != key:
        return False
    listed = record.get(RECORD_FIELD, {})
    return all(o.path.name in listed and _matches(o.path, listed[o.path.name]) for o in job.outputs)


def expected_files(job: SceneJob) -> list[Path]:
    """Every file a finished run of `job` has written, in the order run_scene returns them."""
    pictures = [o.path.with_suffix(".png") for o in job.outputs if job.options.quicklook and o.kind == "mean"]
    return [o.path for o in job.outputs] + pictures + [job.sidecar, job.stac_item]


def recorded_run_key(path: Path) -> str | None:
    """The run key an output of ours carries (GeoTIFF tag, PNG text, sidecar field), else None."""
    return _stored_run_key(path)[1]


def _stored_run_key(path: Path) -> tuple[bool, str | None]:
    """(whether `path` opens as what its suffix says, the run key it carries). Only plain files
    are opened: a FIFO or a link planted under an output's name is not ours."""
    if not is_regular_file(path):
        return False, None
    try:
        if path.suffix == ".json":
            data = read_json(path)  # the sidecar, or the STAC Item (in its provenance)
            return True, data.get(RUN_KEY_TAG) or data.get("properties", {}).get("copgen:provenance", {}).get(
                RUN_KEY_TAG)
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as img:
                img.verify()
                return True, img.info.get(RUN_KEY_TAG)
        with rasterio.open(path) as src:
            return True, src.tags().get(RUN_KEY_TAG)
    except Exception:  # noqa: BLE001 - unreadable means: not known to be ours
        return False, None


def scene_lock(job: SceneJob) -> contextlib.AbstractContextManager[None]:
    """One run at a time writes a scene's outputs and work folder; another fails at once."""
    check_writable(job.out_dir)
    return exclusive(job.lock_path, f"{job.inputs[0].path.name} (outputs in {job.out_dir})")


def remove_leftover_staging(job: SceneJob) -> None:
    """Remove the temporary folders of this scene's killed writers (a Ray worker killed with its
    node cleans nothing). Only for the holder of the scene's lock, when none of its own writers run."""
    pattern = re.compile(re.escape(job.staging_prefix) + r"[A-Za-z0-9_]+")
    with contextlib.suppress(OSError):
        for entry in os.scandir(job.out_dir):
            if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def prepare_work_dir(job: SceneJob, pipeline: Pipeline) -> Path:
    """The folder of finished tiles' latents (a private folder of ours, never a link), emptied
    if it belongs to different settings."""
    check_writable(job.out_dir)
    work = own_folder(job.work_dir)
    key = run_key_of(job, pipeline)
    run_file = work / "run.json"
    if _read_key(run_file) != key:
        shutil.rmtree(work / "latents", ignore_errors=True)
        write_text(run_file, json.dumps({"key": key}))
    own_folder(work / "latents")
    return work


def discard_unless_resumable(work: Path) -> None:
    """Remove the work folder of a failed run unless it holds finished tiles to resume from."""
    latents = work / "latents"
    try:
        if os.path.isdir(latents) and not os.path.islink(latents) and any(os.scandir(latents)):
            return
    except OSError:
        return
    shutil.rmtree(work, ignore_errors=True)


def _read_key(run_file: Path) -> str | None:
    try:
        return read_json(run_file).get("key") if is_regular_file(run_file) else None
    except (CopgenError, AttributeError):
        return None



def _latents_digest(latents: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(latents):
        z = latents[name].contiguous()
        h.update(f"{name}:{z.dtype}:{tuple(z.shape)};".encode())
        h.update(z.numpy().tobytes())
    return h.hexdigest()


def save_latents(path: Path, latents: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    data = save(latents, metadata={"sha256": _latents_digest(latents)})
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as e:
        raise write_error(path, e) from None


def load_latents(path: Path, job: SceneJob) -> dict[str, torch.Tensor] | None:
    """A finished tile's latents, or None: missing, or damaged (then removed, and said once)."""
    if not os.path.lexists(path):
        return None
    from safetensors import safe_open

    latents: dict[str, torch.Tensor] = {}
    try:
        if not is_regular_file(path):
            problem = "is not a plain file"
        else:
            with safe_open(str(path), framework="pt") as f:
                digest = (f.metadata() or {}).get("sha256")
                latents = {k: f.get_tensor(k) for k in f.keys()}
            shapes = {n: (job.options.samples, *job.spec.modality(n).latent_shape) for n in job.generate}
            if {n: tuple(z.shape) for n, z in latents.items()} != shapes:
                problem = "holds other modalities or shapes"
            elif digest != _latents_digest(latents):
                problem = "does not match its checksum"
            elif not all(bool(torch.isfinite(z).all()) for z in latents.values()):
                problem = "holds NaN or infinite values"
            else:
                return latents
    except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is recomputed
        problem = f"is unreadable ({(str(e).splitlines() or [type(e).__name__])[0][:80]})"
    warnings.warn(f"cached latents {path.name} {problem}: recomputed", DamagedFileWarning, stacklevel=4)
    with contextlib.suppress(OSError):
        path.unlink()
    return None
