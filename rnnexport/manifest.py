"""The manifest (``manifest.json``): its one writer (`artifact_manifest`, with each kind's fields
from `rnn_manifest` and `model_manifest`), the validation block `manifest_summary`, `versions`,
stable JSON `write_json`; its reader `read_manifest`, checking every field (by the shipped
``manifest`` schema, then what a schema cannot state) before anything else is read;
`SCHEMA_VERSION`, and the files a manifest implies (`implied_files`). docs/artifacts.md
documents the fields.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from rnnexport.errors import ArtifactError
from rnnexport.modelspec import ModelSpec
from rnnexport.spec import RNNSpec
from rnnexport.verify import regular_file

__all__ = [
    "MANIFEST",
    "artifact_manifest",
    "golden_case_ids",
    "MAX_MANIFEST_BYTES",
    "SCHEMA_VERSION",
    "schema_version_of",
    "implied_files",
    "manifest_summary",
    "model_manifest",
    "read_manifest",
    "rnn_manifest",
    "versions",
    "write_json",
]

MANIFEST = "manifest.json"
# 2: a model file may be absent with its reason (`formats`, `formats_missing`, replacing
# `onnx_refused`), model specs may hold derived dims, `sorted`/`reaches_max` inputs, a dim's `min`
# and `inputs_fn` (`inputs_source`). A schema-1 reader would take an absent model.onnx for a
# tampered folder, hence the new number; schema 1 is still read.
# 3: deployment variants (`variants`, `criteria`) and a model spec's `variants`, `criteria` and
# `evaluation` keys. Written only by a manifest that uses them (`schema_version_of`): every other
# one stays 2, which older rnnexport reads; a schema-2 reader refuses a 3 as newer, with "upgrade".
SCHEMA_VERSION = 3
_SCHEMA_2_FIELDS = ("formats", "formats_missing", "inputs_source")
_SCHEMA_3_FIELDS = ("variants", "criteria")
_SCHEMA_3_SPEC_KEYS = ("variants", "criteria", "evaluation")
MAX_MANIFEST_BYTES = 16 << 20  # real manifests are a few KB


def write_json(path: Path, data: Any) -> None:
    """Stable JSON: sorted keys, 2-space indent, trailing newline."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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


# --- The manifest's writers (its reader is `read_manifest` below) ---------------------------


def artifact_manifest(spec, files: dict[str, dict[str, Any]], /, *, exporter: str, opset: int | None,
                      torchscript_method: str | None, warnings: dict[str, list[str]], formats: dict[str, Any],
                      io: dict[str, Any], golden: dict[str, Any], tolerance: dict[str, Any],
                      **fields: Any) -> dict[str, Any]:
    """The manifest of `spec`'s artifact (docs/artifacts.md), one writer for every kind of spec:
    `files` maps each file name to its `file_entry`; `io`, `golden` and `tolerance` are the
    kind's own (`rnn_manifest`, `model_manifest`), and so are the further `fields`."""
    return {
        "schema_version": 2,  # or 3: `schema_version_of`, set where the manifest is written
        "name": spec.name,
        "exporter": exporter,
        "opset": opset,
        **formats,
        "torchscript_method": torchscript_method,
        "files": files,
        "io": io,
        "golden": golden,
        "tolerance": tolerance,
        "versions": versions(),
        "export_warnings": {k: v for k, v in warnings.items() if v},
        "validation": None,
        **fields,
    }


def rnn_manifest(spec: RNNSpec, files: dict[str, dict[str, Any]], *, tolerance, **common: Any) -> dict[str, Any]:
    """`artifact_manifest` of an RNN configuration: its fields as the spec, each input and output
    with its documented shape and dynamic axes, the golden case ids, one tolerance."""
    from rnnexport.inputs import golden_cases

    shapes, axes = spec.shapes(), spec.dynamic_axes()

    def entry(name: str) -> dict[str, Any]:
        return {"name": name, "dtype": spec.dtype(name), "shape": list(shapes[name]),
                "dynamic_axes": {str(k): v for k, v in axes[name].items()}}

    return artifact_manifest(
        spec, files, **{**common, "opset": None if spec.proj_size else common["opset"]},
        io={"inputs": [entry(n) for n in spec.input_names], "outputs": [entry(n) for n in spec.output_names]},
        golden={"file": "golden.npz", "cases": [c.id for c in golden_cases(spec)]},
        tolerance={"atol": tolerance.atol, "rtol": tolerance.rtol}, spec=spec.to_dict())


