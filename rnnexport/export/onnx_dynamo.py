"""ONNX through the torch.export-based exporter, with native ``RNN``/``GRU``/``LSTM`` ops, plus
``model.pt2``.

torch's own torch.export path decomposes the recurrence into a per-step loop while tracing,
unrolling it and pinning the sequence length to the example's (upstream, for LSTM/GRU inside
larger models: https://github.com/pytorch/pytorch/issues/191855). Here each recurrent module
computes as one custom op while the module is exported once with ``torch.export`` (dynamic
dims; `rnnexport.export.program`), saved as ``model.pt2``, and that same program is translated
to ONNX with `rnnexport.ops.onnx_translation`. Per-node metadata
(source stack traces with absolute paths) is stripped from both files so that they are
byte-identical from any working directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.errors import ExportError
from rnnexport.export.capture import captured_messages
from rnnexport.export.dim_names import name_dims
from rnnexport.spec import RNNSpec

if TYPE_CHECKING:
    import torch

__all__ = ["export_onnx_dynamo", "require_onnxscript", "save_program", "strip_source_locations"]


def require_onnxscript() -> None:
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError(
            "the dynamo exporter needs the package 'onnxscript', which is not installed: "
            "pip install onnxscript (or use --exporter legacy)"
        )


def strip_source_locations(program: torch.export.ExportedProgram) -> None:
    """Drop each node's source locations: absolute paths would make the files depend on the
    checkout."""
    for node in program.graph.nodes:
        for key in ("stack_trace", "source_fn_stack", "nn_module_stack", "from_node"):
            node.meta.pop(key, None)


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write ``model.pt2``; reload with ``import rnnexport.ops`` then ``torch.export.load``.

    Serialized in memory, then written by Python: torch's C++ zip writer aborts the whole
    process (SIGABRT, exit 134) when the disk fills up under it, which no free-space check made
    beforehand can rule out (another process may fill the disk); Python's write raises OSError.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    Path(path).write_bytes(buffer.getbuffer())


def export_onnx_dynamo(program: torch.export.ExportedProgram, spec: RNNSpec, path: Path, *, opset: int) -> list[str]:
    """Translate `program` to ONNX at `path` with native RNN/GRU/LSTM ops; returns captured warnings."""
    require_onnxscript()
    if reason := spec.onnx_impossible():  # a model spec's LSTM projections fail in the translation instead
        raise ExportError(f"{spec.name}: {reason}; model.pt and model.pt2 support it")
    import onnx
    import torch

    import rnnexport.ops

    from rnnexport.export.torch_internals import reused_torchlib_registry

    with captured_messages() as messages, reused_torchlib_registry():
        onnx_program = torch.onnx.export(
            program,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            opset_version=opset,
            custom_translation_table={
                torch.ops.rnnexport.rnn.default: rnnexport.ops.onnx_translation,
                torch.ops.rnnexport.lstm.default: rnnexport.ops.lstm_onnx_translation,
            },
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    model = onnx_program.model_proto
    _make_deterministic(model)
    name_dims(model, spec.dynamic_axes())
    onnx.save(model, str(path))
    return messages


def _make_deterministic(model) -> None:
    """Strip per-node metadata and name the recurrent weights ``W_l{k}``, ``R_l{k}``, ``B_l{k}``."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    renames: dict[str, str] = {}
    initializers = {init.name for init in model.graph.initializer}
    rnn_nodes = [node for node in model.graph.node if node.op_type in ("RNN", "GRU", "LSTM")]
    for layer, node in enumerate(rnn_nodes):
        for slot, prefix in ((1, "W"), (2, "R"), (3, "B")):
            if slot < len(node.input) and node.input[slot] in initializers:
                renames[node.input[slot]] = f"{prefix}_l{layer}"
    for init in model.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    for value_info in model.graph.value_info:
        value_info.name = renames.get(value_info.name, value_info.name)
