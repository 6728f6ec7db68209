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

from rnnexport.errors import ValidationFailed, WorkerDied
from rnnexport.export.steps import (  # noqa: F401  (re-exported: imported from here before the split)
    DEFAULT_OPSET, EXPORTERS, ExportResult, check_exporter, check_memory_limits, chosen_variants, default_exporter,
    made_any, validate_staged, writing)
from rnnexport.export.pipeline import export_artifact as export_spec  # the one pipeline, under its public name

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "ExportResult", "default_exporter", "export_imports", "export_model",
           "export_spec", "export_specs"]


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
            asked = options.get("variants")  # None: each spec's own
            if options.get("validate", True) and (asked or asked is None and any(s.variants for s in specs)):
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
    from rnnexport.runtimes import validation_imports

    exporting = ["torch", "rnnexport.export", "rnnexport.export.pipeline", "rnnexport.export.rnn", "rnnexport.export.model",
                 "rnnexport.export.onnx_dynamo",
                 "rnnexport.export.compile_server", "rnnexport.export.torchscript", "rnnexport.builder",
                 "rnnexport.usermodel", "rnnexport.ops", "torch.onnx", "onnxscript",
                 "torch.export._trace"]  # what torch.export.export imports at its first call (networkx, AOTAutograd)
    return list(dict.fromkeys([*exporting, *(validation_imports(runtimes) if validate else [])]))


def _export_or_failure(item: tuple[Any, str, dict[str, Any]]) -> ExportResult | ValidationFailed:
    spec, out_dir, options = item
    try:
        return export_spec(spec, out_dir, **options)
    except (ValidationFailed, WorkerDied) as exc:  # this artifact's failure; the others go on
        return exc


# Last: rnnexport.export.api (through rnnexport.export.model) imports names defined above.
# Re-exported with its full signature.
from rnnexport.export.api import export_model  # noqa: E402
