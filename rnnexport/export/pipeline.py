"""The one export pipeline: every kind of spec goes through the same steps, in a staging folder,
validated there, then installed (`export_artifact`)::

    check exporter, TorchScript method, memory, formats, variants   (before anything is built)
    build the module, check it against the spec                        (the kind's `prepare`)
    weights file  ->  TorchScript compiled in the compile server while the rest exports  ->  model.pt
    torch.export with native recurrent ops  ->  model.pt2
    ONNX (legacy: the module; dynamo: that same program translated), checked loadable and
    holding a native op per recurrent layer  ->  model.onnx
    golden.npz from the eager module  ->  variants  ->  manifest.json  ->  validate  ->  install

What a kind of spec does at a step is its *exporting*, named by the spec (``spec.pipeline``):
`rnnexport.export.rnn.RNNExporting` (the seeded ``nn.RNN/LSTM/GRU`` behind its calling
contract, ``weights.pt``) and `rnnexport.export.model.ModelExporting` (a user's module,
``weights.safetensors``). The steps both kinds share with everything else are
`rnnexport.export.steps`'.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from rnnexport.compare import Tolerance
from rnnexport.errors import ExportError, first_line
from rnnexport.export.loadable import check_onnx
from rnnexport.export.torchscript import check_method
from rnnexport.export.steps import (DEFAULT_OPSET, ExportResult, check_exporter, check_memory_limits, chosen_variants,
                                    exporting_class, made_any, validate_staged, writing)
from rnnexport.formats import FormatPlan
from rnnexport.golden import write_npz
from rnnexport.manifest import MANIFEST, schema_version_of, write_json
from rnnexport.staging import DEFAULT_LOCK_TIMEOUT, resolve_output, staged_folder
from rnnexport.variants import record_variants, write_variants

__all__ = ["export_artifact"]


def export_artifact(
    spec,
    out_dir: str | Path = "models",
    *,
    module=None,
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
    """Export `spec` to ``out_dir/<spec.name>/`` and (by default) validate it before installing.

    Args:
        spec: The configuration; its seed fixes weights and inputs.
        module: The module itself (`rnnexport.export.export_model`); default built from the spec.
        out_dir: Parent folder of the artifact folder. Default ``models``. A link
            ``out_dir/<name>`` to a folder is followed: its target is replaced.
        exporter: ``legacy`` (TorchScript-based ``torch.onnx.export``) or ``dynamo`` (torch.export
            path with native recurrent ops). Default: legacy where torch still has it, else dynamo.
        opset: ONNX opset, 14..20. Default 18.
        torchscript_method: ``script`` or ``trace``. Default: script (model specs: their
            ``torchscript`` key, else script falling back to trace where scripting fails).
        validate: Validate the staged artifact (default True); a failing one is not installed.
        runtimes: Runtimes for that validation; default every available one.
        tolerance: Validation tolerance; default `Tolerance()`.
        max_memory: Bytes the weights and each validation case may need; default half of the
            memory available now (`rnnexport.limits`).
        lock_timeout: Seconds to wait for another export of the same name into the same folder.
        formats: Formats to make (``onnx``, ``torchscript``, ``pt2``); each must be made or
            nothing is installed. Default (None): all three, and one that cannot be made is
            left out with its reason (`ExportResult.missing`; `rnnexport.formats`).
        variants: Deployment variants (``int8``, ``fp16``) made from ``model.onnx`` beside it and
            judged by the acceptance criteria (`rnnexport.variants`, `rnnexport.criteria`);
            default the spec's ``variants`` key (model specs), else none.

    Raises:
        UsageError: bad exporter/opset, a spec or case over `max_memory`, an output folder that
            cannot be written (no space left included), or the lock held past `lock_timeout`.
        ExportError: the model cannot be exported correctly (see the exporter modules).
        ValidationFailed: the exported artifact does not match PyTorch; it is kept in
            ``out_dir/.<name>.rejected`` for inspection and the previous artifact stays.
    """
    notes: list[str] = []
    exporter = check_exporter(exporter, opset, notes)
    method = torchscript_method or spec.torchscript
    check_method(method)
    check_memory_limits(spec, validate, max_memory)
    plan = FormatPlan.of(spec.name, formats if formats is not None else spec.formats)
    chosen = chosen_variants(spec, variants, plan, notes)
    with exporting_class(spec.pipeline).opened(spec, module, notes) as exporting:
        exporting.prepare(validate=validate, runtimes=runtimes, max_memory=max_memory, variants=chosen)
        final = Path(out_dir) / spec.name
        result = ExportResult(path=final, exporter=exporter, notes=notes, formats=plan)
        target = resolve_output(final)
        with staged_folder(final, lock_timeout=lock_timeout) as stage:
            warnings, method = _write_models(exporting, stage, plan, exporter, opset, method, notes)
            made_any(plan)
            golden, warnings["golden"] = _write_golden(exporting, stage)
            made = write_variants(spec.name, stage, chosen, writing, notes)
            manifest = exporting.manifest(
                stage, [*plan.files(), exporting.weights_file, "golden.npz"], golden, formats=plan.manifest_fields(),
                exporter=exporter, opset=opset, torchscript_method=method, warnings=warnings,
                tolerance=tolerance or Tolerance())
            record_variants(manifest, stage, made, exporting.spec)
            manifest["schema_version"] = schema_version_of(manifest)  # 3 only where its fields are used
            with writing(stage, MANIFEST, 1 << 20) as path:
                write_json(path, manifest)
            if validate:
                result.report = validate_staged(exporting.spec, stage, final, target, manifest, runtimes, tolerance,
                                                max_memory, reference=exporting.reference)
    return result


def _write_models(exporting, stage: Path, plan: FormatPlan, exporter: str, opset: int, method: str | None,
                  notes: list[str]) -> tuple[dict[str, list[str]], str | None]:
    """The weights file and the formats `plan` wants (model.pt, model.pt2, model.onnx); a format
    that cannot be made is recorded in `plan`. Returns torch's warnings per step and the
    TorchScript method used."""
    spec = exporting.spec
    warnings: dict[str, list[str]] = {}
    size = 2 * exporting.write_weights(stage)  # a model file: the weights and its graph
    compiler = _start_torchscript(exporting, stage, method, size) if plan.wants("torchscript") else None
    with compiler or contextlib.nullcontext():  # it compiles while this process exports the rest
        program = _write_program(exporting, stage, plan, exporter, size, warnings)
        if reason := spec.onnx_impossible():  # refused, never approximated: recorded and noted
            reason = f"{spec.name}: no model.onnx: {reason}; model.pt and model.pt2 are written and validated"
            plan.lose("onnx", reason, by_design=True)
            notes.extend([reason] if "onnx" in plan.missing else [])
        warnings["onnx"] = plan.attempt("onnx", lambda: _write_onnx(exporting, program, stage, exporter, opset, size),
                                        cleanup=lambda: (stage / "model.onnx").unlink(missing_ok=True))
        outcome = plan.attempt("torchscript", lambda: _finish_torchscript(exporting, stage, method, compiler, notes,
                                                                          size),
                               cleanup=lambda: (stage / "model.pt").unlink(missing_ok=True))
    method, warnings["torchscript"] = outcome or (None, None)
    return {k: v for k, v in warnings.items() if v is not None}, method


def _write_program(exporting, stage: Path, plan: FormatPlan, exporter: str, size: int,
                   warnings: dict[str, list[str]]):
    """The torch.export program (``model.pt2`` when wanted; the dynamo exporter's ONNX comes
    from it too), or None: not needed, or it failed and `plan` records why."""
    needed = [f for f in ("pt2", "onnx") if plan.wants(f) and (f == "pt2" or exporter == "dynamo")]
    if not needed:
        return None

    from rnnexport.export.onnx_dynamo import save_program
    from rnnexport.export.program import native_program

    def export() -> Any:
        program, warnings["torch.export"] = native_program(exporting)
        if plan.wants("pt2"):
            with writing(stage, "model.pt2", size) as path:
                save_program(program, path)
        return program

    program = plan.attempt(needed[0], export, cleanup=lambda: (stage / "model.pt2").unlink(missing_ok=True))
    if program is None:
        for fmt in needed[1:]:
            plan.lose(fmt, f"{exporting.spec.name}: the dynamo ONNX exporter needs torch.export, which failed: "
                           f"{plan.missing[needed[0]]}")
    return program


def _write_onnx(exporting, program, stage: Path, exporter: str, opset: int, size: int) -> list[str]:
    """``model.onnx`` by `exporter`, checked loadable and by the kind (`check_graph`: a native
    op for every recurrent layer). Returns torch's warnings."""
    from rnnexport.export.onnx_dynamo import export_onnx_dynamo
    from rnnexport.export.onnx_legacy import export_onnx_legacy

    spec = exporting.spec
    with writing(stage, "model.onnx", size) as path:
        try:
            if exporter == "legacy":
                messages = export_onnx_legacy(exporting.contract_module, exporting.example_args(), spec, path,
                                              opset=opset)
            else:  # the program already holds the native ops
                messages = export_onnx_dynamo(program, spec, path, opset=opset)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{spec.name}: the {exporter} ONNX exporter failed: {type(exc).__name__}: "
                              f"{first_line(exc, 400)}") from None
    check_onnx(path, spec.name)
    exporting.check_graph(stage, path, exporter)
    return messages


