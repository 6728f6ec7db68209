"""Artifact folders: layout, manifest, sha256 checks, deterministic npz, atomic replacement.

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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ArtifactError, UsageError
from rnnexport.inputs import Case, check_feeds
from rnnexport.modelspec import ModelSpec, ShapeCase, model_spec_from_dict
from rnnexport.spec import CELLS, RNNSpec, spec_from_dict

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

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAX_MANIFEST_BYTES = 16 << 20  # real manifests are a few KB
_NPY_HEADER_BYTES = 1 << 16  # the largest .npy header (format 2.0 allows 4 GiB, numpy writes < 64 KiB)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _regular_file(path: Path, what: str) -> os.stat_result:
    """`path`'s stat when it is a regular file (not a link, FIFO, device or folder).

    Checked before anything is opened: reading a FIFO would block forever, and a link could
    lead outside the artifact folder.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing ({what}); re-export the artifact") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({what}): {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode)
                else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file")
        raise ArtifactError(f"{path}: {what} is {kind}; artifact files must be regular files in the artifact folder")
    return info


def _plain_name(name: object, where: str) -> str:
    """`name` when it is a plain file name (no folder part, not hidden, not the manifest)."""
    if (not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".")
            or "/" in name or "\\" in name or "\0" in name or name == MANIFEST):
        raise ArtifactError(f"{where}: {name!r} is not a plain file name of the artifact folder")
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
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
    _regular_file(path, "an .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArtifactError(f"{path}: unreadable golden data ({exc})") from None


def versions() -> dict[str, str]:
    """Versions of everything that shapes an artifact's bytes or its numbers."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
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


# --- The manifest's writer (its reader is `_read_manifest` / `open_artifact` below) -----------


def rnn_manifest(spec: RNNSpec, files: dict[str, dict[str, Any]], *, exporter: str, opset: int,
                 torchscript_method: str, warnings: dict[str, list[str]], formats: dict[str, Any],
                 tolerance) -> dict[str, Any]:
    """The manifest of an RNN spec's artifact (docs/artifacts.md); `files` maps
    each file name to its `file_entry`."""
    from rnnexport.inputs import golden_cases

    shapes, axes = spec.shapes(), spec.dynamic_axes()

    def entry(name: str) -> dict[str, Any]:
        return {"name": name, "dtype": spec.dtype(name), "shape": list(shapes[name]),
                "dynamic_axes": {str(k): v for k, v in axes[name].items()}}

    return {
        "schema_version": SCHEMA_VERSION,
        "name": spec.name,
        "spec": spec.to_dict(),
        "exporter": exporter,
        "opset": None if spec.proj_size else opset,
        **formats,
        "torchscript_method": torchscript_method,
        "files": files,
        "io": {"inputs": [entry(n) for n in spec.input_names], "outputs": [entry(n) for n in spec.output_names]},
        "golden": {"file": "golden.npz", "cases": [c.id for c in golden_cases(spec)]},
        "tolerance": {"atol": tolerance.atol, "rtol": tolerance.rtol},
        "versions": versions(),
        "export_warnings": {k: v for k, v in warnings.items() if v},
        "validation": None,
    }


def model_manifest(spec: ModelSpec, files: dict[str, dict[str, Any]], *, exporter: str, opset: int,
                   torchscript_method: str, warnings: dict[str, list[str]], recurrent_ops: list[dict[str, Any]],
                   recurrent_layers: list[dict[str, Any]], golden: dict[str, dict[str, Any]],
                   module_source: dict[str, Any], tolerance, output_axes: dict[str, dict[int, str]],
                   formats: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a model spec's artifact (``"kind": "model"``): the spec (weights by file
    name: paths differ per machine), where the module came from, the I/O with each output's
    shape (dim names where an axis follows a dim, else the documented size), dtype and named
    axes, the recurrent layers of the module and the native
    recurrent ops of the graph, each golden array's shape and dtype, and the tolerances."""
    from rnnexport.compare import Tolerance

    tolerance = tolerance or Tolerance()
    atol, rtol, per_output = spec.tolerance_for(tolerance.atol, tolerance.rtol)
    documented = spec.golden_cases()[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "model",
        "name": spec.name,
        "spec": {**spec.to_dict(), **({"weights": Path(spec.weights).name} if spec.weights else {})},
        "module_source": module_source,
        "exporter": exporter,
        "opset": opset,
        **formats,
        "torchscript_method": torchscript_method,
        "files": files,
        "io": {
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                        "dynamic_axes": {str(a): d for a, d in spec.dynamic_axes()[t.name].items()}} for t in spec.inputs],
            # An output's shape as the inputs': the axes that follow a dim by its name, others by size.
            "outputs": [{"name": n, "dtype": golden[f"{documented.id}/{n}"]["dtype"],
                         "shape": [output_axes[n].get(a, size)
                                   for a, size in enumerate(golden[f"{documented.id}/{n}"]["shape"])],
                         "dynamic_axes": {str(a): d for a, d in output_axes[n].items()}} for n in spec.output_names],
        },
        "recurrent_layers": recurrent_layers,
        "recurrent_ops": recurrent_ops,
        "golden": {"file": "golden.npz", "cases": [c.id for c in spec.golden_cases()], "arrays": golden},
        "tolerance": Tolerance(atol=atol, rtol=rtol, per_output=per_output).to_json(),
        "versions": versions(),
        "export_warnings": {k: v for k, v in warnings.items() if v},
        "validation": None,
    }


