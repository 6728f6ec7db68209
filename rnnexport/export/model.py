"""Export a model spec (a user's module): every nn.RNN/LSTM/GRU inside it becomes native ONNX
``RNN``/``GRU``/``LSTM`` ops with either exporter, the named dims stay dynamic in every format.

The steps, as `export_model_spec` runs them in a staging folder::

    build the module (weights from the spec; none there: a note)  ->  weights.safetensors
    TorchScript (script, else trace), compiled in the compile server while the rest exports  ->  model.pt
    torch.export on a copy with native recurrent ops  ->  model.pt2
    ONNX (legacy: torch.onnx.export of the module; dynamo: that same program translated)  ->  model.onnx
    count the native recurrent ops against the module's recurrent layers (fewer: rejected)
    golden.npz from the module  ->  manifest.json  ->  validate  ->  install

The ONNX graph's checks are `rnnexport.export.graph`'s; `export_model` (a module in memory,
no TOML) is `rnnexport.export.api`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.compare import Tolerance
from rnnexport.errors import ExportError, SpecError, UsageError, first_line
from rnnexport.export.steps import (ExportResult, check_exporter, check_memory_limits, chosen_variants, made_any,
                                    validate_staged, writing)
from rnnexport.export.graph import check_native_ops, find_output_axes, name_output_dims, recurrent_ops
from rnnexport.export.program import dynamic_shapes, native_program
from rnnexport.export.loadable import check_onnx
from rnnexport.formats import FormatPlan
from rnnexport.golden import write_npz
from rnnexport.manifest import MANIFEST, schema_version_of, write_json
from rnnexport.modelspec import RANDOM_WEIGHTS, ModelSpec
from rnnexport.staging import DEFAULT_LOCK_TIMEOUT, resolve_output, staged_folder
from rnnexport.userinputs import case_inputs
from rnnexport.verify import file_entry
from rnnexport.criteria import check_axes
from rnnexport.evaldata import evaluation_case, evaluation_data
from rnnexport.variants import record_variants, write_variants

__all__ = ["dynamic_shapes", "export_model_spec", "native_program", "recurrent_ops"]


def export_model_spec(
    spec: ModelSpec,
    out_dir: str | Path = "models",
    *,
    module=None,
    exporter: str | None = None,
    opset: int = 18,
    torchscript_method: str | None = None,
    validate: bool = True,
    runtimes: list[str] | None = None,
    tolerance: Tolerance | None = None,
    max_memory: int | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    formats: list[str] | str | None = None,
    variants: list[str] | str | None = None,
):
    """Export a model spec to ``out_dir/<name>/`` like `rnnexport.export.export_spec`.

    Args:
        module: The module itself (`export_model`); default: built from the spec.
        torchscript_method: ``script`` or ``trace``; default the spec's ``torchscript`` key, else
            script with a fallback to trace (recorded in the manifest with the reason).
        formats: Formats to make; default the spec's ``formats`` key, else all three with
            missing ones recorded (`rnnexport.formats`).
        variants: Deployment variants; default the spec's ``variants`` key (`rnnexport.variants`).
        Others: as `rnnexport.export.export_spec`.

    Raises:
        SpecError: the module does not import or build, or does not fit the spec.
        ExportRejected: a recurrent layer lost its native op, or a packed sequence cannot be kept.
        ExportError, UsageError, ValidationFailed: as `export_spec`.
    """
    from rnnexport.userimport import exits_refused
    from rnnexport.usermodel import build_user_module

    notes: list[str] = []
    exporter = check_exporter(exporter, opset, notes)
    method = torchscript_method or spec.torchscript
    if method not in (None, "script", "trace"):
        raise UsageError(f"unknown TorchScript method {method!r}; valid: script, trace")
    check_memory_limits(spec, validate, max_memory)
    variants = chosen_variants(spec, variants, FormatPlan.of(spec.name, formats if formats is not None else spec.formats),
                               notes)
    evaluation_case(spec)  # bad evaluation data: refused before anything is built or written
    rebuildable = module is None
    with exits_refused():  # the module's code runs here: an os._exit in it is an error, not exit 0
        if module is None:
            spec = _weights_chosen(spec, notes)
            module = build_user_module(spec)
        with _in_eval_mode(module):
            return _export_module(spec, module, out_dir, rebuildable, notes, exporter, opset, method, validate,
                                  runtimes, tolerance, max_memory, lock_timeout, formats, variants)


def _weights_chosen(spec: ModelSpec, notes: list[str]) -> ModelSpec:
    """A spec without ``weights`` exports the module's seeded initialization, as ``weights =
    "random"`` does, but says so in a note: a forgotten line would otherwise ship untrained
    weights that pass every check. The manifest records ``"random"`` either way."""
    if spec.weights is not None:
        return spec
    notes.append(f"{spec.name}: no weights in the spec: the module's seeded initialization (seed {spec.seed}) was "
                 f"exported; add weights = \"FILE\" (or weights = \"{RANDOM_WEIGHTS}\" to say this is intended)")
    return dataclasses.replace(spec, weights=RANDOM_WEIGHTS)


@contextlib.contextmanager
def _in_eval_mode(module):
    """`module` in eval mode within the block; every submodule's own mode restored after
    (``train(mode)`` would set a whole subtree): an export never changes the user's module."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _export_module(spec: ModelSpec, module, out_dir, rebuildable: bool, notes: list[str], exporter: str, opset: int,
                   method: str | None, validate: bool, runtimes, tolerance, max_memory, lock_timeout, formats,
                   variants: tuple[str, ...]):
    """The steps of `export_model_spec` (see the module docstring) on a module in eval mode."""
    from rnnexport.userinputs import check_deterministic
    from rnnexport.usermodel import recurrent_layers
    from rnnexport.userweights import check_state_dict

    if not rebuildable:  # a module from memory: its weights are checked as a file's are
        check_state_dict(spec.name, module, module.state_dict(), "of the module")
    check_deterministic(spec)
    documented = _check_outputs(spec, module)
    check_axes(spec.acceptance_criteria() if variants else (), {n: v.ndim for n, v in documented.items()}, spec.name,
               UsageError)
    output_axes = find_output_axes(spec, module)
    _check_output_memory(spec, documented, output_axes, validate, runtimes, max_memory)
    final = Path(out_dir) / spec.name
    plan = FormatPlan.of(spec.name, formats if formats is not None else spec.formats)
    result = ExportResult(path=final, exporter=exporter, notes=notes, formats=plan)
    target = resolve_output(final)
    layers = recurrent_layers(module)
    with staged_folder(final, lock_timeout=lock_timeout) as stage:
        warnings: dict[str, list[str]] = {}
        size = 2 * _write_weights(module, stage)  # a model file: the weights and its graph (as for RNN specs)
        compiler = _start_torchscript(spec, stage, method, size) if rebuildable and plan.wants("torchscript") else None
        with compiler or contextlib.nullcontext():  # it compiles while this process exports the rest
            program = _write_program(spec, module, stage, plan, exporter, size, warnings)
            warnings["onnx"] = plan.attempt(
                "onnx", lambda: _write_onnx(spec, module, program, stage, exporter, opset, size, output_axes, layers),
                cleanup=lambda: (stage / "model.onnx").unlink(missing_ok=True))
            outcome = plan.attempt("torchscript", lambda: _finish_torchscript(spec, module, stage, method, compiler,
                                                                              notes, size),
                                   cleanup=lambda: (stage / "model.pt").unlink(missing_ok=True))
            method, warnings["torchscript"] = outcome or (None, None)
        made_any(plan)
        ops = recurrent_ops(stage / "model.onnx") if plan.wants("onnx") else []
        golden = _write_golden(spec, module, stage)
        made = write_variants(spec.name, stage, variants, writing, notes)
        manifest = _manifest(spec, stage, plan, exporter, opset, method, warnings, ops, layers, golden, rebuildable,
                             tolerance, output_axes, made)
        if validate:
            result.report = validate_staged(spec, stage, final, target, manifest, runtimes, tolerance, max_memory,
                                            reference=module)
    return result


