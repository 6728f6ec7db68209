"""Artifact folders: their layout, opening one (`open_artifact`: the manifest read, the folder
listing checked, every file verified into a private copy, all before anything is loaded), the
verified `Artifact`, and finding artifact folders (`discover_artifacts`).

Layout of ``DIR/<name>/``::

    model.onnx     ONNX (inputs input, h_0[, c_0][, lengths]; outputs output, h_n[, c_n]; dynamic
                   batch and seq); absent for an LSTM with proj_size (ONNX has no projection)
    model.pt       TorchScript, called like the module: m(input, h_0[, lengths]) -> (output, h_n),
                   an LSTM m(input, (h_0, c_0)[, lengths]) -> (output, (h_n, c_n))
    model.pt2      torch.export program (needs ``import rnnexport.ops`` before loading)
    weights.pt     the module's state dict (load with ``torch.load(..., weights_only=True)``):
                   rebuilds the eager reference without re-running any RNG
    golden.npz     golden inputs and eager outputs, keys ``<case id>/<tensor name>``
    manifest.json  spec, sha256 of every file above, I/O contract, versions, last validation

A model spec's artifact (manifest ``"kind": "model"``) holds ``model.onnx``, ``model.pt``,
``model.pt2``, ``weights.safetensors`` and ``golden.npz``, named by the spec's inputs and outputs
(docs/specs.md, "Model spec").

Every file listed in the manifest is checked against its sha256 before anything is loaded.

The parts have their own modules: the manifest `rnnexport.manifest`, sha256 checks and the
private copy `rnnexport.verify`, golden data `rnnexport.golden`, the ``.pt2`` allowlist
`rnnexport.pt2check`, staging and locks `rnnexport.staging`. Their public names are also
importable from here, as before.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ArtifactError, UsageError
from rnnexport.golden import golden_arrays, label_names, read_golden, read_npz, write_npz
from rnnexport.inputs import Case, check_feeds
from rnnexport.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    golden_case_ids,
    implied_files,
    manifest_summary,
    model_manifest,
    read_manifest,
    rnn_manifest,
    versions,
    write_json,
)
from rnnexport.modelspec import ModelSpec
from rnnexport.modelspec_load import model_spec_from_dict
from rnnexport.pt2check import check_program_archive, weights_only_loading
from rnnexport.spec import CELLS, RNNSpec, spec_from_dict
# DEFAULT_LOCK_TIMEOUT, export_lock, resolve_output and sha256_file are not used here: imported so
# that `from rnnexport.artifacts import ...` finds every name it found before the split.
from rnnexport.staging import (
    DEFAULT_LOCK_TIMEOUT,
    check_replaceable,
    export_lock,
    is_artifact_folder,
    keep_rejected,
    resolve_output,
    staged_folder,
    umask,
)
from rnnexport.verify import file_entry, regular_file, sha256_file, verified_copy

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "Artifact",
    "discover_artifacts",
    "check_program_archive",
    "check_replaceable",
    "file_entry",
    "implied_files",
    "is_artifact_folder",
    "keep_rejected",
    "manifest_summary",
    "model_manifest",
    "open_artifact",
    "rnn_manifest",
    "read_npz",
    "staged_folder",
    "versions",
    "write_json",
    "umask",
    "write_npz",
]


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder: every file in it is listed in the manifest, every file the
    manifest implies is there, and each matched its sha256."""

    path: Path
    manifest: dict[str, Any]
    spec: RNNSpec | ModelSpec
    verified: Path | None = None  # the private copy the files were verified into (`verified_copy`)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uses_sequence_lens(self) -> bool:
        """Whether the ONNX graph feeds ``sequence_lens`` (variable lengths) to a recurrent op."""
        return self.spec.uses_sequence_lens(self.manifest)

    def file(self, name: str) -> Path | None:
        """Path of a file listed in the manifest, or None if this artifact has none: in the
        private copy it was verified into, which is what every runtime loads."""
        return (self.verified or self.path) / name if name in self.manifest["files"] else None

    @contextlib.contextmanager
    def errors_named(self) -> Iterator[None]:
        """Errors raised in the block name the artifact's folder, not the private copy."""
        try:
            yield
        except ArtifactError as exc:
            if self.verified is None:
                raise
            raise ArtifactError(str(exc).replace(str(self.verified), str(self.path))) from None

    def state_dict(self) -> dict[str, Any]:
        """The stored weights (``weights.pt`` loaded with ``weights_only=True``: no code is
        unpickled; or ``weights.safetensors``), by the spec (`load_state_dict`).

        Raises:
            ArtifactError: they cannot be loaded (naming the artifact's folder).
        """
        with self.errors_named():
            return self.spec.load_state_dict(self.file(self.spec.weights_file))

    def golden_cases(self) -> list[Case]:
        """The cases stored in the golden data (checked when the artifact was opened)."""
        return [self.spec.parse_case(case_id) for case_id in self.manifest["golden"]["cases"]]

    def golden(self) -> dict[Case, dict[str, np.ndarray]]:
        """Golden inputs and outputs per case, checked against the spec's I/O shapes and dtypes.

        Raises:
            ArtifactError: a case or tensor is missing, unexpected, or has a shape or dtype the
                spec does not give.
        """
        expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for case in self.golden_cases():
            for name, shape, dtype in golden_arrays(self.spec, self.manifest, case):
                expected[f"{case.id}/{name}"] = (shape, dtype)
        with self.errors_named():
            arrays = read_golden(self.file(self.manifest["golden"]["file"]), expected)
        cases: dict[Case, dict[str, np.ndarray]] = {}
        for case in self.golden_cases():
            names = (*self.spec.input_names, *self.spec.output_names, *label_names(self.spec, case))
            tensors = {name: arrays[f"{case.id}/{name}"] for name in names}
            try:
                check_feeds(self.spec, {n: tensors[n] for n in self.spec.input_names})
            except UsageError as exc:
                raise ArtifactError(f"{self.path}: golden case {case.id!r}: {exc}") from None
            cases[case] = tensors
        return cases