def manifest_summary(report) -> dict[str, Any]:
    """The validation block of the manifest, stable across machines.

    Exact errors depend on the CPU's kernels (the last bits of a GEMM), so the manifest keeps
    the power of ten that bounds each runtime's worst error against torch; the exact figures
    are in the validation report. Runtimes that could not run here are not listed.
    """
    runtimes = {}
    for name, entry in report.runtime_summary().items():
        if entry["status"] == "skipped":
            continue
        error = entry.get("max_abs_error_vs_torch")
        bound = None if error is None else (0.0 if error == 0 else 10.0 ** math.ceil(math.log10(error)))
        runtimes[name] = {"status": entry["status"], "cases": entry["cases"], "max_abs_error_vs_torch_below": bound}
    return {"passed": report.passed, "cases": report.cases, "runtimes": runtimes}


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder: every file in it is listed in the manifest, every file the
    manifest implies is there, and each matched its sha256."""

    path: Path
    manifest: dict[str, Any]
    spec: RNNSpec | ModelSpec
    verified: Path | None = None  # the private copy the files were verified into (`_verified_copy`)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uses_sequence_lens(self) -> bool:
        """Whether the ONNX graph feeds ``sequence_lens`` (variable lengths) to a recurrent op."""
        if isinstance(self.spec, ModelSpec):
            return any(op.get("sequence_lens") for op in self.manifest.get("recurrent_ops", []))
        return self.spec.variable_length

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
        """The stored weights, loaded with ``weights_only=True`` (no code is unpickled), or
        from ``weights.safetensors`` (model specs)."""
        import torch

        if isinstance(self.spec, ModelSpec):
            from rnnexport.usermodel import load_weights

            try:
                return load_weights(self.file("weights.safetensors"))
            except Exception as exc:
                raise ArtifactError(f"{self.path}: {exc}") from None

        try:
            with weights_only_loading():
                return torch.load(self.file("weights.pt"), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt zip/pickle
            raise ArtifactError(f"{self.path / 'weights.pt'}: cannot load weights ({type(exc).__name__}: {exc})") from None

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
            for name, shape, dtype in _golden_arrays(self.spec, self.manifest, case):
                expected[f"{case.id}/{name}"] = (shape, dtype)
        with self.errors_named():
            arrays = _read_golden(self.file(self.manifest["golden"]["file"]), expected)
        cases: dict[Case, dict[str, np.ndarray]] = {}
        for case in self.golden_cases():
            tensors = {name: arrays[f"{case.id}/{name}"] for name in (*self.spec.input_names, *self.spec.output_names)}
            try:
                check_feeds(self.spec, {n: tensors[n] for n in self.spec.input_names})
            except UsageError as exc:
                raise ArtifactError(f"{self.path}: golden case {case.id!r}: {exc}") from None
            cases[case] = tensors
        return cases


def _golden_arrays(spec: RNNSpec | ModelSpec, manifest: dict[str, Any], case) -> list[tuple[str, tuple, np.dtype]]:
    """(name, shape, dtype) of every golden tensor of `case`: from the spec for RNN specs; for
    model specs inputs from the spec, outputs as recorded at export (checked for shape here and
    compared with eager when validating)."""
    names = (*spec.input_names, *spec.output_names)
    if not isinstance(spec, ModelSpec):
        shapes = spec.shapes(case.batch, case.seq)
        return [(n, shapes[n], np.dtype(spec.dtype(n))) for n in names]
    inputs = spec.input_shapes(dict(case.sizes))
    recorded = manifest["golden"].get("arrays", {})
    found = []
    for name in names:
        entry = recorded.get(f"{case.id}/{name}")
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or not all(
                type(d) is int and 0 <= d < 2**31 for d in entry["shape"]) or entry.get("dtype") not in (
                "float32", "float16", "float64", "int64", "int32", "bool"):
            raise ArtifactError(f"{manifest.get('name')}: manifest golden.arrays lacks a valid entry for "
                                f"{case.id}/{name} ({{\"shape\": [...], \"dtype\": ...}})")
        shape = tuple(entry["shape"])
        if name in inputs and (shape != inputs[name] or entry["dtype"] != spec.dtype(name)):
            raise ArtifactError(f"{manifest.get('name')}: golden input {case.id}/{name} is {entry['dtype']}"
                                f"{list(shape)}, the spec gives {spec.dtype(name)}{list(inputs[name])}")
        found.append((name, shape, np.dtype(entry["dtype"])))
    return found


def _read_golden(path: Path, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    """The arrays of a golden ``.npz``, each checked for presence, size, shape and dtype.

    Member sizes are checked before anything is decompressed, and each member's ``.npy`` header
    before its data, so a crafted archive cannot make validation allocate more than the arrays
    the spec implies.
    """
    _regular_file(path, "golden data")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            unexpected = sorted(set(members) - {f"{key}.npy" for key in expected})
            if unexpected:
                raise ArtifactError(f"{path}: golden data holds unexpected member {unexpected[0]!r}")
            for key, (shape, dtype) in expected.items():
                info = members.get(f"{key}.npy")
                if info is None:
                    raise ArtifactError(f"{path}: golden data lacks {key!r}")
                if info.file_size > math.prod(shape) * dtype.itemsize + _NPY_HEADER_BYTES:
                    raise ArtifactError(f"{path}: golden {key!r} is {info.file_size} bytes, larger than a "
                                        f"{list(shape)} {dtype} array")
                # The header first: numpy allocates whatever shape it claims before reading any data.
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0)):
                        raise ArtifactError(f"{path}: golden {key!r} is .npy format {version}; rnnexport writes 1.0")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    found, _, found_dtype = read_header(member)
                if found != shape or found_dtype != dtype:
                    what = f"shape {list(found)}" if found != shape else f"dtype {found_dtype}"
                    raise ArtifactError(f"{path}: golden {key!r} has {what}, expected "
                                        f"{list(shape) if found != shape else dtype} (its .npy header; not read)")
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArtifactError(f"{path}: unreadable golden data ({type(exc).__name__}: {exc})") from None
    return arrays


@contextlib.contextmanager
def weights_only_loading() -> Iterator[None]:
    """Within the block every ``torch.load`` is restricted to weights (tensors and plain
    containers), even where a caller asks for ``weights_only=False``.

    ``torch.export.load`` loads an archive's example inputs with ``torch.load`` and, when that
    fails, retries with ``weights_only=False`` (``torch/_export/serde/serialize.py``,
    ``deserialize_torch_artifact``): a crafted ``.pt2`` runs its pickle payload there
    (upstream: https://github.com/pytorch/pytorch/issues/153410, no ``weights_only`` for
    ``torch.export.load`` in torch 2.13).
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (read by ``torch.load`` on every call) closes that path.
    """
    saved = {key: os.environ.get(key) for key in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# Members of a torch.export archive (torch/export/pt2_archive/constants.py) that hold data only;
# weights and constants must be raw tensor bytes ("use_pickle": false).
_PT2_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|data/weights/weight_\d+|data/weights/[\w.-]+_weights_config\.json"
    r"|data/constants/tensor_\d+|data/constants/[\w.-]+_constants_config\.json"
    r"|models/[\w.-]+\.json|data/sample_inputs/[\w.-]+\.pt|extra/module_info\.json)"
)


def check_program_archive(path: Path) -> None:
    """Refuse a ``.pt2`` whose loading would unpickle anything but tensors.

    ``torch.export.load`` unpickles pickled weights and constants (``use_pickle``), custom and
    opaque objects, legacy weight files, and retries example inputs with ``weights_only=False``
    when the safe load fails. rnnexport writes none of these; an archive holding any of them
    (or any member outside the known data layout) is refused before torch reads it.

    A file already checked is not read again while its inode, size, mtime and ctime are unchanged
    (opening an artifact checks it, and so does the runner that loads it).

    Raises:
        ArtifactError: naming the member that would need unrestricted unpickling.
    """
    try:
        info = os.stat(path)
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    except OSError:
        identity = None
    if identity is not None and _CHECKED_ARCHIVES.get(str(Path(path).resolve())) == identity:
        return
    _check_program_archive(path)
    if identity is not None:
        _CHECKED_ARCHIVES[str(Path(path).resolve())] = identity


_CHECKED_ARCHIVES: dict[str, tuple[int, ...]] = {}


def _check_program_archive(path: Path) -> None:
    def refuse(why: str) -> ArtifactError:
        return ArtifactError(f"{path}: refused: {why}; loading it would need unrestricted unpickling, "
                             "which rnnexport never does (re-export the artifact with rnnexport)")

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or any("/" not in name for name in names):
                raise refuse(f"not a single-folder torch.export archive (top level: {sorted(roots)[:3]})")
            root = roots.pop()
            for name in names:
                member = name[len(root) + 1:]
                if not _PT2_MEMBERS.fullmatch(member):
                    raise refuse(f"member {member!r} is not part of the data layout of a torch.export archive")
                if member.endswith(("_weights_config.json", "_constants_config.json")):
                    config = json.loads(archive.read(name)).get("config", {})
                    for key, entry in config.items():
                        if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
                            raise refuse(f"{member} stores {key!r} as a pickle or a custom object")
                if member.startswith("data/sample_inputs/"):
                    import torch  # only here: opening artifacts stays free of torch

                    try:
                        with weights_only_loading():
                            torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                    except Exception as exc:
                        raise refuse(f"{member} is not plain tensors ({type(exc).__name__}: {str(exc)[:120]})") from None
    except ArtifactError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, AttributeError, KeyError) as exc:
        raise ArtifactError(f"{path}: not a readable torch.export archive ({type(exc).__name__}: {exc})") from None


def implied_files(spec: RNNSpec | ModelSpec, manifest: dict[str, Any]) -> list[str]:
    """The files the artifact of `spec` described by `manifest` holds: the model files of its
    formats (`rnnexport.formats.format_files`), the weights and the golden data."""
    from rnnexport.formats import format_files

    weights = "weights.safetensors" if isinstance(spec, ModelSpec) else "weights.pt"
    projection = bool(getattr(spec, "proj_size", 0))
    return [*format_files(manifest, projection=projection), weights, manifest["golden"]["file"]]


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise ArtifactError(
            f"{path}: not an artifact folder: no {MANIFEST} "
            "(expected model.onnx, model.pt, weights.pt, golden.npz and manifest.json; "
            "create one with `rnnexport export`)"
        )
    info = _regular_file(manifest_path, "the manifest")
    if info.st_size > _MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{manifest_path}: {info.st_size} bytes, not an rnnexport manifest (they are a few KB)")
    try:
        with open(os.open(manifest_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: not an rnnexport manifest (not a JSON object)")
    schema = manifest.get("schema_version")
    if type(schema) is not int or not 1 <= schema <= SCHEMA_VERSION:
        raise ArtifactError(
            f"{manifest_path}: manifest schema version {schema!r} is not supported by this "
            f"rnnexport (it reads versions 1..{SCHEMA_VERSION}); upgrade rnnexport"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{manifest_path}: 'files' must be a non-empty table of file name -> sha256 and bytes")
    for name, entry in files.items():
        _plain_name(name, f"{manifest_path} 'files'")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256_RE.fullmatch(entry["sha256"]) or type(entry.get("bytes")) is not int):
            raise ArtifactError(f"{manifest_path}: files entry {name!r} must be {{\"sha256\": 64 hex digits, "
                                f"\"bytes\": an integer}}, got {entry!r:.80}")
    _check_formats(manifest, manifest_path)
    found = manifest.get("versions", {})
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ArtifactError(f"{manifest_path}: 'versions' must be a table of package -> version string")
    golden = manifest.get("golden")
    if not isinstance(golden, dict) or not isinstance(golden.get("cases"), list) or not golden["cases"]:
        raise ArtifactError(f"{manifest_path}: 'golden' must be a table with 'file' and a non-empty list 'cases'")
    _plain_name(golden.get("file"), f"{manifest_path} 'golden.file'")
    if golden["file"] not in files:
        raise ArtifactError(f"{manifest_path}: golden data {golden['file']!r} is not listed in 'files'")
    ids = []
    for case_id in golden["cases"]:
        try:
            if not isinstance(case_id, str):
                raise ValueError("not a string")
            ids.append((ShapeCase.parse if manifest.get("kind") == "model" else Case.parse)(case_id).id)
        except ValueError as exc:
            raise ArtifactError(f"{manifest_path}: golden case {case_id!r:.40} is not a case id ({exc})") from None
    if len(set(ids)) != len(ids):
        raise ArtifactError(f"{manifest_path}: golden cases repeat a case: {golden['cases']!r:.120}")
    return manifest


def _check_formats(manifest: dict[str, Any], manifest_path: Path) -> None:
    """``formats`` (when present) names known formats; ``formats_missing`` maps them to reasons."""
    from rnnexport.formats import FORMATS, parse_formats

    if "formats" in manifest:
        parse_formats(manifest["formats"], f"{manifest_path} 'formats'", ArtifactError)
    missing = manifest.get("formats_missing", {})
    if not isinstance(missing, dict) or not all(k in FORMATS and isinstance(v, str) for k, v in missing.items()):
        raise ArtifactError(f"{manifest_path}: 'formats_missing' must be a table of format ({', '.join(FORMATS)}) -> "
                            f"reason, got {missing!r:.80}")


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
    return {name: _regular_file(path / name, f"listed in {MANIFEST}").st_size for name in sorted(listed)}


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
    from rnnexport.limits import check_memory, weight_bytes
    from rnnexport.modelspec import TensorSpec

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact folder (no such directory)")
    manifest = _read_manifest(path)
    manifest_path = path / MANIFEST
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
            spec = model_spec_from_dict(spec_data, source=f"{manifest_path} spec", recorded=True)
        else:
            spec = spec_from_dict(spec_data, source=f"{manifest_path} spec")
        cases = [spec.parse_case(case_id) for case_id in manifest["golden"]["cases"]]
    except Exception as exc:
        raise ArtifactError(str(exc)) from None
    sizes = _check_listing(path, manifest, spec)
    if kind == "model":
        check_memory(f"{path}: the weights", sizes["weights.safetensors"], max_memory)
    else:
        check_memory(f"{path}: the weights", weight_bytes(spec), max_memory)
    # What the manifest declares, before anything is read: the golden data is read whole.
    golden = {case: _golden_arrays(spec, manifest, case) for case in cases}
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

    copy = _verified_copy(path, manifest["files"])
    artifact = Artifact(path=path, manifest=manifest, spec=spec, verified=copy)
    weakref.finalize(artifact, shutil.rmtree, str(copy), True)  # when the artifact is dropped, or at exit
    if "model.pt2" in manifest["files"]:
        with artifact.errors_named():
            check_program_archive(artifact.file("model.pt2"))
    return artifact


def _verified_copy(path: Path, files: dict[str, dict[str, Any]]) -> Path:
    """A private copy of the listed files, each hashed as it is copied (one read) and compared
    with the manifest. Everything is loaded from this copy, never from `path` again: a file
    replaced in the artifact folder after the check cannot be what a runtime loads. The copy
    is removed with its `Artifact` (or when this process exits).

    Raises:
        ArtifactError: a file differs from its sha256 (or cannot be read).
        UsageError: the copy cannot be written (no space left in the temporary folder).
    """
    try:
        copy = Path(tempfile.mkdtemp(prefix="rnnexport-verified-"))
    except OSError as exc:
        raise UsageError(f"cannot create a private copy of {path} in {tempfile.gettempdir()}: "
                         f"{exc.strerror or exc} (set TMPDIR)") from None
    try:
        _copy_verified(path, files, copy)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def _copy_verified(path: Path, files: dict[str, dict[str, Any]], copy: Path) -> None:
    for name, entry in sorted(files.items()):
        file = path / name
        digest = hashlib.sha256()
        try:
            source = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise ArtifactError(f"{file}: cannot read: {exc.strerror or exc}") from None
        with open(source, "rb") as reader:
            try:
                with open(copy / name, "xb") as writer:
                    for block in iter(lambda: reader.read(1 << 20), b""):
                        digest.update(block)
                        writer.write(block)
            except OSError as exc:
                raise UsageError(f"cannot write a private copy of {file} into {copy}: {exc.strerror or exc} "
                                 "(set TMPDIR to a folder with space)") from None
        if digest.hexdigest() != entry["sha256"]:
            raise ArtifactError(
                f"{file}: sha256 {digest.hexdigest()[:16]}... differs from the manifest's {entry['sha256'][:16]}...: "
                "the file was modified, truncated or replaced; re-export the artifact"
            )


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


def umask() -> int:
    """This process's file mode creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


