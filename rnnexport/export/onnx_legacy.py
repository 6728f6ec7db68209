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
from rnnexport.spec import RNNSpec

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


def export_onnx_legacy(module: torch.nn.Module, spec: RNNSpec, path: Path, *, opset: int) -> list[str]:
    """Export `module` (behind the calling contract) to `path`; returns the exporter's warnings,
    recorded once each.

    Raises:
        ExportError: an LSTM with ``proj_size`` (the ONNX LSTM op has no projection).
    """
    import torch

    from rnnexport.builder import example_args, wrap

    if spec.proj_size:
        raise ExportError(
            f"{spec.name}: ONNX cannot express an LSTM with proj_size={spec.proj_size} (the ONNX LSTM op has "
            "no projection); model.pt and model.pt2 support it"
        )
    args = example_args(spec)
    with captured_messages() as messages, torch.no_grad():
        torch.onnx.export(
            wrap(module, spec),
            args,
            str(path),
            dynamo=False,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_axes=spec.dynamic_axes(),
            opset_version=opset,
            do_constant_folding=True,
        )
    return messages
