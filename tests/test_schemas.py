"""The JSON Schemas shipped for spec files and manifests (`rnnexport schema ...`): they agree with
the loaders (the same keys, every spec and manifest in the repository passes, what the model-spec
loader refuses for its structure the schema refuses too), and the RNN configuration and manifest
readers check by them (a changed schema changes what they accept), one line per problem."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib

import jsonschema
import pytest

from rnnexport import schema as schemas
from rnnexport.artifacts import open_artifact
from rnnexport.errors import ArtifactError, SpecError
from rnnexport.schema import KINDS
from rnnexport.modelspec_load import load_model_spec
from rnnexport.spec import RNNSpec, spec_from_dict
from tests.conftest import MODELS, REPO
from tests.export import test_inputs_fn, test_user_models

SCHEMAS = REPO / "rnnexport" / "schemas"


def _schema(kind: str) -> dict:
    return json.loads((SCHEMAS / f"{kind}.schema.json").read_text())


def _errors(kind: str, data: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema(kind))
    return [e.message for e in validator.iter_errors(data)]


def test_the_schemas_are_valid_json_schemas():
    for kind in KINDS:
        jsonschema.Draft202012Validator.check_schema(_schema(kind))


def test_the_schemas_have_exactly_the_specs_keys():
    from rnnexport.modelspec import ModelSpec

    nested = {"state", "stream_dim", "derived"}  # [outputs] state, stream_dim; a dim's size expression
    assert set(_schema("model-spec")["properties"]) == {f.name for f in dataclasses.fields(ModelSpec)} - nested
    assert set(_schema("model-spec")["properties"]["outputs"]["properties"]) == {"names", "state", "stream_dim"}
    assert set(_schema("rnn-config")["properties"]) == {f.name for f in dataclasses.fields(RNNSpec)}


def _repository_specs() -> list[tuple[str, str, dict]]:
    found = [(p.name, p.read_text()) for p in sorted((REPO / "rnnexport" / "catalog").glob("*.toml"))]
    found += [(p.name, p.read_text()) for p in sorted((REPO / "tests" / "usermodels").glob("*.toml"))]
    found += [(f"test_user_models {name}", text) for name, (text, _, _) in test_user_models.MATRIX.items() if text]
    found += [("test_inputs_fn", test_inputs_fn.SPEC.format(fn="masked_inputs"))]
    docs = re.findall(r"```toml\n(.*?)```", (REPO / "docs" / "specs.md").read_text(), re.S)
    found += [(f"docs/specs.md block {i}", text) for i, text in enumerate(docs)]
    return [(name, "model-spec" if "module" in data else "rnn-config", data)
            for name, text in found for data in [tomllib.loads(text)]]


@pytest.mark.parametrize("name, kind, data", _repository_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_spec_in_the_repository_passes_its_schema(name, kind, data):
    assert _errors(kind, data) == []


BASE = test_user_models.STATEFUL


@pytest.mark.parametrize("change", [
    lambda t: "modul = 'x.py:M'\n" + t,  # unknown top-level key
    lambda t: t.replace('[inputs.x]', '[inputs.x]\ndtype = "float64"'),
    lambda t: 'formats = ["onxx"]\n' + t,
    lambda t: t.replace("size = 3", "size = 0", 1),
    lambda t: t.replace("[inputs.x]", '[inputs.x]\nsorted = "down"'),
    lambda t: t.replace("[dims.batch]", "[dims.batch]\nstep = 2"),
    lambda t: t.replace('names = ["y", "h_n", "c_n"]', "names = []"),
    lambda t: 'torchscript = "compile"\n' + t,
], ids=["unknown-key", "dtype", "formats", "size-0", "sorted", "dim-key", "no-names", "torchscript"])
def test_what_the_loader_refuses_for_its_structure_the_schema_refuses(tmp_path, change):
    text = change(BASE.replace('module = "features.py:StatefulLSTM"', 'module = "m.py:M"'))
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(SpecError):
        load_model_spec(tmp_path / "m.toml")
    assert _errors("model-spec", tomllib.loads(text))


@pytest.mark.parametrize(("data", "message"), [
    ({"cell": "lstmm"}, r"spec: invalid value for 'cell': 'lstmm' \(did you mean 'lstm'\?\); valid: 'rnn' \| 'lstm' \| 'gru'$"),
    ({"num_layer": 2}, r"spec: unknown key 'num_layer' \(did you mean 'num_layers'\?\); valid keys: name, cell, "),
    ({"input_size": 0}, r"spec: invalid value for 'input_size': 0; valid: an integer in \[1, 2147483647\]"),
    ({"seed": -1}, r"spec: invalid value for 'seed': -1; valid: an integer in \[0, 2\*\*63\)$"),
    ({"dropout": "0.5"}, r"spec: key 'dropout': expected float, got str '0.5'$"),
    ({"name": "x\n"}, r"spec: invalid value for 'name': 'x\\n'; valid: 1-64 letters"),
])
def test_the_rnn_loader_checks_by_the_schema_one_line(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict({"name": "x", "input_size": 3, "hidden_size": 4, **data})
    assert _errors("rnn-config", {"input_size": 3, "hidden_size": 4, **data})


def test_a_changed_schema_changes_what_the_readers_accept(monkeypatch, tmp_path):
    """The readers check by the shipped schemas, not by a copy of them in code."""
    spec = {"name": "x", "input_size": 3, "hidden_size": 4, "num_layers": 3}
    assert spec_from_dict(spec).num_layers == 3
    stricter = {"rnn-config": _schema("rnn-config"), "manifest": _schema("manifest")}
    stricter["rnn-config"]["properties"]["num_layers"] = {"type": "integer", "maximum": 2}
    stricter["manifest"]["properties"]["opset"] = {"type": "integer", "maximum": 17}
    monkeypatch.setattr(schemas, "schema_text", lambda kind: json.dumps(stricter[kind]))
    schemas._validator.cache_clear()
    try:
        with pytest.raises(SpecError, match=r"invalid value for 'num_layers': 3; valid: an integer <= 2"):
            spec_from_dict(spec)
        with pytest.raises(ArtifactError, match=r"invalid value for 'opset': 18; valid: an integer <= 17"):
            open_artifact(MODELS / "deep")
    finally:
        schemas._validator.cache_clear()


@pytest.mark.parametrize("folder", sorted(p.name for p in MODELS.iterdir() if p.is_dir()))
def test_every_committed_manifest_passes_the_manifest_schema(folder):
    assert _errors("manifest", json.loads((MODELS / folder / "manifest.json").read_text())) == []


def test_the_cli_prints_the_shipped_schema(cli):
    for kind in KINDS:
        code, out, _ = cli("schema", kind)
        assert code == 0 and json.loads(out) == _schema(kind)
    code, _, err = cli("schema", "model")
    assert code == 2 and "invalid choice" in err
