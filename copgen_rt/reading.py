"""Opening the files the program reads (scenes, conditions, masks, manifests, spec JSON,
weights.json, checkpoints, STAC Items, the sources of a VRT) so that no read can block forever
and no file can make the parser fail in an unforeseen way:

- only regular files are opened (links are followed: the user named them); a FIFO, a device, a
  socket or a folder is refused after `os.stat`, before any `open`, and files are opened with
  O_NONBLOCK and checked again with `fstat`, so a FIFO swapped in between cannot block either;
- JSON is bounded in size and depth (`read_json`): deeply nested JSON is one line, not
  RecursionError, also in code that walks the parsed value recursively (pystac);
- a VRT's local sources are checked the same way before GDAL opens the VRT (`check_vrt_sources`).

Every refusal is one line in the error class the caller names (InputError, exit 3, by default;
CheckpointError, exit 4, for weights)."""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from copgen_rt.errors import CopgenError, InputError

MAX_JSON_BYTES = 64 << 20  # a spec, a STAC Item, a weights manifest: kilobytes
MAX_JSON_DEPTH = 64  # the deepest JSON we read (a STAC Item) nests about 8 levels
MAX_VRT_DEPTH = 8  # VRTs of VRTs


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a plain file"


def regular_file(path: str | Path, what: str = "", error: type[CopgenError] = InputError) -> Path:
    """`path` if it names a regular file (through links), else `error` in one line saying what
    it is; never opens it."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{label}: cannot read it (no such file)") from None
    except OSError as e:
        raise error(f"{label}: cannot read it ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{label}: not a regular file ({_kind(mode)}); refusing to read it")
    return path


def read_bytes(path: str | Path, what: str = "", error: type[CopgenError] = InputError,
               limit: int | None = None) -> bytes:
    """The content of the regular file `path` (`regular_file`), at most `limit` bytes."""
    path = regular_file(path, what, error)
    label = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise error(f"{label}: cannot read it ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the stat
            raise error(f"{label}: not a regular file ({_kind(st.st_mode)}); refusing to read it")
        if limit is not None and st.st_size > limit:
            raise error(f"{label}: {st.st_size} bytes, more than the {limit} such a file can have")
        try:
            return f.read() if limit is None else f.read(limit + 1)[:limit]
        except OSError as e:
            raise error(f"{label}: cannot read it ({e.strerror or e})") from None


def parse_json(text: str | bytes, label: str, error: type[CopgenError] = InputError) -> Any:
    """JSON nested at most MAX_JSON_DEPTH levels; anything else is one line."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{label}: JSON nested more than {MAX_JSON_DEPTH} levels deep; refusing it") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{label}: not valid JSON ({str(e).splitlines()[0]})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise error(f"{label}: JSON nested more than {MAX_JSON_DEPTH} levels deep; refusing it")
    return value


def _depth(value: Any) -> int:
    """How deeply `value` nests (without recursion: it may be as deep as the parser allowed)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_json(path: str | Path, what: str = "", error: type[CopgenError] = InputError,
              limit: int = MAX_JSON_BYTES) -> Any:
    """A regular JSON file of at most `limit` bytes and MAX_JSON_DEPTH levels."""
    label = f"{what} {path}" if what else str(path)
    return parse_json(read_bytes(path, what, error, limit), label, error)


def check_vrt_sources(path: Path, error: type[CopgenError] = InputError, depth: int = 0) -> None:
    """Refuse a VRT whose local sources (or theirs, for VRTs of VRTs) are not regular files
    before GDAL opens it: GDAL would block forever on a FIFO."""
    if depth > MAX_VRT_DEPTH:
        raise error(f"{path}: VRTs nested more than {MAX_VRT_DEPTH} deep")
    try:
        root = ET.fromstring(read_bytes(path, error=error, limit=MAX_JSON_BYTES))
    except ET.ParseError as e:
        raise error(f"{path}: not a valid VRT ({e})") from None
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or name.startswith("/vsi") or "://" in name:
            continue  # GDAL's virtual file systems and URLs: not local files
        relative = element.get("relativeToVRT", "0").strip() == "1"
        source = path.parent / name if relative else Path(name)  # else relative to the working folder
        regular_file(source, f"{path}: source", error)
        if source.suffix.lower() == ".vrt":
            check_vrt_sources(source, error, depth + 1)


def check_raster_file(path: str | Path, error: type[CopgenError] = InputError) -> None:
    """A raster GDAL may open without blocking: a regular file and, for a VRT, regular local
    sources. GDAL's virtual file systems (/vsizip/, /vsicurl/, ...) are GDAL's to read."""
    if str(path).startswith("/vsi"):
        return
    regular_file(path, error=error)
    if Path(path).suffix.lower() == ".vrt":
        check_vrt_sources(Path(path), error)
