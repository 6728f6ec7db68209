"""The project's reference lives in docs/ and covers what the code accepts; nothing points users
to a file they do not have."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rnnexport.schema import schema_text
from rnnexport.spec import RNNSpec
from tests.conftest import REPO


def test_nothing_cites_a_design_document_users_lack():
    sources = [REPO / "README.md", *REPO.glob("rnnexport/**/*.py"), *REPO.glob("rnnexport/**/*.toml"),
               *REPO.glob("docs/*.md")]
    citing = [str(p.relative_to(REPO)) for p in sources if "DESIGN.md" in p.read_text()]
    assert not citing


_MODEL_SPEC = json.loads(schema_text("model-spec"))["properties"]


@pytest.mark.parametrize("keys", [_MODEL_SPEC, _MODEL_SPEC["inputs"]["additionalProperties"]["properties"],
                                  _MODEL_SPEC["dims"]["additionalProperties"]["properties"],
                                  _MODEL_SPEC["outputs"]["properties"], _MODEL_SPEC["tolerance"]["properties"]],
                         ids=["top", "inputs", "dims", "outputs", "tolerance"])
def test_every_model_spec_key_is_documented(keys):
    text = (REPO / "docs" / "specs.md").read_text()
    assert [key for key in keys if f"{key} =" not in text and f"[{key}" not in text] == []


def test_every_rnn_configuration_key_is_documented():
    text = (REPO / "docs" / "specs.md").read_text()
    assert [f.name for f in dataclasses.fields(RNNSpec) if f"`{f.name}`" not in text] == []


def test_every_manifest_field_is_documented():
    import json

    text = (REPO / "docs" / "artifacts.md").read_text()
    fields = {key for folder in (REPO / "models").iterdir() if (folder / "manifest.json").exists()
              for key in json.loads((folder / "manifest.json").read_text())}
    assert sorted(key for key in fields if f"`{key}`" not in text) == []
