"""The checks and helpers of the export pipeline (`rnnexport.export.pipeline`), re-exported by
`rnnexport.export`: the exporter and memory checks before anything is written, the variants
chosen, the staged artifact validated (and kept aside when it fails), and writing a file into
the staging folder with a full disk made one clear error.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport.compare import Tolerance
from rnnexport.errors import ExportError, RNNExportError, UsageError, ValidationFailed
from rnnexport.formats import FormatPlan
from rnnexport.inputs import golden_cases
from rnnexport.manifest import MANIFEST, write_json
from rnnexport.staging import keep_rejected
from rnnexport.variants import parse_variants

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "ExportResult", "check_exporter", "check_memory_limits", "chosen_variants",
           "default_exporter", "exporting_class", "made_any", "validate_staged", "writing"]

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


def exporting_class(name: str) -> type:
    """The class that exports a kind of spec, by its name ``module:Class`` (``spec.pipeline``;
    a compile request's ``exporting``)."""
    import importlib

    module, _, cls = name.partition(":")
    return getattr(importlib.import_module(module), cls)


def default_exporter() -> tuple[str, str | None]:
    """``legacy`` while torch still has it, else ``dynamo``, with a note saying so."""
    from rnnexport.export.onnx_legacy import legacy_exporter_available

    if legacy_exporter_available():
        return "legacy", None
    return "dynamo", (
        "the TorchScript-based ONNX exporter is not in this torch; using --exporter dynamo"
    )


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
    from rnnexport.limits import check_memory, check_steps

    if (size := spec.weight_bytes()) is not None:  # an RNN's, from its configuration
        check_memory(f"{spec.name}: the weights", size, max_memory)
    for case in dict.fromkeys([*golden_cases(spec), *(default_sweep(spec) if validate else [])]):
        check_memory(f"{spec.name}: case {case.id}", spec.case_bytes(case), max_memory)
        check_steps(f"{spec.name}: case {case.id}", spec.case_steps(case))


def validate_staged(
    spec, stage: Path, final: Path, target: Path, manifest: dict[str, Any],
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
