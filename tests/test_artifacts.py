from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from rnnexport.artifacts import (
    MANIFEST, discover_artifacts, open_artifact, read_npz, staged_folder, write_json, write_npz,
)
from rnnexport.errors import ArtifactError, UsageError
from tests.conftest import MODELS, restamp


def test_npz_is_byte_deterministic_and_loadable(tmp_path: Path):
    arrays = {"b/x": np.arange(6, dtype=np.float32).reshape(2, 3), "a/y": np.ones(2, np.float32)}
    write_npz(tmp_path / "1.npz", arrays)
    os.utime(tmp_path / "1.npz", (0, 0))
    write_npz(tmp_path / "2.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    loaded = read_npz(tmp_path / "1.npz")
    assert set(loaded) == {"a/y", "b/x"} and np.array_equal(loaded["b/x"], arrays["b/x"])


@pytest.mark.parametrize("name", ["deep", "deep_bidirectional", "seq_first", "single_layer"])
def test_committed_artifacts_verify(name):
    artifact = open_artifact(MODELS / name)
    assert artifact.spec.name == name
    golden = artifact.golden()
    assert {c.id for c in golden} == set(artifact.manifest["golden"]["cases"])


@pytest.mark.parametrize("filename", ["model.onnx", "model.pt", "model.pt2", "weights.pt", "golden.npz"])
def test_tampered_file_is_refused(artifact_copy, filename):
    folder = artifact_copy("deep")
    data = bytearray((folder / filename).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / filename).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{filename}: sha256 .* differs from the manifest"):
        open_artifact(folder)


def test_truncated_file_is_refused(artifact_copy):
    folder = artifact_copy("deep")
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match=r"model.onnx: \d+ bytes, the manifest says"):
        open_artifact(folder)


def test_missing_file_is_refused(artifact_copy):
    folder = artifact_copy("deep")
    (folder / "model.pt").unlink()
    with pytest.raises(ArtifactError, match=r"model.pt: missing \(listed in manifest.json\)"):
        open_artifact(folder)


def test_folder_without_manifest(tmp_path: Path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ArtifactError, match="not an artifact folder: no manifest.json"):
        open_artifact(tmp_path / "x")
    with pytest.raises(ArtifactError, match="not an artifact folder"):
        discover_artifacts([tmp_path / "x"])
    with pytest.raises(ArtifactError, match="no such file"):
        discover_artifacts([tmp_path / "missing"])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(schema_version=99), "schema version 99 is not supported"),
        (lambda m: m["spec"].update(cell="transformer"), "cell type 'transformer'"),
        (lambda m: m.pop("files"), "missing required key 'files'$"),
        (lambda m: m["files"].update({"../x": {"sha256": "0"}}), "invalid key '../x' in 'files'; valid: a plain file name"),
        (lambda m: m["files"].update({"manifest.json": m["files"]["model.onnx"]}), "invalid key 'manifest.json'"),
    ],
    ids=["newer-schema", "other-cell", "no-files", "path-escape", "lists-itself"],
)
def test_bad_manifest(artifact_copy, edit, match):
    folder = artifact_copy("deep")
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    write_json(folder / MANIFEST, manifest)
    with pytest.raises(ArtifactError, match=match):
        open_artifact(folder)


def test_unreadable_manifest(artifact_copy):
    folder = artifact_copy("deep")
    (folder / MANIFEST).write_text("{ not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        open_artifact(folder)


def test_golden_of_wrong_shape_or_missing(artifact_copy):
    folder = artifact_copy("deep")
    arrays = read_npz(folder / "golden.npz")
    arrays["b3xs17-h0zero/h_n"] = arrays["b3xs17-h0zero/h_n"][:, :2]
    write_npz(folder / "golden.npz", arrays)
    restamp(folder, "golden.npz")
    with pytest.raises(ArtifactError, match=r"golden 'b3xs17-h0zero/h_n' has shape \[3, 2, 8\], expected \[3, 3, 8\]"):
        open_artifact(folder).golden()
    del arrays["b3xs17-h0zero/h_n"]
    write_npz(folder / "golden.npz", arrays)
    restamp(folder, "golden.npz")
    with pytest.raises(ArtifactError, match="golden data lacks 'b3xs17-h0zero/h_n'"):
        open_artifact(folder).golden()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _artifact_folder(folder: Path) -> None:
    """The least a folder needs to count as an artifact rnnexport may replace."""
    folder.mkdir()
    (folder / MANIFEST).write_text('{"schema_version": 1, "files": {"f": {}}}')


def test_staged_folder_keeps_previous_on_error(tmp_path: Path):
    final = tmp_path / "art"
    _artifact_folder(final)
    (final / "f").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_folder(final) as stage:
        (stage / "f").write_text("new, half written")
        raise KeyboardInterrupt
    assert (final / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".art.lock", "art"]


def test_staged_folder_replaces_and_recovers(tmp_path: Path):
    final = tmp_path / "art"
    with staged_folder(final) as stage:
        (stage / "f").write_text("one")
        (stage / MANIFEST).write_text('{"schema_version": 1, "files": {"f": {}}}')
    assert (final / "f").read_text() == "one" and oct(final.stat().st_mode & 0o777) != "0o700"
    # A death between the two renames leaves the old folder aside; the next export restores it.
    os.rename(final, tmp_path / ".art.previous")
    (tmp_path / ".art.staging-zzzzzzzz").mkdir()
    with pytest.raises(RuntimeError), staged_folder(final):
        assert (final / "f").read_text() == "one"
        assert not (tmp_path / ".art.staging-zzzzzzzz").exists()
        raise RuntimeError
    assert (final / "f").read_text() == "one"


def test_unwritable_output_folder(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="cannot be written"), staged_folder(blocker / "sub" / "art"):
        pass
