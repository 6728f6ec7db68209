"""Export one spec to an artifact folder: TorchScript, ONNX (legacy or dynamo), torch.export.

`export_spec` writes everything into a staging folder, validates it there, and only then
replaces ``DIR/<name>/``: an interrupted or failing export leaves the previous folder intact.
"""

from __future__ import annotations

import contextlib
import errno
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport.compare import Tolerance
from rnnexport.errors import ExportError, RNNExportError, UsageError, ValidationFailed, WorkerDied
from rnnexport.export.loadable import check_onnx
from rnnexport.formats import FormatPlan
from rnnexport.variants import parse_variants, record_variants, write_variants
from rnnexport.golden import write_npz
from rnnexport.inputs import golden_cases, make_inputs
from rnnexport.manifest import MANIFEST, write_json
from rnnexport.spec import RNNSpec
from rnnexport.staging import DEFAULT_LOCK_TIMEOUT, keep_rejected, resolve_output, staged_folder
from rnnexport.verify import file_entry

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "ExportResult", "default_exporter", "export_imports", "export_model",
           "export_spec", "export_specs"]

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
    formats: FormatPlan | None = None

    @property
    def missing(self) -> str | None:
        """One line naming the formats that could not be made (installed without them), or None."""
        return self.formats.summary() if self.formats else None


def default_exporter() -> tuple[str, str | None]:
    """``legacy`` while torch still has it, else ``dynamo``, with a note saying so."""
    from rnnexport.export.onnx_legacy import legacy_exporter_available

    if legacy_exporter_available():
        return "legacy", None
    return "dynamo", (
        "the TorchScript-based ONNX exporter is not in this torch; using --exporter dynamo"
    )


