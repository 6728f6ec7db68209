"""A spec's module as a torch.export program: its named dims dynamic (`dynamic_shapes`), its
recurrent layers computing as native ops (`native_program`; `rnnexport.substitution`). The
dynamo ONNX exporter translates this program; ``model.pt2`` is it, saved. An RNN configuration's
module behind its calling contract (`rnnexport.builder.wrap`) goes the same way as a user's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rnnexport.errors import ExportError, ExportRejected, first_line

if TYPE_CHECKING:
    from rnnexport.modelspec import ModelSpec

__all__ = ["dynamic_shapes", "native_program"]


def dynamic_shapes(spec: ModelSpec) -> dict[str, Any]:
    import torch

    # A dim that another is derived from starts at its smallest validated size: below it
    # intermediate sizes (a convolution's (frames - 4)) reach 1, which torch.export specializes.
    roots = {d.root for d in spec.derived}
    dims = {d.name: torch.export.Dim(d.name, min=min((d.size, *d.sweep)) if d.name in roots else d.min)
            for d in spec.dims}
    dims.update({d.name: d.value(dims[d.root]) for d in spec.derived})  # torch.export's derived Dims
    return {t.name: {axis: dims[d] for axis, d in enumerate(t.shape) if isinstance(d, str)} or None
            for t in spec.inputs}


def native_program(exporting):
    """torch.export of an exporting's module (`contract_module`) itself, called with its
    `example_args`, its recurrent layers computing as native ops (`rnnexport.substitution`), the
    named dims dynamic (`dynamic_shapes`, as the module takes them: `arranged`); source locations
    stripped (they hold absolute paths)."""
    import torch

    from rnnexport.export.capture import captured_messages
    from rnnexport.export.onnx_dynamo import strip_source_locations
    from rnnexport.substitution import native_recurrence

    spec, module = exporting.spec, exporting.contract_module
    args, shapes = exporting.example_args(), exporting.arranged(dynamic_shapes(spec))
    try:
        longest = any(t.reaches_max for t in spec.inputs)
        with captured_messages() as messages, torch.no_grad(), native_recurrence(module, padded_to_longest=longest):
            program = torch.export.export(module, args, dynamic_shapes=shapes, strict=False)
    except ExportRejected as exc:
        raise ExportRejected(f"{spec.name}: {exc}") from None  # raised inside the module: it names no artifact
    except Exception as exc:
        first = first_line(exc, 400)
        low = re.search(r"Not all values of (\w+) = .*? in the specified range (\d+) <= \1", str(exc))
        if low:  # the module needs a larger smallest size than the spec's dim allows
            first += (f" (the module does not accept every {low[1]} >= {low[2]}: give [dims.{low[1]}] a 'min', "
                      "the smallest size it accepts)")
        raise ExportError(f"{spec.name}: torch.export cannot export the module: {type(exc).__name__}: {first}") from None
    strip_source_locations(program)
    return program, messages
