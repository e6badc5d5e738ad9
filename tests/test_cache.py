"""`copgen-rt cache`: what the cache holds per model and engine, with sizes, and --clear."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from copgen_rt.cache_contents import SOURCE_SUFFIX, contents
from copgen_rt.cli import main


def _fake_cache(root):
    """A cache as runs leave it: two models' exports, compiled blobs and an int8 IR noted with
    their ONNX, one blob from before the notes, inductor kernels and a measurement."""
    for model, sha in (("copgen-base", "a" * 64), ("copgen-demo", "b" * 64)):
        export = root / "onnx" / f"key-{model}"
        export.mkdir(parents=True)
        (export / "manifest.json").write_text(json.dumps(
            {"spec": {"name": model}, "components": [{"name": "denoiser", "sha256": sha}]}))
        (export / "denoiser.onnx").write_bytes(b"0" * 1000)
        blob = root / "openvino" / f"blob-{model}.blob"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(b"0" * 2000)
        blob.with_name(blob.name + SOURCE_SUFFIX).write_text(sha)
    (root / "openvino" / "int8-x.xml").write_bytes(b"0" * 10)
    (root / "openvino" / "int8-x.bin").write_bytes(b"0" * 300)
    (root / "openvino" / f"int8-x.xml{SOURCE_SUFFIX}").write_text("a" * 64)
    (root / "openvino" / "old.blob").write_bytes(b"0" * 5)
    (root / "inductor" / "k").mkdir(parents=True)
    (root / "inductor" / "k" / "kernel.so").write_bytes(b"0" * 7)
    (root / "tuning").mkdir()
    (root / "tuning" / "t.json").write_text("{}")


def test_cache_lists_per_model_and_engine_and_clears_one_model(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    _fake_cache(root)
    monkeypatch.setenv("COPGEN_RT_CACHE", str(root))
    sizes = {(e.model, e.kind): e.size for e in contents()}
    assert sizes[("copgen-base", "ONNX exports (onnxruntime, openvino)")] == 1000 + len(json.dumps(
        {"spec": {"name": "copgen-base"}, "components": [{"name": "denoiser", "sha256": "a" * 64}]}))
    assert sizes[("copgen-base", "OpenVINO compiled models")] == 2000 + 64
    assert sizes[("copgen-base", "OpenVINO int8 models")] == 10 + 300 + 64
    assert sizes[("(unknown model)", "OpenVINO compiled models")] == 5
    assert sizes[("(every model)", "torch.compile kernels (inductor)")] == 7
    listed = CliRunner().invoke(main, ["cache"])
    assert listed.exit_code == 0, listed.output
    assert "copgen-base" in listed.output and f"in {root} (everything;" in listed.output

    cleared = CliRunner().invoke(main, ["cache", "--clear", "--model", "copgen-base"])
    assert cleared.exit_code == 0, cleared.output
    assert {e.model for e in contents()} == {"copgen-demo", "(unknown model)", "(every model)"}
    assert not list(root.glob("openvino/int8-x*")) and (root / "tuning" / "t.json").exists()
    CliRunner().invoke(main, ["cache", "--clear"])
    assert contents() == [] and root.is_dir()
    assert "nothing cached" in CliRunner().invoke(main, ["cache"]).output


def test_compiled_openvino_models_note_their_onnx(tmp_path, monkeypatch):
    """A blob compiled now names the ONNX it came from, so that `cache` can tell its model."""
    from copgen_rt.backends.openvino_backend import compile_onnx
    from copgen_rt.files import onnx_sha256

    monkeypatch.setenv("COPGEN_RT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "linear.onnx"
    torch.onnx.export(torch.nn.Linear(4, 4), (torch.zeros(1, 4),), str(path), dynamo=False)
    sha = onnx_sha256(path)
    compile_onnx(path, sha, "fp32")
    (note,) = (tmp_path / "cache" / "openvino").glob(f"*.blob{SOURCE_SUFFIX}")
    assert note.read_text().strip() == sha