def export_spec(
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
    """Export `spec` to ``out_dir/<spec.name>/`` and (by default) validate it before installing.

    Args:
        spec: The configuration; its seed fixes weights and inputs.
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
    if spec.kind == "model":
        from rnnexport.export.model import export_model_spec

        return export_model_spec(spec, out_dir, exporter=exporter, opset=opset, torchscript_method=torchscript_method,
                                 validate=validate, runtimes=runtimes, tolerance=tolerance, max_memory=max_memory,
                                 lock_timeout=lock_timeout, formats=formats, variants=variants)
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


def export_specs(
    specs: list[RNNSpec], out_dir: str | Path = "models", *, jobs: int = 1, **options: Any
) -> list[ExportResult | ValidationFailed | WorkerDied]:
    """Export several specs like `export_spec` (same `options`), `jobs` at once.

    With ``jobs > 1`` each spec is exported in a worker process (``spawn``). Returns, in the
    order of `specs`, each `ExportResult`, or the `ValidationFailed` of a spec whose artifact
    did not match PyTorch (it was not installed), or the `WorkerDied` of a spec whose worker
    process died (killed, crashed) before it returned; any other error is raised.

    Raises:
        UsageError: bad `jobs`, and whatever `export_spec` raises other than ValidationFailed.
    """
    from rnnexport._workers import map_in_processes
    from rnnexport.options import require_int

    work = [(spec, str(out_dir), options) for spec in specs]
    if require_int("jobs", jobs, 1) == 1 or len(specs) <= 1:
        if specs:
            from rnnexport.export.compile_server import start_compile_server

            start_compile_server()  # its import of torch overlaps this process's
        return [_export_or_failure(item) for item in work]
    from rnnexport.export.compile_server import fork_compile_server

    preload = export_imports(options.get("runtimes"), validate=options.get("validate", True))
    return map_in_processes(_export_or_failure, work, jobs, preload=preload, initializer=fork_compile_server,
                            label=lambda item: item[0].name)


def export_imports(runtimes: list[str] | None = None, *, validate: bool = True) -> list[str]:
    """The modules exporting imports (and validating on `runtimes`, None: all, when
    `validate`): the ``--jobs`` workers' fork server imports them once."""
    from rnnexport.validate import validate_imports

    exporting = ["torch", "rnnexport.export", "rnnexport.export.model", "rnnexport.export.onnx_dynamo",
                 "rnnexport.export.compile_server", "rnnexport.export.torchscript", "rnnexport.builder",
                 "rnnexport.usermodel", "rnnexport.ops", "torch.onnx", "onnxscript"]
    return list(dict.fromkeys([*exporting, *(validate_imports(runtimes) if validate else [])]))


def _export_or_failure(item: tuple[RNNSpec, str, dict[str, Any]]) -> ExportResult | ValidationFailed:
    spec, out_dir, options = item
    try:
        return export_spec(spec, out_dir, **options)
    except (ValidationFailed, WorkerDied) as exc:  # this artifact's failure; the others go on
        return exc


def check_exporter(exporter: str | None, opset: int, notes: list[str]) -> str:
    """The exporter to use (the default one, with a note, when None); checked before anything is written."""
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
    else:
        from rnnexport.export.onnx_dynamo import require_onnxscript

        require_onnxscript()
    return exporter


def check_memory_limits(spec, validate: bool, max_memory: int | None) -> None:
    """Refuse, before building anything, a spec whose weights (RNN specs: computed from the
    spec) or cases exceed the memory limit, or a case over `rnnexport.limits.MAX_CASE_STEPS`
    (its validation would refuse it). A model spec's outputs are checked once the module ran
    (`rnnexport.export.model`)."""
    from rnnexport.inputs import default_sweep
    from rnnexport.limits import check_memory, check_steps, weight_bytes

    if spec.kind == "rnn":
        check_memory(f"{spec.name}: the weights", weight_bytes(spec), max_memory)
    for case in dict.fromkeys([*golden_cases(spec), *(default_sweep(spec) if validate else [])]):
        check_memory(f"{spec.name}: case {case.id}", spec.case_bytes(case), max_memory)
        check_steps(f"{spec.name}: case {case.id}", spec.case_steps(case))


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
    from rnnexport.export._capture import captured_messages

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
    with writing(stage, MANIFEST, 1 << 16) as path:
        write_json(path, manifest)
    return manifest


def validate_staged(
    spec: RNNSpec, stage: Path, final: Path, target: Path, manifest: dict[str, Any],
    runtimes: list[str] | None, tolerance: Tolerance | None, max_memory: int | None, reference=None,
):
    """Validate the staged artifact and record the summary in its manifest.

    Raises:
        ValidationFailed: it does not match PyTorch; a copy is kept in ``.<name>.rejected``
            beside the folder it would have replaced.
    """
    from rnnexport.manifest import manifest_summary
    from rnnexport.validate import validate_artifact

    options = {"torch": {"module": reference}} if reference is not None else None
    # The manifest was written just now from the user's spec and options: its tolerance is theirs.
    report = validate_artifact(stage, runtimes=runtimes, manifest_tolerance=True, max_memory=max_memory,
                               runner_options=options)
    report.artifact, report.path = spec.name, str(final)
    manifest["validation"] = manifest_summary(report)
    with writing(stage, MANIFEST, 1 << 20) as path:
        write_json(path, manifest)
    if not report.passed:
        rejected = keep_rejected(stage, target)
        kept = f"kept for inspection in {rejected}" if rejected else (
            f"not kept: {target.parent / f'.{target.name}.rejected'} is not rnnexport's")
        missed = report.criteria_failures
        what = ("does not match PyTorch" if report.errors or report.failures or not missed else
                f"has a variant that misses its acceptance criteria ({missed[0].runtime}: {missed[0].output} "
                f"{missed[0].describe()})")
        raise ValidationFailed(f"{spec.name}: the exported artifact {what}; it was not installed ({kept}); {final} is "
                               "unchanged", report)
    return report


def chosen_variants(spec, variants: list[str] | str | None, plan: FormatPlan, notes: list[str]) -> tuple[str, ...]:
    """The variants to make: `variants` (checked), else the spec's ``variants`` key, which
    formats without ONNX (they are made from it) leave out, with a note.

    Raises:
        UsageError: a bad name, or variants asked for with formats that leave out ONNX.
    """
    if variants is None:
        chosen = tuple(spec.variants or ())
    else:
        chosen = parse_variants(variants, "--variant", UsageError) if variants else ()
    if chosen and "onnx" not in plan.wanted:
        if variants is None:
            notes.append(f"{spec.name}: the spec's variants ({', '.join(chosen)}) are not made: they are made from "
                         f"model.onnx, which the formats ({', '.join(plan.wanted)}) leave out")
            return ()
        raise UsageError(f"{spec.name}: the variants ({', '.join(chosen)}) are made from model.onnx, which the "
                         f"formats ({', '.join(plan.wanted)}) leave out; add onnx to --formats or drop --variant")
    return chosen


def made_any(plan: FormatPlan) -> None:
    """Raise when no model file could be made: there is nothing to install."""
    if not plan.files():
        raise ExportError(f"{plan.name}: no model format could be made: "
                          + "; ".join(f"{f}: {reason}" for f, reason in plan.missing.items()))


@contextlib.contextmanager
def writing(stage: Path, name: str, estimate: int | None) -> Iterator[Path]:
    """Yield ``stage/name`` to write; a full disk becomes one clear error.

    Free space is checked against `estimate` first (None: not checked): some of torch's
    writers abort the whole process (SIGABRT from C++) when the disk fills up mid-write, so they
    must not start.

    Raises:
        UsageError: "no space left on device while writing <name>", or another OS error.
    """
    from safetensors import SafetensorError

    from rnnexport.limits import check_free_space, nearly_full, no_space

    if estimate is not None:
        check_free_space(stage, name, estimate)
    try:
        yield stage / name
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UsageError(no_space(stage, name)) from None
        raise UsageError(f"cannot write {stage / name}: {exc.strerror or exc}") from None
    except (RuntimeError, RNNExportError, SafetensorError) as exc:
        # torch's writers, safetensors and the TorchScript process report a full disk in their own words.
        if not isinstance(exc, UsageError) and nearly_full(stage):
            raise UsageError(no_space(stage, name)) from None
        raise


# Last: rnnexport.export.api (through rnnexport.export.model) imports names defined above.
# Re-exported with its full signature.
from rnnexport.export.api import export_model  # noqa: E402