DEFAULT_LOCK_TIMEOUT = 600.0  # seconds an export waits for another export of the same name


def _backup_name(final: Path) -> Path:
    return final.parent / f".{final.name}.previous"


def _staging_re(final: Path) -> re.Pattern[str]:
    # Exactly the names tempfile.mkdtemp(prefix=".<name>.staging-") makes: 8 characters of its
    # alphabet. `.a.staging-x.previous` belongs to the artifact named `a.staging-x`, not to `a`.
    return re.compile(rf"\.{re.escape(final.name)}\.staging-[a-z0-9_]{{8}}")


def _remove(path: Path) -> None:
    """Remove a folder, or a link or file where a folder was expected."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _recover(final: Path) -> None:
    """Undo a replacement interrupted between its two renames; drop stale staging folders.

    Called with the export lock of `final` held, so no staging folder of this name is live.
    Only what rnnexport made is moved or removed: a backup that is an artifact, a staging
    folder holding nothing but artifact files (`_owned`).
    """
    backup = _backup_name(final)
    if (backup.exists() or backup.is_symlink()) and _owned(backup):
        if final.exists():
            _remove(backup)
        else:
            os.rename(backup, final)
    pattern = _staging_re(final)
    for stale in final.parent.iterdir():
        if pattern.fullmatch(stale.name) and _owned(stale, staging=True):
            shutil.rmtree(stale, ignore_errors=True)


# Every name an export writes into its staging folder.
_ARTIFACT_FILES = frozenset({MANIFEST, "model.onnx", "model.pt", "model.pt2", "weights.pt", "weights.safetensors",
                             "golden.npz"})


def is_artifact_folder(path: Path) -> bool:
    """Whether `path` is a folder rnnexport made and nothing else: it holds a ``manifest.json``
    (a regular file) that reads as an rnnexport manifest (a JSON object with ``schema_version``
    and ``files``), and no entry but the manifest and regular files it lists (a file of yours
    put in an artifact folder keeps it from being replaced)."""
    manifest = path / MANIFEST
    try:
        info = os.lstat(manifest)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MANIFEST_BYTES or not path.is_dir():
            return False
        with open(os.open(manifest, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), encoding="utf-8") as f:
            data = json.load(f)
        entries = list(os.scandir(path))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not (isinstance(data, dict) and type(data.get("schema_version")) is int and isinstance(data.get("files"), dict)):
        return False
    return all(e.name == MANIFEST or (e.name in data["files"] and e.is_file(follow_symlinks=False)) for e in entries)


def _owned(path: Path, *, staging: bool = False) -> bool:
    """Whether rnnexport may remove or replace `path`: an empty folder, an artifact folder, or
    (`staging`) a folder of regular files that an export writes (its staging folder, left by a
    killed export before it wrote the manifest). Never a link, a file, or anything else."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    if not entries or is_artifact_folder(path):
        return True
    return staging and all(e.name in _ARTIFACT_FILES and e.is_file(follow_symlinks=False) for e in entries)