def _write_program(spec: ModelSpec, module, stage: Path, plan: FormatPlan, exporter: str, size: int,
                   warnings: dict[str, list[str]]):
    """The torch.export program (``model.pt2`` when wanted; the dynamo exporter's ONNX comes
    from it too), or None: not needed, or it failed and `plan` records why."""
    needed = [f for f in ("pt2", "onnx") if plan.wants(f) and (f == "pt2" or exporter == "dynamo")]
    if not needed:
        return None

    from rnnexport.export.onnx_dynamo import save_program

    def export() -> Any:
        program, warnings["torch.export"] = native_program(spec, module)
        if plan.wants("pt2"):
            with writing(stage, "model.pt2", size) as path:
                save_program(program, path)
        return program

    program = plan.attempt(needed[0], export, cleanup=lambda: (stage / "model.pt2").unlink(missing_ok=True))
    if program is None:
        for fmt in needed[1:]:
            plan.lose(fmt, f"{spec.name}: the dynamo ONNX exporter needs torch.export, which failed: "
                           f"{plan.missing[needed[0]]}")
    return program


def _check_outputs(spec: ModelSpec, module) -> dict[str, np.ndarray]:
    """Run the module once on the documented example: it must accept the inputs (dtypes) and
    return as many tensors as ``[outputs] names``. Returns the outputs by name."""
    from rnnexport.usermodel import call_user_model

    try:
        return call_user_model(module, spec, case_inputs(spec, spec.case(spec.documented)))
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"{spec.name}: the module rejects the spec's example inputs "
                        f"({', '.join(f'{t.name}: {t.dtype}{list(t.shape)}' for t in spec.inputs)}): "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _check_output_memory(spec: ModelSpec, documented: dict[str, np.ndarray], output_axes: dict[str, dict[int, str]],
                         validate: bool, runtimes: list[str] | None, max_memory: int | None) -> None:
    """Refuse, before golden data and validation, a case whose outputs would exceed the memory
    limit: each output as on the `documented` example, its axes that follow a dim
    (`output_axes`) sized for the case, held by every runtime that validates it at once (a
    module may return far more than it takes: ``[batch, seq, 100000]`` from token ids)."""
    from rnnexport.inputs import default_sweep
    from rnnexport.limits import check_memory
    from rnnexport.contract import TensorSpec
    from rnnexport.runtimes import resolve_runtimes

    outputs = tuple(TensorSpec(name, str(value.dtype), tuple(output_axes[name].get(axis, size)
                                                             for axis, size in enumerate(value.shape)))
                    for name, value in documented.items())
    runs = len(resolve_runtimes(runtimes)[0]) if validate else 1
    for case in dict.fromkeys([*spec.golden_cases(), *(default_sweep(spec) if validate else [])]):
        check_memory(f"{spec.name}: case {case.id}", spec.case_bytes(case, outputs, runs), max_memory)


