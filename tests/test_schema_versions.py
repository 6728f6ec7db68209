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
