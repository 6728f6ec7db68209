"""ONNX through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).

Emits one native ONNX ``RNN``, ``GRU`` or ``LSTM`` op per layer. Batch and sequence axes are declared dynamic, and
``h_0`` is always a graph input: without both, the exporter bakes the example batch into an
``Expand`` (measured with torch 2.13).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.errors import ExportError
from rnnexport.export.capture import captured_messages

if TYPE_CHECKING:
    import torch

__all__ = ["export_onnx_legacy", "legacy_exporter_available"]


@functools.lru_cache(maxsize=1)
def legacy_exporter_available() -> bool:
    """Whether the installed torch still has the TorchScript-based ONNX exporter (looked up once)."""
    import torch

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        return False
    from rnnexport.export.torch_internals import torchscript_onnx_exporter_present

    return torchscript_onnx_exporter_present()


def export_onnx_legacy(module: torch.nn.Module, args: tuple, spec, path: Path, *, opset: int) -> list[str]:
    """Export `module` (called with `args`, as the spec's calling contract says) to `path`, the
    spec's named axes dynamic; returns the exporter's warnings, recorded once each.

    Raises:
        ExportError: ONNX cannot express the spec (an LSTM with ``proj_size``).
    """
    import torch

    if reason := spec.onnx_impossible():
        raise ExportError(f"{spec.name}: {reason}; model.pt and model.pt2 support it")
    with captured_messages() as messages, torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=list(spec.input_names),
                          output_names=list(spec.output_names),
                          dynamic_axes={name: axes for name, axes in spec.dynamic_axes().items() if axes},
                          opset_version=opset, do_constant_folding=True)
    return messages