def _check_listing(path: Path, manifest: dict[str, Any], spec: RNNSpec) -> dict[str, int]:
    """Every entry of the folder is a listed regular file; every implied file is listed.
    Returns each listed file's size."""
    listed = manifest["files"]
    implied = implied_files(spec, manifest)
    missing = [name for name in implied if name not in listed]
    if missing:
        raise ArtifactError(f"{path / MANIFEST}: {missing[0]!r} is not listed in 'files'; this artifact of "
                            f"{spec.name!r} ships {', '.join(implied)}")
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot list the artifact folder: {exc.strerror or exc}") from None
    unlisted = [name for name in entries if name != MANIFEST and name not in listed]
    if unlisted:
        raise ArtifactError(f"{path / unlisted[0]}: not listed in {MANIFEST}; an artifact folder holds only the "
                            "files its manifest lists (with their sha256)")
    return {name: regular_file(path / name, f"listed in {MANIFEST}").st_size for name in sorted(listed)}


def spec_of_manifest(manifest: dict[str, Any], manifest_path: Path):
    """The spec a manifest records: an RNN configuration (``cell``), or a model spec (``"kind":
    "model"``). The one place that tells them apart; everything after calls the spec protocol.

    Raises:
        ArtifactError: an unknown kind or cell, or spec data that does not check.
    """
    spec_data = manifest.get("spec")
    kind = manifest.get("kind", "rnn")
    if kind not in ("rnn", "model"):
        raise ArtifactError(f"{manifest_path}: artifact kind {kind!r}; this rnnexport validates 'rnn' and 'model'")
    if kind == "rnn" and isinstance(spec_data, dict) and spec_data.get("cell") not in CELLS:
        raise ArtifactError(
            f"{manifest_path}: artifact of cell type {spec_data.get('cell')!r}; this rnnexport "
            f"validates {', '.join(CELLS)}"
        )
    try:
        if kind == "model":
            return model_spec_from_dict(spec_data, source=f"{manifest_path} spec", recorded=True)
        return spec_from_dict(spec_data, source=f"{manifest_path} spec")
    except Exception as exc:
        raise ArtifactError(str(exc)) from None


def open_artifact(path: str | Path, *, max_memory: int | None = None) -> Artifact:
    """Read and verify an artifact folder. Nothing in it is loaded before this passes.

    Args:
        path: The artifact folder.
        max_memory: Bytes the weights and the golden cases may need (see `rnnexport.limits`);
            default half of the memory available now.

    Raises:
        ArtifactError: no folder or manifest, an unreadable, malformed or newer-schema manifest,
            another cell type, a file in the folder that the manifest does not list, a file the
            manifest implies that is missing or unlisted, an entry that is not a regular file,
            or a file whose size or sha256 differs from the manifest.
        UsageError: the artifact needs more memory than `max_memory`.
    """
    from rnnexport.limits import check_memory
    from rnnexport.contract import TensorSpec

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact folder (no such directory)")
    manifest = read_manifest(path)
    manifest_path = path / MANIFEST
    spec = spec_of_manifest(manifest, manifest_path)
    cases = golden_case_ids(spec, manifest, manifest_path)
    sizes = _check_listing(path, manifest, spec)
    check_memory(f"{path}: the weights", spec.weight_bytes() or sizes[spec.weights_file], max_memory)
    # What the manifest declares, before anything is read: the golden data is read whole.
    golden = {case: golden_arrays(spec, manifest, case) for case in cases}
    declared = sum(math.prod(shape) * dtype.itemsize for found in golden.values() for _, shape, dtype in found)
    check_memory(f"{path}: the golden data (as its manifest declares it)", declared, max_memory)
    for case, found in golden.items():
        outputs = tuple(TensorSpec(n, dtype.name, shape) for n, shape, dtype in found if n in spec.output_names)
        check_memory(f"{path}: golden case {case.id}", spec.case_bytes(case, outputs), max_memory)
    for name, size in sizes.items():
        if size != manifest["files"][name]["bytes"]:
            raise ArtifactError(f"{path / name}: {size} bytes, the manifest says {manifest['files'][name]['bytes']}: "
                                "the file was modified, truncated or replaced; re-export the artifact")
    import weakref

    copy = verified_copy(path, manifest["files"])
    artifact = Artifact(path=path, manifest=manifest, spec=spec, verified=copy)
    weakref.finalize(artifact, shutil.rmtree, str(copy), True)  # when the artifact is dropped, or at exit
    if "model.pt2" in manifest["files"]:
        with artifact.errors_named():
            check_program_archive(artifact.file("model.pt2"))
    return artifact

def discover_artifacts(paths: list[str | Path]) -> list[Path]:
    """Artifact folders among `paths`: a folder with a manifest, or a folder of such folders.

    Hidden folders (staging and backups of interrupted exports) are ignored.

    Raises:
        ArtifactError: a path does not exist, or holds no artifact folder at all.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ArtifactError(f"{path}: no such file or directory")
        if (path / MANIFEST).exists() or not path.is_dir():
            found.append(path)
            continue
        children = sorted(
            child for child in path.iterdir()
            if child.is_dir() and not child.name.startswith(".") and (child / MANIFEST).exists()
        )
        if not children:
            raise ArtifactError(
                f"{path}: not an artifact folder: no {MANIFEST} in it or in its sub-folders "
                "(create one with `rnnexport export`)"
            )
        found.extend(children)
    return found
