"""The run record of a many-scene run: `copgen-run.json` in the output folder, per scene its status,
outputs, provenance, run identity (`copgen_rt.scenes.state.run_key`) and error. A scene is
complete when the record says it was done by a run of the same identity and every output matches
the sizes and sha256 of its own run record (`outputs_intact`); complete scenes are skipped,
whatever `--overwrite` says. Several runs may share an output folder: the record is merged under a
lock, but never two different manifests' records (`record_location`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from copgen_rt import __version__
from copgen_rt.files import check_writable, is_regular_file, open_lock, waiting_lock, write_text
from copgen_rt.reading import read_json

RUN_MANIFEST = "copgen-run.json"
SAVE_INTERVAL_S = 2.0  # the run manifest is rewritten at most this often (and at the end)


def record_location(outs: Sequence[Path], out: Path, manifest: Path | None) -> Path:
    """The run record of a many-scene run: `copgen-run.json` in `out` for scenes given on the
    command line; `STEM.copgen-run.json` for a --manifest STEM.csv, in `out` where a scene writes
    there, else (every row names its own `out`) beside the manifest file, so that no folder is
    made only for the record. `outs` are the scenes' output folders."""
    if manifest is None:
        return out / RUN_MANIFEST
    folder = out if out in outs else manifest.absolute().parent
    return folder / f"{manifest.stem}.{RUN_MANIFEST}"


class RunManifest:
    """`copgen-run.json`: per scene its status, outputs, provenance, settings and error. `source`
    is the manifest file the scenes came from (None: the command line); a record of another source
    is refused, never merged."""

    def __init__(self, path: Path, source: Path | None = None):
        self.path = path
        self.source = None if source is None else str(source.absolute())
        self.lock = path.with_name(f".{path.name}.lock")
        if os.path.lexists(self.lock):  # a link or a FIFO planted there is refused before any scene runs
            os.close(open_lock(self.lock))
        self.scenes = self._read()
        self._changed: set[str] = set()
        self._saved = 0.0

    def _read(self) -> dict[str, dict]:
        if not os.path.lexists(self.path):
            return {}
        if not is_regular_file(self.path):
            raise ValueError(f"{self.path}: not a plain file (a link?); move it away")
        try:
            data = read_json(self.path, "the run record")
            scenes, source = dict(data["scenes"]), data.get("manifest")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{self.path}: not a copgen-rt run manifest ({type(e).__name__}); move it away"
            ) from None
        if source != self.source:
            def named(s: str | None) -> str:
                return "scenes given on the command line" if s is None else f"--manifest {s}"
            raise ValueError(f"{self.path}: the run record of {named(source)}, not of {named(self.source)}: "
                             "give another --out, or move the record away")
        return scenes

    def done(self, key: str, run_key: str) -> bool:
        """Whether the scene `key` is recorded as done by a run of the same identity."""
        record = self.scenes.get(key, {})
        return record.get("status") == "done" and record.get("run_key") == run_key

    def record(self, key: str, record: dict) -> None:
        self.scenes[key] = record
        self._changed.add(key)
        if time.monotonic() - self._saved >= SAVE_INTERVAL_S:
            self.save()

    def save(self) -> None:
        """Merge this run's records into the file under a lock (another run may share the output
        folder), then replace it atomically: a temporary file and a rename."""
        if not self._changed:
            return
        check_writable(self.path.parent)
        with waiting_lock(self.lock):
            merged = {**self._read(), **{k: self.scenes[k] for k in self._changed}}
            write_text(
                self.path,
                json.dumps({"software": f"copgen-rt {__version__}", "manifest": self.source,
                            "scenes": merged}, indent=1) + "\n",
            )
        self.scenes, self._changed, self._saved = merged, set(), time.monotonic()
