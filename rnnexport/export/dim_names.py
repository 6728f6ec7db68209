"""The one renaming of an ONNX graph's dynamic axes to the contract's dim names, for both
exporters (`name_dims`)."""

from __future__ import annotations

import re

__all__ = ["name_dims"]


def name_dims(model, axes: dict[str, dict[int, str]]) -> bool:
    """Give the graph's inputs' and outputs' dynamic axes the names in `axes` (by value name, by
    axis) wherever those dims appear, value infos included; returns whether anything changed.

    The exporters name them otherwise: the legacy one an output's ``Gemmlogits_dim_0``,
    torch.export its own symbols (``s31``) when two ``Dim``s could be confused. A symbol inside an
    expression (``((s16//4)) + 1``) reads as its dim's name too.
    """
    graph = model.graph
    renames: dict[str, str] = {}
    for value in [*graph.input, *graph.output]:
        for axis, label in axes.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param and dim.dim_param != label:
                renames[dim.dim_param] = label
    symbols = {old: new for old, new in renames.items() if re.fullmatch(r"s\d+", old)}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
            elif dim.dim_param and symbols:
                dim.dim_param = re.sub(r"\bs\d+\b", lambda m: symbols.get(m[0], m[0]), dim.dim_param)
    return bool(renames)