def model_manifest(spec: ModelSpec, files: dict[str, dict[str, Any]], *, recurrent_ops: list[dict[str, Any]],
                   recurrent_layers: list[dict[str, Any]], golden: dict[str, dict[str, Any]],
                   module_source: dict[str, Any], tolerance, output_axes: dict[str, dict[int, str]],
                   **common: Any) -> dict[str, Any]:
    """`artifact_manifest` of a model spec (``"kind": "model"``): the spec (weights by file
    name: paths differ per machine), where the module came from, the I/O with each output's
    shape (dim names where an axis follows a dim, else the documented size), dtype and named
    axes, the recurrent layers of the module and the native recurrent ops of the graph, each
    golden array's shape and dtype, and the tolerances."""
    from rnnexport.compare import Tolerance

    tolerance = tolerance or Tolerance()
    atol, rtol, per_output = spec.tolerance_for(tolerance.atol, tolerance.rtol)
    documented = spec.golden_cases()[0]
    io = {
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                    "dynamic_axes": {str(a): d for a, d in spec.dynamic_axes()[t.name].items()}} for t in spec.inputs],
        # An output's shape as the inputs': the axes that follow a dim by its name, others by size.
        "outputs": [{"name": n, "dtype": golden[f"{documented.id}/{n}"]["dtype"],
                     "shape": [output_axes[n].get(a, size) for a, size in enumerate(golden[f"{documented.id}/{n}"]["shape"])],
                     "dynamic_axes": {str(a): d for a, d in output_axes[n].items()}} for n in spec.output_names],
    }
    return artifact_manifest(
        spec, files, **common, io=io,
        golden={"file": "golden.npz", "cases": list(dict.fromkeys(key.rsplit("/", 1)[0] for key in golden)),
                "arrays": golden},
        tolerance=Tolerance(atol=atol, rtol=rtol, per_output=per_output).to_json(),
        kind="model", module_source=module_source, recurrent_layers=recurrent_layers, recurrent_ops=recurrent_ops,
        spec={**spec.to_dict(), **({"weights": Path(spec.weights).name} if spec.weights else {}),
              **({"evaluation": {**spec.evaluation, "file": Path(spec.evaluation["file"]).name}}
                 if spec.evaluation else {})})


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
        runtimes[name] = {"status": entry["status"], "cases": entry["cases"], "max_abs_error_vs_torch_below": bound,
                          **({"criteria": {k: float(f"{v:.4g}") for k, v in entry["criteria"].items()}}
                             if "criteria" in entry else {})}
    return {"passed": report.passed, "cases": report.cases, "runtimes": runtimes}

def implied_files(spec: RNNSpec | ModelSpec, manifest: dict[str, Any]) -> list[str]:
    """The files the artifact of `spec` described by `manifest` holds: the model files of its
    formats (`rnnexport.formats.format_files`), the weights and the golden data."""
    from rnnexport.formats import format_files
    from rnnexport.variants import variant_files

    # A manifest written before formats_missing has no ONNX file where ONNX cannot express the model.
    projection = spec.onnx_impossible() is not None
    return [*format_files(manifest, projection=projection), *variant_files(manifest), spec.weights_file,
            manifest["golden"]["file"]]


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the artifact folder `path`, its fields checked: the schema version, then
    the structure against the shipped schema (`rnnexport.schema`, kind ``manifest``), then what
    a schema cannot state (plain file names, the golden and variant files listed in ``files``, no
    field newer than the schema version); `rnnexport.artifacts.open_artifact` reads it first.

    Raises:
        ArtifactError: no manifest, or one that is unreadable, malformed or of a newer schema.
    """
    manifest_path = path / MANIFEST
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise ArtifactError(
            f"{path}: not an artifact folder: no {MANIFEST} "
            "(expected model.onnx, model.pt, weights.pt, golden.npz and manifest.json; "
            "create one with `rnnexport export`)"
        )
    info = regular_file(manifest_path, "the manifest")
    if info.st_size > MAX_MANIFEST_BYTES:
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
    from rnnexport.schema import check

    check("manifest", manifest, str(manifest_path), ArtifactError)  # the structure, declared once
    _check_formats(manifest, manifest_path)
    golden = manifest["golden"]
    if golden["file"] not in manifest["files"]:
        raise ArtifactError(f"{manifest_path}: golden data {golden['file']!r} is not listed in 'files'")
    return manifest  # the case ids are parsed by the spec (`golden_case_ids`)


def golden_case_ids(spec, manifest: dict[str, Any], manifest_path: Path) -> list:
    """The manifest's golden cases, parsed by `spec`, none repeated.

    Raises:
        ArtifactError: an id that is not one of the spec's cases, or a case given twice.
    """
    cases = []
    for case_id in manifest["golden"]["cases"]:
        try:
            cases.append(spec.parse_case(case_id))
        except ValueError as exc:
            raise ArtifactError(f"{manifest_path}: golden case {case_id!r:.40} is not a case id ({exc})") from None
    if len(set(cases)) != len(cases):
        raise ArtifactError(f"{manifest_path}: golden cases repeat a case: {manifest['golden']['cases']!r:.120}")
    return cases


def schema_version_of(manifest: dict[str, Any]) -> int:
    """The lowest schema that holds `manifest`'s fields (2, or 3 with variants or their spec keys)."""
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
    return 3 if any(k in manifest for k in _SCHEMA_3_FIELDS) or any(k in spec for k in _SCHEMA_3_SPEC_KEYS) else 2


def _check_formats(manifest: dict[str, Any], manifest_path: Path) -> None:
    """``formats`` (when present) names known formats; ``formats_missing`` maps them to reasons;
    no field is newer than the manifest's schema."""
    from rnnexport.formats import parse_formats

    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
    for version, fields, spec_keys in ((2, _SCHEMA_2_FIELDS, ()), (3, _SCHEMA_3_FIELDS, _SCHEMA_3_SPEC_KEYS)):
        newer = [k for k in fields if k in manifest] + [f"spec.{k}" for k in spec_keys if k in spec]
        if newer and manifest["schema_version"] < version:
            # Never written by an older export: it would let a manifest excuse a missing file, or
            # judge a variant by criteria no reader of its schema knows.
            raise ArtifactError(f"{manifest_path}: {newer[0]!r} is a schema-{version} field, but the manifest says "
                                f"schema {manifest['schema_version']}")
    if "formats" in manifest:
        parse_formats(manifest["formats"], f"{manifest_path} 'formats'", ArtifactError)
    from rnnexport.variants import check_variants_field

    check_variants_field(manifest, str(manifest_path), ArtifactError)
