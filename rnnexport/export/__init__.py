"""Export one spec to an artifact folder: TorchScript, ONNX (legacy or dynamo), torch.export.

`export_spec` writes everything into a staging folder, validates it there, and only then
replaces ``DIR/<name>/``: an interrupted or failing export leaves the previous folder intact.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport.artifacts import MANIFEST, SCHEMA_VERSION, file_entry, staged_folder, versions, write_json, write_npz
from rnnexport.compare import Tolerance
from rnnexport.errors import UsageError, ValidationFailed
from rnnexport.inputs import golden_cases, make_inputs
from rnnexport.spec import RNNSpec

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "ExportResult", "default_exporter", "export_spec"]

EXPORTERS = ("legacy", "dynamo")
DEFAULT_OPSET = 18
_MIN_OPSET, _MAX_OPSET = 14, 20  # RNN-14 (layout attr) .. the legacy exporter's newest


@dataclass
class ExportResult:
    """Where an artifact was written, how, and its validation report (None if not validated)."""

    path: Path
    exporter: str
    notes: list[str]
    report: Any = None


def default_exporter() -> tuple[str, str | None]:
    """``legacy`` while torch still has it, else ``dynamo``, with a note saying so."""
    from rnnexport.export.onnx_legacy import legacy_exporter_available

    if legacy_exporter_available():
        return "legacy", None
    return "dynamo", (
        "the TorchScript-based ONNX exporter is not in this torch; using --exporter dynamo"
    )


def _io_contract(spec: RNNSpec) -> dict[str, list[dict[str, Any]]]:
    shapes, axes = spec.shapes(), spec.dynamic_axes()

    def entry(name: str) -> dict[str, Any]:
        return {"name": name, "dtype": spec.dtype(name), "shape": list(shapes[name]),
                "dynamic_axes": {str(k): v for k, v in axes[name].items()}}

    return {"inputs": [entry(n) for n in spec.input_names], "outputs": [entry(n) for n in spec.output_names]}


def export_spec(
    spec: RNNSpec,
    out_dir: str | Path = "models",
    *,
    exporter: str | None = None,
    opset: int = DEFAULT_OPSET,
    torchscript_method: str = "script",
    validate: bool = True,
    runtimes: list[str] | None = None,
    tolerance: Tolerance | None = None,
) -> ExportResult:
    """Export `spec` to ``out_dir/<spec.name>/`` and (by default) validate it before installing.

    Args:
        spec: The configuration; its seed fixes weights and inputs.
        out_dir: Parent folder of the artifact folder. Default ``models``.
        exporter: ``legacy`` (TorchScript-based ``torch.onnx.export``) or ``dynamo`` (torch.export
            path with native RNN ops). Default: legacy where torch still has it, else dynamo.
        opset: ONNX opset, 14..20. Default 18.
        torchscript_method: ``script`` (default) or ``trace``.
        validate: Validate the staged artifact (default True); a failing one is not installed.
        runtimes: Runtimes for that validation; default every available one.
        tolerance: Validation tolerance; default `Tolerance()`.

    Raises:
        UsageError: bad exporter/opset, or an output folder that cannot be written.
        ExportError: the model cannot be exported correctly (see the exporter modules).
        ValidationFailed: the exported artifact does not match PyTorch; it is kept in
            ``out_dir/.<name>.rejected`` for inspection and the previous artifact stays.
    """
    notes: list[str] = []
    if exporter is None:
        exporter, note = default_exporter()
        if note:
            notes.append(note)
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {exporter!r}; valid: {', '.join(EXPORTERS)}")
    if not isinstance(opset, int) or not _MIN_OPSET <= opset <= _MAX_OPSET:
        raise UsageError(f"opset {opset!r} is not supported; valid: {_MIN_OPSET}..{_MAX_OPSET}")
    if exporter == "legacy":
        from rnnexport.export.onnx_legacy import legacy_exporter_available

        if not legacy_exporter_available():
            raise UsageError("--exporter legacy: this torch has no TorchScript-based ONNX exporter; use --exporter dynamo")

    if exporter == "dynamo":
        from rnnexport.export.onnx_dynamo import require_onnxscript

        require_onnxscript()  # before anything is written

    import torch

    from rnnexport.builder import build_module, call_model, wrap
    from rnnexport.export.onnx_dynamo import export_onnx_dynamo, export_program, save_program
    from rnnexport.export.onnx_legacy import export_onnx_legacy
    from rnnexport.export.torchscript import export_torchscript

    module = build_module(spec)
    final = Path(out_dir) / spec.name
    result = ExportResult(path=final, exporter=exporter, notes=notes)
    with staged_folder(final) as stage:
        warnings: dict[str, list[str]] = {}
        torch.save(module.state_dict(), stage / "weights.pt")
        warnings["torchscript"] = export_torchscript(
            spec, stage / "weights.pt", stage / "model.pt", method=torchscript_method
        )
        program, warnings["torch.export"] = export_program(module, spec)
        save_program(program, stage / "model.pt2")
        files = ["model.pt", "model.pt2", "weights.pt", "golden.npz"]
        onnx_refused = None
        if spec.proj_size:
            # Refused, never approximated: ONNX's LSTM has no projection.
            onnx_refused = (f"{spec.name}: no model.onnx: the ONNX LSTM op has no projection (proj_size="
                            f"{spec.proj_size}); model.pt and model.pt2 are written and validated")
            notes.append(onnx_refused)
        else:
            if exporter == "legacy":
                warnings["onnx"] = export_onnx_legacy(module, spec, stage / "model.onnx", opset=opset)
            else:
                warnings["onnx"] = export_onnx_dynamo(program, spec, stage / "model.onnx", opset=opset)
            _check_onnx(stage / "model.onnx")
            files.insert(0, "model.onnx")
        golden = {}
        reference = wrap(module, spec)
        for case in golden_cases(spec):
            feeds = make_inputs(spec, case)
            golden.update({f"{case.id}/{n}": v for n, v in feeds.items()})
            golden.update({f"{case.id}/{n}": v for n, v in call_model(reference, spec, feeds).items()})
        write_npz(stage / "golden.npz", golden)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": spec.name,
            "spec": spec.to_dict(),
            "exporter": exporter,
            "opset": None if spec.proj_size else opset,
            **({"onnx_refused": onnx_refused} if onnx_refused else {}),
            "torchscript_method": torchscript_method,
            "files": {name: file_entry(stage / name) for name in files},
            "io": _io_contract(spec),
            "golden": {"file": "golden.npz", "cases": [c.id for c in golden_cases(spec)]},
            "tolerance": {"atol": (tolerance or Tolerance()).atol, "rtol": (tolerance or Tolerance()).rtol},
            "versions": versions(),
            "export_warnings": {k: v for k, v in warnings.items() if v},
            "validation": None,
        }
        write_json(stage / MANIFEST, manifest)
        if validate:
            from rnnexport.validate import validate_artifact

            report = validate_artifact(stage, runtimes=runtimes, tolerance=tolerance)
            report.artifact, report.path = spec.name, str(final)
            result.report = report
            manifest["validation"] = _manifest_summary(report)
            write_json(stage / MANIFEST, manifest)
            if not report.passed:
                rejected = final.parent / f".{spec.name}.rejected"
                shutil.rmtree(rejected, ignore_errors=True)
                shutil.copytree(stage, rejected)
                raise ValidationFailed(
                    f"{spec.name}: the exported artifact does not match PyTorch; it was not installed "
                    f"(kept for inspection in {rejected}); {final} is unchanged",
                    report,
                )
    return result


def _manifest_summary(report) -> dict[str, Any]:
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


def _check_onnx(path: Path) -> None:
    """``onnx.checker`` (full check, with shape inference) on the written file."""
    import onnx

    from rnnexport.errors import ExportError

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path.name}: exported ONNX fails onnx.checker: {exc}") from None
