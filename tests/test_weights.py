from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY
from safetensors.torch import load_file, save_file

from copgen_rt import Denoiser, Pipeline, specs
from copgen_rt.errors import CheckpointError
from copgen_rt.weights import (
    Checkpoint,
    convert,
    find_weights,
    load_denoiser,
    make_random_weights,
    read_checkpoint,
    resolve_weights,
)

REAL_SIZES = {"copgen-base": 286_986_562, "copgen-large": 501_092_674, "copgen-huge": 951_274_306}


@pytest.mark.parametrize("name", list(REAL_SIZES))
def test_strict_loading_of_real_size_state_dicts(name):
    """Each real spec loads a state dict of its released shapes strictly, at the released
    parameter count, in the checkpoint's dtype. The tensors are zero-stride views (no memory):
    the file round trip of a real-size checkpoint is the Beta test's (the same code path)."""
    spec = specs.get(name)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Denoiser(spec).state_dict().items()}
    zero = torch.zeros((), dtype=torch.float16)
    ckpt = Checkpoint(Path(f"{name}.safetensors"), {k: zero.expand(shape) for k, shape in shapes.items()})
    model = load_denoiser(spec, ckpt, dtype=torch.float16)
    assert sum(p.numel() for p in model.parameters()) == REAL_SIZES[name]
    assert model.in_blocks[0].attn.qkv.weight.dtype == torch.float16


def test_strict_loading_of_a_synthetic_real_size_beta_checkpoint(tmp_path):
    """make_random_weights writes real-size files (COP-GEN-Beta: denoiser and VAE), marked random
    and listed in a manifest; they read back and load strictly in fp16 through from_pretrained."""
    spec = specs.get("copgen-beta")
    make_random_weights(spec, tmp_path, dtype=torch.float16)
    ckpt = read_checkpoint(tmp_path / "denoiser.safetensors")
    assert ckpt.is_random and ckpt.metadata["spec"] == "copgen-beta"
    manifest = json.loads((tmp_path / "weights.json").read_text())
    assert manifest["random"] is True and set(manifest["files"]) == {"denoiser", "vae/sd-kl-f8"}
    pipe = Pipeline.from_pretrained("copgen-beta", tmp_path, device="cpu", dtype=torch.float16,
                                    vae_dtype=torch.float16)
    assert pipe.is_random and spec.num_tokens == 1028
    denoiser = pipe.denoiser.model
    assert len(denoiser.state_dict()) == 290 and denoiser.pos_embed.shape == (1, 1028, 1024)
    assert sum(p.numel() for p in denoiser.parameters()) == 286_648_384
    vae = pipe.vae("dem").model  # one shared VAE for the four modalities
    assert all(pipe.vae(n).model is vae for n in spec.names)
    assert len(vae.state_dict()) == 248 and sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert vae.encoder.conv_in.weight.dtype == torch.float16


def test_released_pth_layout_and_training_form(tmp_path, tiny_spec):
    """`.pth` state dicts (weights-only unpickling) and the VAE training `.pt` form both load."""
    base = tmp_path / "release"
    sd = load_file(str(TINY / "denoiser.safetensors"))
    (base / "models/copgen/cop_gen_base").mkdir(parents=True)
    torch.save(sd, base / "models/copgen/cop_gen_base/500000_nnet_ema.pth")
    vae = load_file(str(TINY / "vae-DEM_DEM.safetensors"))
    folder = base / "models/vae/DEM_64x64_DEM_latent_8"
    folder.mkdir(parents=True)
    training = {"step": 50, "model": {}, "ema": {**{f"ema_model.{k}": v for k, v in vae.items()},
                                                 "ema_model.loss.logvar": torch.zeros(()),
                                                 "initted": torch.ones(())}}
    torch.save(training, folder / "model-50.pt")
    spec = tiny_spec.replace(release=specs.get("copgen-base").release)
    found = resolve_weights(spec, base)
    assert found.denoiser.name == "500000_nnet_ema.pth"
    pipe = Pipeline.from_weights(spec, found.denoiser, vaes={"DEM_DEM": found.vaes["DEM_DEM"]})
    assert pipe.vae("DEM_DEM") is not None and not pipe.is_random
    out = convert(spec, base, tmp_path / "converted", dtype=torch.bfloat16)
    converted = read_checkpoint(out / "vae" / "DEM_DEM.safetensors")
    assert set(converted.state_dict) == set(vae)
    assert converted.state_dict["encoder.conv_in.weight"].dtype == torch.bfloat16
    again = find_weights(spec, out)
    assert again.denoiser == out / "denoiser.safetensors"


