"""TorchScript export: ``model.pt``, called like the module: ``m(input, h_0) -> (output, h_n)``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.errors import UsageError
from rnnexport.export._capture import captured_messages
from rnnexport.inputs import Case, make_inputs
from rnnexport.spec import RNNSpec

if TYPE_CHECKING:
    import torch

__all__ = ["METHODS", "export_torchscript"]

METHODS = ("script", "trace")


def _signature_module(module: torch.nn.Module) -> torch.nn.Module:
    """Wrap the module so the saved program has one ``forward(input, h_0)``.

    ``torch.jit.script(nn.RNN)`` compiles its ``@overload``-ed forward into ``forward__0`` and
    ``forward__1`` and no ``forward``, which a reloaded module cannot be called through.
    """
    import torch
    from torch import Tensor

    class RecurrentModel(torch.nn.Module):
        def __init__(self, rnn: torch.nn.Module) -> None:
            super().__init__()
            self.rnn = rnn

        def forward(self, input: Tensor, h_0: Tensor) -> tuple[Tensor, Tensor]:
            output, h_n = self.rnn(input, h_0)
            return output, h_n

    return RecurrentModel(module).eval()


def export_torchscript(
    module: torch.nn.Module, spec: RNNSpec, path: Path, *, method: str = "script"
) -> list[str]:
    """Compile `module` with ``torch.jit.script`` (default) or ``torch.jit.trace`` and save it.

    ``torch.jit.save`` is byte-deterministic for the same module. Returns the warnings torch
    raised (TorchScript is deprecated in torch 2.13), recorded instead of printed.
    """
    import torch

    if method not in METHODS:
        raise UsageError(f"unknown TorchScript method {method!r}; valid: {', '.join(METHODS)}")
    module = _signature_module(module)
    with captured_messages() as messages:
        if method == "script":
            compiled = torch.jit.script(module)
        else:
            feeds = make_inputs(spec, Case(spec.batch_size, spec.seq_len, "random"))
            example = tuple(torch.from_numpy(feeds[name].copy()) for name in spec.input_names)
            compiled = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(compiled, str(path))
    return messages