def _start_torchscript(exporting, stage: Path, method: str | None, estimate: int):
    """Start compiling ``model.pt`` (about `estimate` bytes) from the weights file in the
    compile server; None for a module that cannot be rebuilt elsewhere (compiled here later)."""
    if not exporting.rebuildable:
        return None
    from rnnexport.export.torchscript import start_torchscript

    with writing(stage, "model.pt", estimate) as path:
        return start_torchscript(exporting.spec, stage / exporting.weights_file, path, method=method)


def _finish_torchscript(exporting, stage: Path, method: str | None, compiler, notes: list[str],
                        estimate: int) -> tuple[str, list[str]]:
    """``model.pt`` (about `estimate` bytes): the started `compiler`'s result, or (a module in
    memory) compiled here. Script, or `method`; trace where scripting fails and no method was
    asked for. Returns the method used and torch's warnings."""
    spec = exporting.spec
    with writing(stage, "model.pt", None if compiler else estimate) as path:  # started: checked then
        if compiler is None:
            outcome = exporting.compile(path, method)
        else:
            try:
                outcome = compiler.result()
            except ExportError as exc:
                if method != "script":
                    raise  # it traced where scripting failed: nothing else to try
                raise ExportError(f"{exc}; try torchscript = \"trace\" in the spec (or --torchscript trace)") from None
    if outcome.get("script_error"):
        notes.append(f"{spec.name}: torch.jit.script failed ({outcome['script_error']}); model.pt was traced "
                     "instead (torchscript = \"trace\" in the spec chooses it directly)")
    if outcome["method"] == "trace" and outcome.get("dropped"):
        notes.append(f"{spec.name}: the traced model.pt has forward only: tracing leaves out the module's "
                     f"@torch.jit.export methods ({', '.join(outcome['dropped'])})")
    return outcome["method"], outcome["messages"]


def _write_golden(exporting, stage: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """golden.npz: each golden case's inputs (and labels), and the eager module's outputs.
    Returns each array's shape and dtype, and what torch warned meanwhile (e.g. "LSTM with
    projections is not supported with oneDNN"), for the manifest: it is not the user's to read
    on stderr."""
    from rnnexport.export.capture import captured_messages

    golden = {}
    with captured_messages() as messages:
        for case in exporting.golden_cases():
            feeds = exporting.inputs(case)
            golden.update({f"{case.id}/{n}": v for n, v in {**feeds, **exporting.labels(case)}.items()})
            golden.update({f"{case.id}/{n}": v for n, v in exporting.call(feeds).items()})
    with writing(stage, "golden.npz", sum(v.nbytes for v in golden.values())) as path:
        write_npz(path, golden)
    return {key: {"shape": list(v.shape), "dtype": str(v.dtype)} for key, v in golden.items()}, messages
