"""Artifact folders: layout, manifest, sha256 checks, deterministic npz, atomic replacement.

Layout of ``DIR/<name>/``::

    model.onnx     ONNX (inputs input, h_0; outputs output, h_n; dynamic batch and seq)
    model.pt       TorchScript, called like the module: m(input, h_0) -> (output, h_n)
    model.pt2      torch.export program (needs ``import rnnexport.ops`` before loading)
    weights.pt     the module's state dict (load with ``torch.load(..., weights_only=True)``):
                   rebuilds the eager reference without re-running any RNG
    golden.npz     golden inputs and eager outputs, keys ``<case id>/<tensor name>``
    manifest.json  spec, sha256 of every file above, I/O contract, versions, last validation

Every file listed in the manifest is checked against its sha256 before anything is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ArtifactError, UsageError
from rnnexport.inputs import Case, check_feeds
from rnnexport.spec import CELLS, RNNSpec, spec_from_dict

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "Artifact",
    "discover_artifacts",
    "file_entry",
    "open_artifact",
    "read_npz",
    "staged_folder",
    "versions",
    "write_json",
    "write_npz",
]

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: sha256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_json(path: Path, data: Any) -> None:
    """Stable JSON: sorted keys, 2-space indent, trailing newline."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` readable by ``np.load``, byte-identical for identical arrays.

    ``np.savez`` stamps the current time into each zip member; here every member gets the zip
    epoch and the members are written in sorted order.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles). Raises `ArtifactError` if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{path}: unreadable golden data ({exc})") from None


def versions() -> dict[str, str]:
    """Versions of everything that shapes an artifact's bytes or its numbers."""
    from importlib import metadata

    import rnnexport

    found = {"python": ".".join(map(str, sys.version_info[:3])), "rnnexport": rnnexport.__version__}
    for package, dist_names in {
        "torch": ["torch"],
        "onnx": ["onnx"],
        "onnxruntime": ["onnxruntime-gpu", "onnxruntime"],
        "onnxscript": ["onnxscript"],
        "numpy": ["numpy"],
    }.items():
        for dist in dist_names:
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[package] = metadata.version(dist)
                break
    return found


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder: every file in the manifest matched its sha256."""

    path: Path
    manifest: dict[str, Any]
    spec: RNNSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def file(self, name: str) -> Path | None:
        """Path of a file listed in the manifest, or None if this artifact has none."""
        return self.path / name if name in self.manifest["files"] else None

    def state_dict(self) -> dict[str, Any]:
        """The stored weights, loaded with ``weights_only=True`` (no code is unpickled)."""
        import torch

        path = self.path / "weights.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt zip/pickle
            raise ArtifactError(f"{path}: cannot load weights ({type(exc).__name__}: {exc})") from None

    def golden(self) -> dict[Case, dict[str, np.ndarray]]:
        """Golden inputs and outputs per case, checked against the manifest's I/O shapes.

        Raises:
            ArtifactError: a case or tensor is missing, or has a shape the spec does not give.
        """
        golden = self.manifest.get("golden")
        if not golden or "file" not in golden or "cases" not in golden:
            raise ArtifactError(f"{self.path}: manifest has no golden data entry")
        arrays = read_npz(self.path / golden["file"])
        names = (*self.spec.input_names, *self.spec.output_names)
        cases: dict[Case, dict[str, np.ndarray]] = {}
        for case_id in golden["cases"]:
            case = Case.parse(case_id)
            expected = self.spec.shapes(case.batch, case.seq)
            tensors = {}
            for name in names:
                key = f"{case_id}/{name}"
                if key not in arrays:
                    raise ArtifactError(f"{self.path}: golden data lacks {key!r}")
                if arrays[key].shape != expected[name]:
                    raise ArtifactError(
                        f"{self.path}: golden {key!r} has shape {list(arrays[key].shape)}, "
                        f"expected {list(expected[name])}"
                    )
                tensors[name] = arrays[key]
            try:
                check_feeds(self.spec, {n: tensors[n] for n in self.spec.input_names})
            except UsageError as exc:
                raise ArtifactError(f"{self.path}: golden case {case_id!r}: {exc}") from None
            cases[case] = tensors
        return cases


def open_artifact(path: str | Path) -> Artifact:
    """Read and verify an artifact folder.

    Raises:
        ArtifactError: no folder or manifest, unreadable or newer-schema manifest, another cell
            type, a listed file missing, or a file whose sha256 differs from the manifest.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact folder (no such directory)")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{path}: not an artifact folder: no {MANIFEST} "
            "(expected model.onnx, model.pt, weights.pt, golden.npz and manifest.json; "
            "create one with `rnnexport export`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{manifest_path}: not an rnnexport manifest (no 'files' table)")
    schema = manifest.get("schema_version")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION or schema < 1:
        raise ArtifactError(
            f"{manifest_path}: manifest schema version {schema!r} is not supported by this "
            f"rnnexport (it reads versions 1..{SCHEMA_VERSION}); upgrade rnnexport"
        )
    spec_data = manifest.get("spec")
    if isinstance(spec_data, dict) and spec_data.get("cell") not in CELLS:
        raise ArtifactError(
            f"{manifest_path}: artifact of cell type {spec_data.get('cell')!r}; this rnnexport "
            f"validates {', '.join(CELLS)}"
        )
    try:
        spec = spec_from_dict(spec_data, source=f"{manifest_path} spec")
    except Exception as exc:
        raise ArtifactError(str(exc)) from None
    for name, entry in sorted(manifest["files"].items()):
        file = path / name
        if Path(name).name != name:
            raise ArtifactError(f"{manifest_path}: file entry {name!r} is not a plain file name")
        if not file.is_file():
            raise ArtifactError(f"{file}: missing (listed in {MANIFEST}); re-export the artifact")
        actual = sha256_file(file)
        if actual != entry.get("sha256"):
            raise ArtifactError(
                f"{file}: sha256 {actual[:16]}... differs from the manifest's "
                f"{str(entry.get('sha256'))[:16]}...: the file was modified, truncated or replaced; "
                "re-export the artifact"
            )
    return Artifact(path=path, manifest=manifest, spec=spec)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _backup_name(final: Path) -> Path:
    return final.parent / f".{final.name}.previous"


def _recover(final: Path) -> None:
    """Undo a replacement interrupted between its two renames; drop stale staging folders."""
    backup = _backup_name(final)
    if backup.exists():
        if final.exists():
            shutil.rmtree(backup)
        else:
            os.rename(backup, final)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final`.

    If the block raises (or the process dies), `final` is left exactly as it was. The
    replacement is two renames (old folder aside, new folder in); a death between them is
    undone by the next export of the same name (`_recover`).

    Raises:
        UsageError: the output folder cannot be created or written.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _recover(final)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700; artifacts are shared
    except OSError as exc:
        raise UsageError(f"output folder {str(final.parent)!r} cannot be written: {exc.strerror or exc}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = _backup_name(final)
    try:
        if final.exists():
            os.rename(final, backup)
        os.rename(staging, final)
    except OSError as exc:
        if backup.exists() and not final.exists():
            os.rename(backup, final)
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(f"cannot replace {str(final)!r}: {exc.strerror or exc}") from None
    shutil.rmtree(backup, ignore_errors=True)
