"""What a model spec (a user's module) does at each step of the one export pipeline
(`rnnexport.export.pipeline`): the module built from the spec (or given, `export_model`) in eval
mode, its code refused an ``os._exit``; checked against the spec before anything is written (it
takes the example inputs, returns ``[outputs] names``, is deterministic, its outputs fit the
memory limit); ``weights.safetensors``; every nn.RNN/LSTM/GRU inside it a native ONNX
``RNN``/``GRU``/``LSTM`` op with either exporter (`rnnexport.substitution`), a graph with fewer
refused; the output dims named after the spec's; evaluation data stored as a golden case.

The ONNX graph's checks are `rnnexport.export.graph`'s; `export_model` (a module in memory,
no TOML) is `rnnexport.export.api`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import SpecError, UsageError
from rnnexport.export.graph import check_native_ops, find_output_axes, name_output_dims, recurrent_ops
from rnnexport.export.program import dynamic_shapes, native_program
from rnnexport.modelspec import RANDOM_WEIGHTS, ModelSpec
from rnnexport.userinputs import case_inputs
from rnnexport.verify import file_entry
from rnnexport.criteria import check_axes
from rnnexport.evaldata import evaluation_case, evaluation_data

__all__ = ["ModelExporting", "dynamic_shapes", "native_program", "recurrent_ops"]


class ModelExporting:
    """A model spec's module as the pipeline exports it (see the module docstring)."""

    weights_file = "weights.safetensors"

    def __init__(self, spec: ModelSpec, module, rebuildable: bool) -> None:
        self.spec, self.module = spec, module
        self.contract_module = module  # called m(*inputs) in every format
        # A module from memory may not be rebuildable elsewhere: compiled and referenced here.
        self.rebuildable = rebuildable
        self.reference = module
        self.output_axes: dict[str, dict[int, str]] = {}
        self.ops: list[dict[str, Any]] = []  # the native recurrent ops of model.onnx (`check_graph`)

    @classmethod
    @contextlib.contextmanager
    def opened(cls, spec: ModelSpec, module, notes: list[str]) -> Iterator[ModelExporting]:
        """The module (built from the spec when `module` is None) in eval mode, its code's
        ``os._exit`` an error, not exit 0, within the block."""
        from rnnexport.userimport import exits_refused
        from rnnexport.usermodel import build_user_module

        evaluation_case(spec)  # bad evaluation data: refused before anything is built or written
        rebuildable = module is None
        with exits_refused():
            if module is None:
                spec = _weights_chosen(spec, notes)
                module = build_user_module(spec)
            with _in_eval_mode(module):
                yield cls(spec, module, rebuildable)

    def prepare(self, *, validate: bool, runtimes: list[str] | None, max_memory: int | None,
                variants: tuple[str, ...]) -> None:
        """Check the module against the spec before anything is written: its weights (a module
        from memory), determinism, outputs, the criteria's axes, the outputs' memory."""
        from rnnexport.userinputs import check_deterministic
        from rnnexport.usermodel import recurrent_layers
        from rnnexport.userweights import check_state_dict

        spec, module = self.spec, self.module
        if not self.rebuildable:  # a module from memory: its weights are checked as a file's are
            check_state_dict(spec.name, module, module.state_dict(), "of the module")
        check_deterministic(spec)
        documented = _check_outputs(spec, module)
        check_axes(spec.acceptance_criteria() if variants else (), {n: v.ndim for n, v in documented.items()},
                   spec.name, UsageError)
        self.output_axes = find_output_axes(spec, module)
        _check_output_memory(spec, documented, self.output_axes, validate, runtimes, max_memory)
        self.layers = recurrent_layers(module)

    def write_weights(self, stage: Path) -> int:
        """``weights.safetensors``, with the mode of the other files (``save_file`` makes it
        0600); returns its bytes."""
        from safetensors.torch import save_file

        from rnnexport.export.steps import writing
        from rnnexport.staging import umask

        state = {k: v.detach().contiguous().clone() for k, v in self.module.state_dict().items()}
        size = sum(v.numel() * v.element_size() for v in state.values())
        with writing(stage, self.weights_file, size) as path:
            save_file(state, str(path))
            os.chmod(path, 0o666 & ~umask())
        return size

    @staticmethod
    def compile_request(request: dict[str, Any]) -> dict[str, Any]:
        """Rebuild the module from ``weights.safetensors`` and compile it (in a compiling child)."""
        from rnnexport.modelspec_load import model_spec_from_dict
        from rnnexport.usermodel import build_user_module, load_weights

        spec = model_spec_from_dict(request["spec"])
        module = build_user_module(spec, load_weights(request["weights"]))
        return ModelExporting(spec, module, True).compile(Path(request["path"]), request["method"])

    def compile(self, path: Path, method: str | None) -> dict[str, Any]:
        """Script, or `method`; trace where scripting fails and no method was asked for."""
        from rnnexport.export.torchscript import compile_model_spec

        return compile_model_spec(self.module, self.spec, path, method)

    def arranged(self, named: dict[str, Any]) -> tuple:
        """One value per input, `named`, as the module takes them: ``m(*inputs)``."""
        return tuple(named[n] for n in self.spec.input_names)

    def example_args(self) -> tuple:
        from rnnexport.usermodel import example_args

        return example_args(self.spec)

    def check_graph(self, stage: Path, path: Path, exporter: str) -> None:
        """Output dims named after the spec's; a native op for every recurrent layer."""
        name_output_dims(stage, self.output_axes)
        self.ops = recurrent_ops(path)  # for the manifest too
        check_native_ops(self.spec, self.layers, self.ops, exporter)

    def golden_cases(self) -> list:
        """The spec's seeded golden cases and its evaluation data."""
        return [*self.spec.golden_cases(), *evaluation_case(self.spec)]

    def inputs(self, case) -> dict[str, np.ndarray]:
        return case_inputs(self.spec, case)

    def labels(self, case) -> dict[str, np.ndarray]:
        return dict(evaluation_data(self.spec)[2]) if case.data else {}

    def call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rnnexport.usermodel import call_user_model

        return call_user_model(self.module, self.spec, feeds)

    def manifest(self, stage: Path, files: list[str], golden: dict[str, Any], **common: Any) -> dict[str, Any]:
        """The manifest (`rnnexport.manifest.model_manifest`), with what ``--untrusted`` (no
        module imported) can check of the weights later and where ``inputs_fn`` came from."""
        from safetensors.numpy import load_file

        from rnnexport.manifest import model_manifest
        from rnnexport.userimport import module_source
        from rnnexport.weightcheck import weights_record

        spec = self.spec
        manifest = model_manifest(
            spec, {name: file_entry(stage / name) for name in files},
            recurrent_ops=self.ops if "model.onnx" in files else [],
            recurrent_layers=[{"name": name, "module": type(m).__name__, "num_layers": m.num_layers,
                               "bidirectional": m.bidirectional, "batch_first": m.batch_first}
                              for name, m in self.layers],
            golden=golden, module_source=module_source(spec, stage, rebuildable=self.rebuildable),
            output_axes=self.output_axes, **common)
        onnx_file = stage / "model.onnx" if "model.onnx" in files else None
        manifest["weights_check"] = weights_record(load_file(stage / self.weights_file), onnx_file)
        if spec.inputs_fn:
            from rnnexport.userinputs import inputs_source

            manifest["inputs_source"] = inputs_source(spec, stage)
        return manifest


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
