"""Whole-scene outputs, pixel for pixel, against digests recorded before the scene code was split
into stages (tests/data/scene_digests.json, made by the single-module scene runner of commit
6ae3e85 with this very script; the file names since renamed to the bands in stored order, the
pixels unchanged). Restructuring the stages must not change a single bit.

Bits depend on the CPU kind (torch's fp32 kernels differ between vendors and ISAs), so the
digests are recorded per CPU kind ("model name | torch CPU capability"): an Intel Xeon with AMX
and a Zen 5 AMD EPYC so far, each made by the pre-split runner on that machine. On a CPU kind
without digests the test skips and says so; record its digests from commit 6ae3e85 (the same
script, importing SceneJob and SceneOptions from copgen_rt.scenes.run) before trusting it.

The runs use the scene-anchored tiling (`tiling="scene"`), the only one of commit 6ae3e85: the
Earth-anchored default (docs/chains.md) places tiles elsewhere and so gives other pixels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import rasterio
import torch

from copgen_rt import Pipeline, specs
from copgen_rt.demo import default_scene, demo_weights
from copgen_rt.device import cpu_name
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.synthetic import smooth_s2, write_raster

DIGESTS = Path(__file__).parent / "data" / "scene_digests.json"


def test_outputs_are_bit_identical_to_the_recorded_ones(tmp_path):
    kind = f"{cpu_name()} | {torch.backends.cpu.get_cpu_capability()}"
    recorded = json.loads(DIGESTS.read_text())
    if kind not in recorded:
        pytest.skip(f"no digests recorded for this CPU kind ({kind}): see the module docstring")
    demo = specs.get("copgen-demo")
    pipe = Pipeline.from_pretrained(demo, demo_weights(), dtype="fp32", engine="torch")
    scene = write_raster(tmp_path / "synthetic.tif", smooth_s2(400, 300))  # 6 tiles, 2 batches
    found = {}
    for name, path, options in [("chip", default_scene(), dict(steps=1)),  # every modality
                                ("synthetic", scene, dict(steps=1, batch_size=4, samples=2,
                                                          generate=("DEM_DEM", "LULC_LULC", "S1RTC_vh_vv")))]:
        job = SceneJob(demo, [open_input(path)], tmp_path / name, SceneOptions(tiling="scene", **options))
        for p in run_scene(job, pipe).outputs:
            if p.suffix == ".tif":
                with rasterio.open(p) as src:
                    found[f"{name}/{p.name}"] = hashlib.sha256(src.read().tobytes()).hexdigest()[:16]
    assert found == recorded[kind]
