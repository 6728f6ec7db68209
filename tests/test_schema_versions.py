"""Manifest schema 2 still reads schema 1: the artifacts the previous main committed validate
unchanged, and a schema-1 manifest cannot use the fields that came with schema 2."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rnnexport.artifacts import MANIFEST, open_artifact
from rnnexport.errors import ArtifactError
from rnnexport.validate import validate_paths
from tests.conftest import MODELS, REPO

# The last commit whose models/ were written with schema 1 (before formats were independent).
SCHEMA_1_COMMIT = "c418b02"


def _schema_1_models(target: Path) -> Path:
    """models/ as SCHEMA_1_COMMIT committed them, extracted from the repository's history."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", SCHEMA_1_COMMIT, "models"], capture_output=True,
                                 check=True, timeout=120).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the repository's history is not here to extract models/ of {SCHEMA_1_COMMIT} from: {exc}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "models"


def test_the_previous_mains_committed_models_validate_unchanged(tmp_path):
    old = _schema_1_models(tmp_path)
    manifests = {p.parent.name: json.loads(p.read_text()) for p in old.glob(f"*/{MANIFEST}")}
    assert len(manifests) == 8 and {m["schema_version"] for m in manifests.values()} == {1}
    reports = validate_paths([old], runtimes=["torch", "onnxruntime-cpu", "torch-export", "torchscript"])
    assert [r.artifact for r in reports if not r.passed] == []
    assert len(reports) == 8


def test_a_schema_1_manifest_of_today_reads_and_validates(tmp_path):
    folder = shutil.copytree(MODELS / "single_layer", tmp_path / "single_layer")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 1}))
    assert open_artifact(folder).manifest["schema_version"] == 1
    assert validate_paths([folder], runtimes=["onnxruntime-cpu"])[0].passed


@pytest.mark.parametrize("field, value", [
    ("formats_missing", {"onnx": "excused"}),
    ("formats", ["pt2"]),
    ("inputs_source", {}),
])
def test_schema_2_fields_in_a_schema_1_manifest_are_refused(tmp_path, field, value):
    folder = shutil.copytree(MODELS / "single_layer", tmp_path / "single_layer")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 1, field: value}))
    with pytest.raises(ArtifactError, match=f"'{field}' is a schema-2 field, but the manifest says schema 1"):
        open_artifact(folder)


@pytest.mark.parametrize("field", ["variants", "criteria", "spec.evaluation"])
def test_schema_3_fields_in_a_schema_2_manifest_are_refused(tmp_path, field):
    """A manifest that records variants (or their spec keys) says schema 3, which a schema-2
    reader refuses as newer; saying 2 instead must not smuggle them past it."""
    folder = shutil.copytree(MODELS / "text_classifier", tmp_path / "text_classifier")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["schema_version"] == 3
    if field == "criteria":
        manifest.pop("variants")
    if field == "spec.evaluation":
        for key in ("variants", "criteria"):
            manifest.pop(key)
            manifest["spec"].pop(key)
        del manifest["files"]["model.int8.onnx"]
        (folder / "model.int8.onnx").unlink()
    (folder / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 2}))
    with pytest.raises(ArtifactError, match=f"'{field}' is a schema-3 field, but the manifest says schema 2"):
        open_artifact(folder)


def test_only_manifests_with_variants_say_schema_3():
    found = {p.parent.name: json.loads(p.read_text())["schema_version"] for p in MODELS.glob("*/manifest.json")}
    assert {n for n, v in found.items() if v == 3} == {"text_classifier", "keyword_spotter", "seq2seq_encoder",
                                                      "seq2seq_decoder"}
    assert {v for n, v in found.items() if n in ("deep", "deep_bidirectional", "seq_first", "single_layer")} == {2}
