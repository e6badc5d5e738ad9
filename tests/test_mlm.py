"""The model's STAC MLM Item (copgen_rt/mlm.py, `copgen-rt info --mlm`), validated offline.

The MLM extension's own JSON schema is not in any package here and cannot be fetched offline, so
the Item is checked by what is: the STAC core Item schema (shipped with pystac), the MLM field
models of `stac-model` (pydantic), and a read back through pystac's MLM extension."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pystac
import pytest
from click.testing import CliRunner
from pystac.extensions import mlm
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from copgen_rt import specs
from copgen_rt.cli import main

stac_model = pytest.importorskip("stac_model.schema")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("mlm") / "copgen-demo-mlm.json"
    r = CliRunner().invoke(main, ["info", "--mlm", str(path)])
    assert r.exit_code == 0, r.output
    return json.loads(path.read_text())


def test_the_item_is_valid_stac_and_valid_mlm(written):
    JsonSchemaSTACValidator().validate_core(written, pystac.STACObjectType.ITEM, written["stac_version"],
                                            "copgen-demo-mlm.json")
    assert mlm.SCHEMA_URI_PATTERN.format(version=mlm.DEFAULT_VERSION) in written["stac_extensions"]
    props = {k.removeprefix("mlm:"): v for k, v in written["properties"].items() if k.startswith("mlm:")}
    stac_model.MLModelProperties.model_validate(props)  # raises on a missing or mistyped field


def test_inputs_outputs_and_artifacts_describe_the_model(written):
    spec = specs.get("copgen-demo")
    ext = mlm.MLMExtension.ext(pystac.Item.from_dict(written))
    images = [m for m in spec.modalities if m.is_image]
    assert [i.name for i in ext.input] == [o.name for o in ext.output] == [m.name for m in images]
    s1 = next(i for i in ext.input if i.name == "S1RTC_vh_vv")
    assert [str(b) if isinstance(b, str) else b.name for b in s1.bands] == ["VV", "VH"]
    assert s1.input.shape == [-1, 2, 192, 192] and s1.input.data_type == mlm.DataType.FLOAT32
    lulc = next(o for o in ext.output if o.name == "LULC_LULC")
    assert [c.value for c in lulc.classes] == list(spec.modality("LULC_LULC").processing.codes)
    models = [a for a in written["assets"].values() if "mlm:model" in a["roles"]]
    assert {a["mlm:artifact_type"] for a in models} == {"safetensors"} and len(models) >= 2
    for asset in models:  # the checksums are the files'
        data = Path(asset["href"].removeprefix("file://")).read_bytes()
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
        assert asset["file:size"] == len(data)


def test_a_released_model_without_weights_has_no_artifacts(tmp_path):
    path = tmp_path / "base.json"
    r = CliRunner().invoke(main, ["info", "--model", "copgen-base", "--mlm", str(path)])
    assert r.exit_code == 0, r.output
    item = json.loads(path.read_text())
    assert item["properties"]["mlm:name"] == "copgen-base" and item["assets"] == {}
