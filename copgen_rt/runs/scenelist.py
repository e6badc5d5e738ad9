"""Which scenes a many-scene run covers: paths, globs (expanded here, so quoting works) and
manifest files, each scene with its other inputs and its output folder."""

from __future__ import annotations

import csv
import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from copgen_rt.reading import read_bytes
from copgen_rt.scenes.state import recorded_run_key

MANIFEST_COLUMNS = ("scene", "cond", "out")


@dataclass(frozen=True)
class SceneEntry:
    """One scene to run: its main input, its other inputs (PRODUCT=PATH) and its output folder,
    every path absolute so that workers on other machines read and write the same files."""

    scene: Path
    conds: tuple[str, ...]
    out: Path

    @property
    def key(self) -> str:
        """Where its outputs go (out folder and stem): unique within a run."""
        return str(self.out / self.scene.stem)

    @property
    def name(self) -> str:
        relative = os.path.relpath(self.scene)
        return str(self.scene) if relative.startswith("..") else relative


def has_glob(args: Sequence[str]) -> bool:
    return any(c in arg for arg in args for c in "*?[")


def expand(scenes: Sequence[str], manifest: str | None, conds: Sequence[str], out: str) -> list[SceneEntry]:
    """Scene arguments (paths or globs, expanded here so that quoting works) and the lines of a
    manifest file; every scene gets `conds` and `out` unless its manifest row says otherwise."""
    cwd, default_out = Path.cwd(), _absolute(out, Path.cwd())
    default_conds = tuple(_absolute_cond(c, cwd, "--cond") for c in conds)
    entries = []
    for arg in scenes:
        entries += [SceneEntry(_absolute(p, cwd), default_conds, default_out) for p in _matches(arg)]
    if manifest:
        entries += read_manifest(Path(manifest), default_conds, default_out)
    if not entries:
        raise ValueError("no scene to run: give SCENE paths, a glob or --manifest")
    return _unique(entries)


def _matches(arg: str) -> list[str]:
    if not has_glob([arg]) or Path(arg).exists():
        return [arg]
    files = sorted(p for p in glob.glob(arg, recursive=True) if not os.path.isdir(p))
    if not files:
        raise ValueError(f"{arg}: no file matches")
    ours = [p for p in files if recorded_run_key(Path(p)) is not None]
    if ours:  # e.g. --out is the scene folder: a rerun must not take the outputs for new scenes
        warnings.warn(f"{arg}: {len(ours)} matching file(s) are copgen-rt outputs, not taken as scenes",
                      stacklevel=2)
    scenes = [p for p in files if p not in ours]
    if not scenes:
        raise ValueError(f"{arg}: every matching file is a copgen-rt output")
    return scenes


MAX_MANIFEST_BYTES = 256 << 20  # a million scenes of long paths


def read_manifest(path: Path, conds: tuple[str, ...], out: Path) -> list[SceneEntry]:
    """One scene path per line, or CSV with the header scene,cond,out (cond: PRODUCT=PATH;...;
    an empty cond or out takes the command's). Relative paths are relative to the file's folder;
    blank lines and lines starting with # are ignored."""
    try:
        # spreadsheets save CSV with a byte-order mark
        text = read_bytes(path, "--manifest", limit=MAX_MANIFEST_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"--manifest {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    base = path.absolute().parent
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"--manifest {path}: no scene listed")
    header = [h.strip().lower() for h in lines[0][1].split(",")]
    if header[0] != "scene":
        return [SceneEntry(_absolute(line, base), conds, out) for _, line in lines]
    if set(header) - set(MANIFEST_COLUMNS) or len(set(header)) != len(header):
        raise ValueError(f"{path} line {lines[0][0]}: header {lines[0][1]!r}: expected scene,cond,out")
    entries = []
    for n, line in lines[1:]:
        where = f"{path} line {n}"
        try:  # one row per line: an open quote must not swallow the lines after it
            row = next(csv.reader([line], strict=True))
        except csv.Error as e:
            raise ValueError(f"{where}: not a CSV row ({e})") from None
        if len(row) > len(header):
            raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}")
        # strict=False: a row may omit its trailing empty fields
        fields = dict(zip(header, (v.strip() for v in row), strict=False))
        if not fields.get("scene"):
            raise ValueError(f"{where}: no scene path")
        cond = fields.get("cond", "")
        row_conds = tuple(_absolute_cond(c.strip(), base, f"{where}: cond") for c in cond.split(";")
                          if c.strip()) if cond else conds
        row_out = _absolute(fields["out"], base) if fields.get("out") else out
        entries.append(SceneEntry(_absolute(fields["scene"], base), row_conds, row_out))
    return entries


def _absolute(path: str, base: Path) -> Path:
    return Path(os.path.abspath(base / Path(path).expanduser()))


def _absolute_cond(item: str, base: Path, what: str) -> str:
    product, sep, path = item.partition("=")
    if not sep or not path.strip() or not product.strip():
        raise ValueError(f"{what} {item!r}: expected PRODUCT=PATH, e.g. S1RTC=s1.tif")
    return f"{product.strip()}={_absolute(path.strip(), base)}"


def _unique(entries: list[SceneEntry]) -> list[SceneEntry]:
    """Drop repeats; refuse two scenes whose outputs would overwrite each other."""
    by_key: dict[str, SceneEntry] = {}
    for e in entries:
        other = by_key.setdefault(e.key, e)
        if other != e:
            raise ValueError(f"{other.name} and {e.name} would write the same outputs in {e.out}; "
                             "give them different output folders (--manifest with an out column)")
    return list(by_key.values())
