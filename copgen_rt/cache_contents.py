"""What the cache folder (`copgen_rt.backends.export_cache.cache_root`) holds, per model and
engine, with sizes, and clearing it (all of it, or one model's files).

The folder: `onnx/KEY/` ONNX exports (one per spec, component and checkpoint; its manifest names
the model), `openvino/` compiled blobs and int8 IRs (each with a `.source` note of the ONNX it came
from, so that it can be told apart by model), `inductor/` torch.compile's kernels and `tuning/` the
engine measurements (shared by every model: kept by `--model` clears). Files made before the notes
existed are listed as of an unknown model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from copgen_rt.files import write_text

SOURCE_SUFFIX = ".source"
ANY_MODEL = "(every model)"
UNKNOWN_MODEL = "(unknown model)"
EXPORTS = "ONNX exports (onnxruntime, openvino)"
BLOBS = "OpenVINO compiled models"
INT8 = "OpenVINO int8 models"
INDUCTOR = "torch.compile kernels (inductor)"
TUNING = "engine measurements"
OTHER = "other files"


@dataclass
class CacheEntry:
    model: str  # a spec name, ANY_MODEL or UNKNOWN_MODEL
    kind: str
    paths: list[Path]
    size: int  # bytes


def note_source(path: Path, onnx_sha256: str) -> None:
    """Beside a compiled file, the sha256 of the ONNX file it came from: `contents` tells by it
    which model the file belongs to."""
    write_text(path.with_name(path.name + SOURCE_SUFFIX), onnx_sha256 + "\n")


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links are not followed)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(Path(folder, name).lstat().st_size for folder, _, names in os.walk(path) for name in names)


def contents(root: Path | None = None) -> list[CacheEntry]:
    """Every entry of the cache folder, grouped by (model, kind), in that order."""
    # imported here: the engines that write the cache import `note_source` from this module
    from copgen_rt.backends.export_cache import cache_root

    root = cache_root() if root is None else root
    if not root.is_dir():
        return []
    groups: dict[tuple[str, str], list[Path]] = {}
    models_of_onnx: dict[str, str] = {}  # ONNX sha256 -> model
    for folder in _children(root / "onnx"):
        model = _export_model(folder, models_of_onnx)
        groups.setdefault((model, EXPORTS), []).append(folder)
    for path in _children(root / "openvino"):
        if path.name.endswith(SOURCE_SUFFIX):
            continue  # counted with the file it describes
        compiled = path.with_suffix(".xml") if path.suffix == ".bin" else path
        kind = INT8 if path.name.startswith("int8-") else BLOBS
        groups.setdefault((_compiled_model(compiled, models_of_onnx), kind), []).append(path)
    for name, kind in (("inductor", INDUCTOR), ("tuning", TUNING)):
        if (root / name).exists():
            groups.setdefault((ANY_MODEL, kind), []).append(root / name)
    for path in _children(root):
        if path.name not in ("onnx", "openvino", "inductor", "tuning"):
            groups.setdefault((ANY_MODEL, OTHER), []).append(path)
    entries = []
    for (model, kind), paths in groups.items():
        with_notes = paths + [p.with_name(p.name + SOURCE_SUFFIX) for p in paths
                              if p.with_name(p.name + SOURCE_SUFFIX).exists()]
        entries.append(CacheEntry(model, kind, with_notes, sum(map(size_of, with_notes))))
    return sorted(entries, key=lambda e: (e.model in (ANY_MODEL, UNKNOWN_MODEL), e.model, e.kind))


def clear(model: str | None = None, root: Path | None = None) -> list[CacheEntry]:
    """Remove every cached file (`model` None) or the exports and compiled models of `model`;
    returns what was removed."""
    removed = [e for e in contents(root) if model is None or e.model == model]
    for entry in removed:
        for path in entry.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return removed


def _children(folder: Path) -> Iterator[Path]:
    return iter(sorted(folder.iterdir())) if folder.is_dir() else iter(())


def _export_model(folder: Path, models_of_onnx: dict[str, str]) -> str:
    """The model an export folder was made for (its manifest), noting its components' sha256."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        model = str(manifest["spec"]["name"])
        for component in manifest["components"]:
            models_of_onnx[component["sha256"]] = model
        return model
    except (OSError, ValueError, KeyError, TypeError):  # an export cut short, or a foreign folder
        return UNKNOWN_MODEL


def _compiled_model(path: Path, models_of_onnx: dict[str, str]) -> str:
    try:
        sha = path.with_name(path.name + SOURCE_SUFFIX).read_text().strip()
    except OSError:
        return UNKNOWN_MODEL
    return models_of_onnx.get(sha, UNKNOWN_MODEL)


def human_size(size: int) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 2**power:
            return f"{size / 2**power:.1f} {unit}"
    return f"{size} B"