def _one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_mismatched_checkpoints_name_the_first_bad_key(tmp_path, tiny_spec):
    sd = load_file(str(TINY / "denoiser.safetensors"))
    bad = dict(sd)
    bad["pos_embed"] = torch.zeros(1, 833, 64)
    save_file(bad, tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointError) as e:
        Pipeline.from_weights(tiny_spec, tmp_path / "shape.safetensors")
    assert "'pos_embed' has shape (1, 833, 64), the spec expects (1, 834, 64)" in _one_line(e.value)

    missing = {k: v for k, v in sd.items() if k != "norm.weight"}
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="missing key 'norm.weight'"):
        Pipeline.from_weights(tiny_spec, tmp_path / "missing.safetensors")

    extra = {**sd, "module.extra": torch.zeros(2)}
    save_file(extra, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match="unexpected key 'module.extra'"):
        Pipeline.from_weights(tiny_spec, tmp_path / "extra.safetensors")

    with pytest.raises(CheckpointError, match="denoiser of copgen-base"):  # wrong spec entirely
        Pipeline.from_weights("copgen-base", TINY / "denoiser.safetensors", device="meta")


def test_non_finite_weights_are_refused(tmp_path, tiny_spec):
    sd = load_file(str(TINY / "denoiser.safetensors"))
    sd["in_blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    save_file(sd, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="'in_blocks.0.attn.qkv.weight' holds NaN or infinite"):
        Pipeline.from_weights(tiny_spec, tmp_path / "nan.safetensors")


def test_weights_manifest_hashes_are_verified(tmp_path):
    spec = specs.get("copgen-demo")
    make_random_weights(spec, tmp_path, vaes=["DEM_DEM"])
    assert find_weights(spec, tmp_path).vaes["DEM_DEM"].name == "DEM_DEM.safetensors"
    vae = tmp_path / "vae" / "DEM_DEM.safetensors"
    data = bytearray(vae.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the tensor bytes: still a readable safetensors file
    vae.write_bytes(bytes(data))
    read_checkpoint(vae)
    with pytest.raises(CheckpointError, match="DEM_DEM.safetensors: sha256 differs from weights.json"):
        find_weights(spec, tmp_path)
    (tmp_path / "weights.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="weights.json: not valid JSON"):
        find_weights(spec, tmp_path)


def test_corrupt_and_unsafe_files(tmp_path, tiny_spec):
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes((TINY / "denoiser.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(trunc)
    assert "not a readable checkpoint" in _one_line(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(junk)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weights": torch.zeros(1), "f": print}, unsafe)  # needs code to unpickle
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(unsafe)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth")


def test_hub_id_offline_is_one_line(monkeypatch, tiny_spec):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as e:
        resolve_weights(specs.get("copgen-base"), "mespinosami/copgen-base")
    assert "Hugging Face hub" in _one_line(e.value)
    with pytest.raises(CheckpointError, match="no such weights directory"):
        resolve_weights(tiny_spec, "./not/here")


def test_weights_paths_are_never_taken_for_hub_ids(tmp_path, monkeypatch):
    """An existing path wins (trailing slash included); a missing path, or anything that is not a
    well-formed owner/name, is 'no such weights directory', in one line, exit 4 from the CLI."""
    from copgen_rt.cli import main
    from copgen_rt.demo import demo_weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copytree(demo_weights(), tmp_path / "weights")
    assert Pipeline.from_pretrained("copgen-demo", "weights/", device="cpu").is_random
    r = CliRunner().invoke(main, ["convert", "--model", "copgen-demo", "--weights", "weights/",
                                  "--out", "conv"])
    assert r.exit_code == 0 and (tmp_path / "conv" / "weights.json").is_file(), r.output
    for missing in ["gone/", "./gone", "~/gone-copgen-weights", "/gone", "gone/a/b", "gone", "a--b/c"]:
        with pytest.raises(CheckpointError) as e:
            Pipeline.from_pretrained("copgen-demo", missing)
        assert _one_line(e.value).startswith(f"no such weights directory: {missing} "), e.value
    r = CliRunner().invoke(main, ["infer", "--weights", "weights-missing/", "--out", "o"])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 4 and lines == [
        "copgen-rt: error: no such weights directory: weights-missing/ (nor a hub id 'owner/name')"], r.output
