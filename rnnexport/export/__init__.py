"""Export one spec to an artifact folder: TorchScript, ONNX (legacy or dynamo), torch.export.

`export_spec` writes everything into a staging folder, validates it there, and only then
replaces ``DIR/<name>/``: an interrupted or failing export leaves the previous folder intact.
Every kind of spec goes through the one pipeline (`rnnexport.export.pipeline`); what a kind does
at a step is its exporting (`rnnexport.export.rnn`, `rnnexport.export.model`), named by the spec
(``spec.pipeline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnexport.compare import Tolerance
from rnnexport.errors import ValidationFailed, WorkerDied
from rnnexport.export.steps import (  # noqa: F401  (re-exported: imported from here before the split)
    DEFAULT_OPSET, EXPORTERS, ExportResult, check_exporter, check_memory_limits, chosen_variants, default_exporter,
    made_any, validate_staged, writing)
from rnnexport.staging import DEFAULT_LOCK_TIMEOUT

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "ExportResult", "default_exporter", "export_imports", "export_model",
           "export_spec", "export_specs"]


def export_spec(
    spec,
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
    from rnnexport.export.pipeline import export_artifact

    return export_artifact(spec, out_dir, exporter=exporter, opset=opset, torchscript_method=torchscript_method,
                           validate=validate, runtimes=runtimes, tolerance=tolerance, max_memory=max_memory,
                           lock_timeout=lock_timeout, formats=formats, variants=variants)


def export_specs(
    specs: list, out_dir: str | Path = "models", *, jobs: int = 1, **options: Any
) -> list[ExportResult | ValidationFailed | WorkerDied]:
    """Export several specs like `export_spec` (same `options`), `jobs` at once.

    With ``jobs > 1`` each spec is exported in a worker process (``spawn``). Returns, in the
    order of `specs`, each `ExportResult`, or the `ValidationFailed` of a spec whose artifact
    did not match PyTorch (it was not installed), or the `WorkerDied` of a spec whose worker
    process died (killed, crashed) before it returned; any other error is raised.

    Raises:
        UsageError: bad `jobs`, and whatever `export_spec` raises other than ValidationFailed.
    """
    from rnnexport.workers import map_in_processes
    from rnnexport.options import require_int

    work = [(spec, str(out_dir), options) for spec in specs]
    if require_int("jobs", jobs, 1) == 1 or len(specs) <= 1:
        if specs:
            from rnnexport.export.compile_server import start_compile_server

            start_compile_server()  # its import of torch overlaps this process's
            if options.get("validate", True) and (options.get("variants") or any(s.variants for s in specs)):
                from rnnexport.runtimes.probe import start_probing

                start_probing()  # the variants' trials fork from it when validating: importing meanwhile
        return [_export_or_failure(item) for item in work]
    from rnnexport.export.compile_server import fork_compile_server

    preload = export_imports(options.get("runtimes"), validate=options.get("validate", True))
    return map_in_processes(_export_or_failure, work, jobs, preload=preload, initializer=fork_compile_server,
                            label=lambda item: item[0].name)


def export_imports(runtimes: list[str] | None = None, *, validate: bool = True) -> list[str]:
    """The modules exporting imports (and validating on `runtimes`, None: all, when
    `validate`): the ``--jobs`` workers' fork server imports them once."""
    from rnnexport.validate import validate_imports

    exporting = ["torch", "rnnexport.export", "rnnexport.export.pipeline", "rnnexport.export.rnn", "rnnexport.export.model",
                 "rnnexport.export.onnx_dynamo",
                 "rnnexport.export.compile_server", "rnnexport.export.torchscript", "rnnexport.builder",
                 "rnnexport.usermodel", "rnnexport.ops", "torch.onnx", "onnxscript"]
    return list(dict.fromkeys([*exporting, *(validate_imports(runtimes) if validate else [])]))


def _export_or_failure(item: tuple[Any, str, dict[str, Any]]) -> ExportResult | ValidationFailed:
    spec, out_dir, options = item
    try:
        return export_spec(spec, out_dir, **options)
    except (ValidationFailed, WorkerDied) as exc:  # this artifact's failure; the others go on
        return exc


# Last: rnnexport.export.api (through rnnexport.export.model) imports names defined above.
# Re-exported with its full signature.
from rnnexport.export.api import export_model  # noqa: E402