def keep_rejected(stage: Path, target: Path) -> Path | None:
    """Copy a staged artifact that failed validation to ``.<name>.rejected`` beside `target`,
    replacing an earlier rejected copy; None (nothing copied) where that name holds anything
    rnnexport did not make, or the copy cannot be written."""
    rejected = target.parent / f".{target.name}.rejected"
    if (rejected.exists() or rejected.is_symlink()) and not _owned(rejected):
        return None
    shutil.rmtree(rejected, ignore_errors=True)
    try:
        shutil.copytree(stage, rejected)
    except OSError:
        return None
    return rejected


def check_replaceable(final: Path) -> None:
    """Refuse to export into `final` unless it is absent, an empty folder or an rnnexport
    artifact: anything else there is the user's (a source package of the same name, notes)
    and is never touched.

    Raises:
        UsageError: naming the folder and what to do.
    """
    if final.exists() and final.is_dir() and not _owned(final):
        raise UsageError(f"{final} exists and is not an rnnexport artifact (a readable {MANIFEST} and only the files "
                         "it lists); rnnexport replaces only its own artifact folders: move it (or the files you put "
                         "in it) away, or choose another --out")
    backup = _backup_name(final)
    if final.exists() and (backup.exists() or backup.is_symlink()) and not _owned(backup):
        raise UsageError(f"{backup} is in the way: replacing {final.name} moves the old artifact there first, and "
                         "it is not rnnexport's: move it away")


