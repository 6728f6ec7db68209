"""The graph side of a model spec's export: the native recurrent ops an ONNX file holds
(`recurrent_ops`) and the check that every recurrent layer kept one (`check_native_ops`); which
dim each output axis follows, found by running the module (`find_output_axes`), and those names
given to the ONNX outputs' dynamic axes (`name_output_dims`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TYPE_CHECKING

from rnnexport.errors import ExportRejected
from rnnexport.export.dim_names import name_dims
from rnnexport.export.steps import writing
from rnnexport.userinputs import case_inputs

if TYPE_CHECKING:
    from rnnexport.modelspec import ModelSpec

__all__ = ["RECURRENT_OPS", "check_native_ops", "find_output_axes", "name_output_dims", "recurrent_ops"]

RECURRENT_OPS = ("RNN", "GRU", "LSTM")


def find_output_axes(spec: ModelSpec, module) -> dict[str, dict[int, str]]:
    """Which dim each output axis follows, found by running the module with one dim changed at
    a time: an axis that has the dim's size in both runs is named after it."""
    from rnnexport.usermodel import call_user_model

    base = {d.name: max(d.size, 2) for d in spec.dims}

    def shapes(sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
        outputs = call_user_model(module, spec, case_inputs(spec, spec.case(sizes)))
        return {name: value.shape for name, value in outputs.items()}

    before = shapes(base)
    axes: dict[str, dict[int, str]] = {name: {} for name in spec.output_names}
    for dim in spec.dims:
        bumped = {**base, dim.name: base[dim.name] + 1}
        after = shapes(bumped)
        old, new = spec.sizes_of(base), spec.sizes_of(bumped)
        moved = [d for d in old if old[d] != new[d]]  # the dim, and the dims derived from it
        for name in spec.output_names:
            for axis, (a, b) in enumerate(zip(before[name], after[name])):
                label = next((d for d in moved if a == old[d] and b == new[d]), None)
                if label and axis not in axes[name]:
                    axes[name][axis] = label
    return axes


def name_output_dims(stage: Path, output_axes: dict[str, dict[int, str]]) -> None:
    """`name_dims` for the outputs of the staged ``model.onnx``, whichever exporter wrote it."""
    import onnx

    model = onnx.load(str(stage / "model.onnx"))
    if name_dims(model, output_axes):
        with writing(stage, "model.onnx", (stage / "model.onnx").stat().st_size) as target:
            onnx.save(model, str(target))


def recurrent_ops(path: Path) -> list[dict[str, Any]]:
    """The native recurrent ops of an ONNX file (functions included): op, direction, hidden
    size and whether ``sequence_lens`` is fed."""
    import onnx

    model = onnx.load(str(path))
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    found = []
    for node in nodes:
        if node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            direction = attrs.get("direction", b"forward")
            activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
            found.append({"op": node.op_type, "direction": direction.decode() if isinstance(direction, bytes) else direction,
                          **({"activation": activations[0]} if node.op_type == "RNN" and activations else {}),
                          "hidden_size": attrs.get("hidden_size"),
                          "sequence_lens": len(node.input) > 4 and bool(node.input[4])})
    return found


def check_native_ops(spec: ModelSpec, layers, ops: list[dict[str, Any]], exporter: str) -> None:
    """Reject an ONNX graph with fewer native recurrent `ops` than the module's recurrent
    `layers` (`rnnexport.usermodel.recurrent_layers`) have layers: one was unrolled or lost."""
    expected = sum(m.num_layers for _, m in layers)
    if len(ops) < expected:
        names = ", ".join(f"{name} ({type(m).__name__}, {m.num_layers} layer{'s' * (m.num_layers > 1)})"
                          for name, m in layers)
        raise ExportRejected(f"{spec.name}: the {exporter} ONNX graph has {len(ops)} native recurrent ops, the module "
                             f"has {expected} recurrent layers ({names}): a layer was unrolled or lost; not installed")
