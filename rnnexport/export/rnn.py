"""Export an RNN configuration (`rnnexport.spec.RNNSpec`): the seeded ``nn.RNN/LSTM/GRU``
behind its calling contract, ``weights.pt``, the formats (TorchScript compiled in the compile
server while the rest exports; torch.export with native ops; ONNX by either exporter), golden
data, the variants, the manifest; validated in a staging folder, then installed. The steps it
shares with a model spec's pipeline are `rnnexport.export.steps`'.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from rnnexport.compare import Tolerance
from rnnexport.export.loadable import check_onnx
from rnnexport.export.steps import (DEFAULT_OPSET, ExportResult, check_exporter, check_memory_limits, chosen_variants,
                                    made_any, validate_staged, writing)
from rnnexport.formats import FormatPlan
from rnnexport.golden import write_npz
from rnnexport.inputs import golden_cases, make_inputs
from rnnexport.manifest import MANIFEST, schema_version_of, write_json
from rnnexport.spec import RNNSpec
from rnnexport.staging import DEFAULT_LOCK_TIMEOUT, resolve_output, staged_folder
from rnnexport.variants import record_variants, write_variants
from rnnexport.verify import file_entry

__all__ = ["export_rnn_spec"]


def export_rnn_spec(
    spec: RNNSpec,
    out_dir: str | Path = "models",
    *,
    exporter: str | None = None,
    opset: int = DEFAULT_OPSET,
    torchscript_method: str | None = None,
    validate: bool = True,
    runtimes: list[str] | None = None,
    tolerance: Tolerance | None = None,
    max_memory: int | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    formats: list[str] | str | None = None,
    variants: list[str] | str | None = None,
) -> ExportResult:
    """Export an RNN configuration like `rnnexport.export.export_spec` (see there for the arguments
    and what it raises): the seeded module, weights.pt, the formats, golden data, variants, the
    manifest, validated in a staging folder, then installed."""
    torchscript_method = torchscript_method or "script"
    notes: list[str] = []
    exporter = check_exporter(exporter, opset, notes)
    check_memory_limits(spec, validate, max_memory)
    final = Path(out_dir) / spec.name
    plan = FormatPlan.of(spec.name, formats)
    chosen = chosen_variants(spec, variants, plan, notes)
    result = ExportResult(path=final, exporter=exporter, notes=notes, formats=plan)
    target = resolve_output(final)
    from rnnexport.builder import build_module

    module = build_module(spec)
    with staged_folder(final, lock_timeout=lock_timeout) as stage:
        warnings = _write_models(module, spec, stage, exporter, opset, torchscript_method, plan, notes)
        made_any(plan)
        warnings["golden"] = _write_golden(module, spec, stage)
        made = write_variants(spec.name, stage, chosen, writing, notes)
        manifest = _manifest(spec, stage, plan, exporter, opset, torchscript_method, warnings, tolerance, made)
        if validate:
            result.report = validate_staged(spec, stage, final, target, manifest, runtimes, tolerance, max_memory)
    return result


def _write_models(
    module, spec: RNNSpec, stage: Path, exporter: str, opset: int, torchscript_method: str, plan: FormatPlan,
    notes: list[str],
) -> dict[str, list[str]]:
    """weights.pt and the formats `plan` wants of `module` (model.pt, model.pt2, model.onnx);
    a format that cannot be made is recorded in `plan`. Returns the warnings torch raised per format."""
    import torch

    from rnnexport.export.onnx_dynamo import export_program, save_program
    from rnnexport.export.torchscript import start_torchscript
    from rnnexport.limits import weight_bytes

    size = weight_bytes(spec)
    warnings: dict[str, list[str]] = {}
    with writing(stage, "weights.pt", size) as path:
        buffer = io.BytesIO()  # written by Python: torch's C++ writer aborts the process on a full disk
        torch.save(module.state_dict(), buffer)
        path.write_bytes(buffer.getbuffer())
    compiler = None
    if plan.wants("torchscript"):
        with writing(stage, "model.pt", 2 * size) as path:
            # Compiles in its own process (mostly importing torch) while this one exports the rest.
            compiler = start_torchscript(spec, stage / "weights.pt", path, method=torchscript_method)
    with compiler or contextlib.nullcontext():
        program = None
        if plan.wants("pt2") or (plan.wants("onnx") and exporter == "dynamo"):
            program, warnings["torch.export"] = export_program(module, spec)
        if plan.wants("pt2"):
            with writing(stage, "model.pt2", 2 * size) as path:
                save_program(program, path)
        if spec.proj_size:
            # Refused, never approximated: ONNX's LSTM has no projection.
            reason = (f"{spec.name}: no model.onnx: the ONNX LSTM op has no projection (proj_size={spec.proj_size}); "
                      "model.pt and model.pt2 are written and validated")
            plan.lose("onnx", reason, by_design=True)
            notes.extend([reason] if "onnx" in plan.missing else [])
        warnings["onnx"] = plan.attempt("onnx", lambda: _write_onnx(module, spec, program, stage, exporter, opset, size),
                                        cleanup=lambda: (stage / "model.onnx").unlink(missing_ok=True)) or []
        if compiler is not None:
            with writing(stage, "model.pt", None):  # space was checked when it started
                warnings["torchscript"] = plan.attempt("torchscript", compiler.result,
                                                       cleanup=lambda: (stage / "model.pt").unlink(missing_ok=True))
    return {k: v for k, v in warnings.items() if v is not None}


def _write_onnx(module, spec: RNNSpec, program, stage: Path, exporter: str, opset: int, size: int) -> list[str]:
    from rnnexport.export.onnx_dynamo import export_onnx_dynamo
    from rnnexport.export.onnx_legacy import export_onnx_legacy

    with writing(stage, "model.onnx", 2 * size) as path:
        if exporter == "legacy":
            messages = export_onnx_legacy(module, spec, path, opset=opset)
        else:
            messages = export_onnx_dynamo(program, spec, path, opset=opset)
    check_onnx(path, spec.name)
    return messages


def _write_golden(module, spec: RNNSpec, stage: Path) -> list[str]:
    """golden.npz: the golden cases' inputs and the eager reference's (`module`'s) outputs.
    Returns what torch warned meanwhile (e.g. "LSTM with projections is not supported with
    oneDNN"), for the manifest: it is not the user's to read on stderr."""
    from rnnexport.builder import call_model, wrap
    from rnnexport.export.capture import captured_messages

    reference = wrap(module, spec)
    golden = {}
    with captured_messages() as messages:
        for case in golden_cases(spec):
            feeds = make_inputs(spec, case)
            golden.update({f"{case.id}/{n}": v for n, v in feeds.items()})
            golden.update({f"{case.id}/{n}": v for n, v in call_model(reference, spec, feeds).items()})
    estimate = sum(spec.case_bytes(c) for c in golden_cases(spec))
    with writing(stage, "golden.npz", estimate) as path:
        write_npz(path, golden)
    return messages


def _manifest(
    spec: RNNSpec, stage: Path, plan: FormatPlan, exporter: str, opset: int, torchscript_method: str,
    warnings: dict[str, list[str]], tolerance: Tolerance | None, variants: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The manifest of the staged artifact (`rnnexport.artifacts.rnn_manifest`), written to
    ``stage/manifest.json`` and returned."""
    from rnnexport.manifest import rnn_manifest

    files = [*plan.files(), "weights.pt", "golden.npz"]
    manifest = rnn_manifest(spec, {name: file_entry(stage / name) for name in files}, exporter=exporter, opset=opset,
                            torchscript_method=torchscript_method, warnings=warnings, formats=plan.manifest_fields(),
                            tolerance=tolerance or Tolerance())
    record_variants(manifest, stage, variants, spec)
    manifest["schema_version"] = schema_version_of(manifest)  # 3 only where its fields are used
    with writing(stage, MANIFEST, 1 << 16) as path:
        write_json(path, manifest)
    return manifest