def _write_weights(module, stage: Path) -> int:
    """``weights.safetensors``, with the mode of the other files (``save_file`` makes it 0600);
    returns its bytes."""
    from safetensors.torch import save_file

    from rnnexport.staging import umask

    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in state.values())
    with writing(stage, "weights.safetensors", size) as path:
        save_file(state, str(path))
        os.chmod(path, 0o666 & ~umask())
    return size


def _start_torchscript(spec: ModelSpec, stage: Path, method: str | None, estimate: int):
    """Start compiling ``model.pt`` (about `estimate` bytes) from ``weights.safetensors`` in
    the compile server."""
    from rnnexport.export.compile_server import start_compile

    request = {"kind": "model", "spec": spec.to_dict(), "weights": str(stage / "weights.safetensors"),
               "path": str(stage / "model.pt"), "method": method}
    with writing(stage, "model.pt", estimate):
        return start_compile(request, spec.name)


def _finish_torchscript(spec: ModelSpec, module, stage: Path, method: str | None, compiler,
                        notes: list[str], estimate: int) -> tuple[str, list[str]]:
    """``model.pt`` (about `estimate` bytes): the started `compiler`'s result, or (a module in
    memory, which may not be rebuildable elsewhere) compiled here. Script, or `method`; trace
    where scripting fails and no method was asked for. Returns the method used and torch's
    warnings."""
    from rnnexport.export.torchscript import compile_model_spec

    with writing(stage, "model.pt", None if compiler else estimate) as path:  # started: checked then
        if compiler is None:
            outcome = compile_model_spec(module, spec, path, method)
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


def golden_cases_of(spec: ModelSpec) -> list:
    """The cases stored in golden.npz: the spec's seeded golden cases and its evaluation data."""
    return [*spec.golden_cases(), *evaluation_case(spec)]


