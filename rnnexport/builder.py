"""Spec -> seeded PyTorch module in eval mode.

The weights depend on the spec's seed alone (not on the global RNG state or on what ran
before), so the same spec always gives the same module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rnnexport.spec import RNNSpec

if TYPE_CHECKING:
    import torch

__all__ = ["build_module", "module_from_state_dict"]


def _empty_module(spec: RNNSpec) -> torch.nn.RNNBase:
    import torch

    return torch.nn.RNN(
        spec.input_size,
        spec.hidden_size,
        num_layers=spec.num_layers,
        nonlinearity=spec.nonlinearity,
        bias=spec.bias,
        batch_first=spec.batch_first,
        dropout=spec.dropout,
        bidirectional=spec.bidirectional,
    )


def build_module(spec: RNNSpec) -> torch.nn.RNNBase:
    """The module described by `spec`, with weights drawn from ``spec.seed``, in eval mode.

    Uses PyTorch's own initialization (uniform in ``±1/sqrt(H)``) under a forked RNG, so the
    global torch RNG is left untouched.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        module = _empty_module(spec)
    return module.eval()


def module_from_state_dict(spec: RNNSpec, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.RNNBase:
    """Rebuild the module from stored weights (no RNG involved), in eval mode."""
    module = _empty_module(spec)
    module.load_state_dict(dict(state_dict), strict=True)
    return module.eval()