def resolve_output(final: Path) -> Path:
    """The folder an export of `final` really replaces.

    A link ``DIR/<name> -> elsewhere/<folder>`` is followed: the target folder is replaced
    atomically (staged beside it) and the link keeps pointing at it. A dangling link, a link or
    path to something that is not a folder, or a folder that is not an rnnexport artifact
    (`check_replaceable`), is refused.

    Raises:
        UsageError: as above.
    """
    if final.is_symlink():
        target = Path(os.path.realpath(final))
        if not target.exists():
            raise UsageError(f"{final} is a symbolic link to {target}, which does not exist; "
                             "create that folder or remove the link")
        if not target.is_dir():
            raise UsageError(f"{final} is a symbolic link to {target}, which is not a folder")
        check_replaceable(target)
        return target
    if final.exists() and not final.is_dir():
        raise UsageError(f"{final} exists and is not a folder; remove it or choose another --out")
    check_replaceable(final)
    return final


@contextlib.contextmanager
def export_lock(final: Path, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``DIR/.<name>.lock`` (a `filelock.FileLock`): one export of a name in a folder at a
    time. A second export waits up to `timeout` seconds.

    Raises:
        UsageError: the lock is still held after `timeout`, naming the process that holds it.
    """
    import filelock

    lock_path = final.parent / f".{final.name}.lock"
    lock = filelock.FileLock(str(lock_path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = _read_holder(lock_path)
        raise UsageError(f"another export of {final.name!r} into {str(final.parent)!r} is running ({holder}); "
                         f"gave up after waiting {timeout:g} s (--lock-timeout)") from None
    except OSError as exc:
        raise UsageError(f"cannot lock {str(lock_path)!r}: {exc.strerror or exc}") from None
    try:
        with contextlib.suppress(OSError):
            with open(lock_path, "w", encoding="utf-8") as f:
                f.write(f"pid {os.getpid()}\n")
        yield
    finally:
        lock.release()


def _read_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace").strip()[:40]
    except OSError:
        text = ""
    return f"held by {text}" if text.startswith("pid ") else "held by another process"


@contextlib.contextmanager
def staged_folder(final: Path, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final`.

    If the block raises (or the process dies), `final` is left exactly as it was. The
    replacement is two renames (old folder aside, new folder in); a death between them is
    undone by the next export of the same name (`_recover`). Exports of one name in one folder
    are serialized by `export_lock`; a link at `final` is followed (`resolve_output`).

    Raises:
        UsageError: the output folder cannot be created or written, `final` is not a folder,
            or another export of the name holds the lock past `lock_timeout`.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"output folder {str(final.parent)!r} cannot be written: {exc.strerror or exc}") from None
    final = resolve_output(final)
    with export_lock(final, lock_timeout):
        try:
            _recover(final)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
            os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it 0700; artifacts are shared
        except OSError as exc:
            raise UsageError(f"output folder {str(final.parent)!r} cannot be written: {exc.strerror or exc}") from None
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        backup = _backup_name(final)
        try:
            check_replaceable(final)  # again: the export took a while, and the lock binds only rnnexport
        except UsageError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            if final.exists():
                os.rename(final, backup)
            os.rename(staging, final)
        except OSError as exc:
            if backup.exists() and not final.exists():
                os.rename(backup, final)
            shutil.rmtree(staging, ignore_errors=True)
            raise UsageError(f"cannot replace {str(final)!r}: {exc.strerror or exc}") from None
        if _owned(backup):
            shutil.rmtree(backup, ignore_errors=True)