def _write_onnx(spec: ModelSpec, module, program, stage: Path, exporter: str, opset: int, size: int,
                output_axes: dict[str, dict[int, str]], layers) -> list[str]:
    """``model.onnx`` by `exporter`, its output dims named after the spec's, checked loadable
    and holding a native op for every recurrent layer. Returns torch's warnings."""
    import torch

    from rnnexport.export.capture import captured_messages
    from rnnexport.export.onnx_dynamo import export_onnx_dynamo
    from rnnexport.usermodel import example_args

    with writing(stage, "model.onnx", size) as path:
        try:
            if exporter == "legacy":
                with captured_messages() as messages, torch.no_grad():
                    torch.onnx.export(module, example_args(spec), str(path), dynamo=False,
                                      input_names=list(spec.input_names), output_names=list(spec.output_names),
                                      dynamic_axes={k: v for k, v in spec.dynamic_axes().items() if v},
                                      opset_version=opset, do_constant_folding=True)
            else:  # the same translation as an RNN spec's: the program already holds the native ops
                messages = export_onnx_dynamo(program, spec, path, opset=opset)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{spec.name}: the {exporter} ONNX exporter failed: {type(exc).__name__}: "
                              f"{first_line(exc, 400)}") from None
    check_onnx(path, spec.name)
    name_output_dims(stage, output_axes)
    check_native_ops(spec, layers, recurrent_ops(path), exporter)
    return messages




def _write_golden(spec: ModelSpec, module, stage: Path) -> dict[str, dict[str, Any]]:
    """golden.npz from `module`; returns each array's shape and dtype (for the manifest)."""
    from rnnexport.usermodel import call_user_model

    golden = {}
    for case in golden_cases_of(spec):
        feeds = case_inputs(spec, case)
        golden.update({f"{case.id}/{n}": v for n, v in feeds.items()})
        if case.data:
            golden.update({f"{case.id}/{n}": v for n, v in evaluation_data(spec)[2].items()})
        golden.update({f"{case.id}/{n}": v for n, v in call_user_model(module, spec, feeds).items()})
    with writing(stage, "golden.npz", sum(v.nbytes for v in golden.values())) as path:
        write_npz(path, golden)
    return {key: {"shape": list(v.shape), "dtype": str(v.dtype)} for key, v in golden.items()}


def _manifest(spec: ModelSpec, stage: Path, plan: FormatPlan, exporter: str, opset: int, method: str | None, warnings,
              ops, layers,
              golden: dict[str, dict[str, Any]], rebuildable: bool, tolerance: Tolerance | None,
              output_axes: dict[str, dict[int, str]], variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest (`rnnexport.artifacts.model_manifest`), written to ``stage/manifest.json``."""
    from safetensors.numpy import load_file

    from rnnexport.manifest import model_manifest
    from rnnexport.userimport import module_source
    from rnnexport.weightcheck import weights_record

    manifest = model_manifest(
        spec, {name: file_entry(stage / name) for name in [*plan.files(), "weights.safetensors", "golden.npz"]},
        formats=plan.manifest_fields(), exporter=exporter, opset=opset,
        torchscript_method=method, warnings=warnings, recurrent_ops=ops,
        recurrent_layers=[{"name": name, "module": type(m).__name__, "num_layers": m.num_layers,
                           "bidirectional": m.bidirectional, "batch_first": m.batch_first} for name, m in layers],
        golden=golden, module_source=module_source(spec, stage, rebuildable=rebuildable),
        tolerance=tolerance, output_axes=output_axes)
    # What --untrusted (no module imported) can check of weights.safetensors later.
    onnx_file = stage / "model.onnx" if "model.onnx" in plan.files() else None
    manifest["weights_check"] = weights_record(load_file(stage / "weights.safetensors"), onnx_file)
    if spec.inputs_fn:
        from rnnexport.userinputs import inputs_source

        manifest["inputs_source"] = inputs_source(spec, stage)
    record_variants(manifest, stage, variants, spec)
    manifest["schema_version"] = schema_version_of(manifest)  # 3 only where its fields are used
    with writing(stage, MANIFEST, 1 << 20) as path:
        write_json(path, manifest)
    return manifest
