"""Spec -> seeded PyTorch module in eval mode, and the calling contract every artifact keeps.

The weights depend on the spec's seed alone (not on the global RNG state or on what ran
before), so the same spec always gives the same module.

`wrap` puts the module behind the artifact calling contract (docs/artifacts.md)::

    RNN, GRU:  m(input, h_0[, lengths]) -> (output, h_n)
    LSTM:      m(input, (h_0, c_0)[, lengths]) -> (output, (h_n, c_n))

With ``lengths`` (variable-length specs) the wrapper runs ``pack_padded_sequence(...,
enforce_sorted=False)`` and ``pad_packed_sequence(..., total_length=seq)``: outputs past each
example's length are 0 and ``h_n`` is taken at its last valid step. The eager reference,
``model.pt`` and ``model.pt2`` are all called through this contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import warnings
from collections.abc import Mapping
import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

if TYPE_CHECKING:
    from rnnexport.spec import RNNSpec


__all__ = ["build_module", "call_model", "contract_args", "example_args", "module_from_state_dict", "wrap"]


def _empty_module(spec: RNNSpec) -> torch.nn.RNNBase:
    with warnings.catch_warnings():
        # "dropout ... expects num_layers greater than 1": exported modules are in eval mode,
        # where dropout is the identity whatever the layer count.
        warnings.filterwarnings("ignore", message="dropout option adds dropout", category=UserWarning)
        return _construct(spec)


def _construct(spec: RNNSpec) -> torch.nn.RNNBase:
    common = dict(num_layers=spec.num_layers, bias=spec.bias, batch_first=spec.batch_first,
                  dropout=spec.dropout, bidirectional=spec.bidirectional)
    if spec.cell == "lstm":
        return torch.nn.LSTM(spec.input_size, spec.hidden_size, proj_size=spec.proj_size, **common)
    if spec.cell == "gru":
        return torch.nn.GRU(spec.input_size, spec.hidden_size, **common)
    return torch.nn.RNN(spec.input_size, spec.hidden_size, nonlinearity=spec.nonlinearity, **common)


def build_module(spec: RNNSpec) -> torch.nn.RNNBase:
    """The module described by `spec`, with weights drawn from ``spec.seed``, in eval mode.

    Uses PyTorch's own initialization (uniform in ``±1/sqrt(H)``) under a forked RNG, so the
    global torch RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        module = _empty_module(spec)
    return module.eval()


def module_from_state_dict(spec: RNNSpec, state_dict: Mapping[str, Tensor]) -> torch.nn.RNNBase:
    """Rebuild the module from stored weights (no RNG involved), in eval mode."""
    module = _empty_module(spec)
    module.load_state_dict(dict(state_dict), strict=True)
    return module.eval()


class Recurrent(torch.nn.Module):
    """``m(input, h_0) -> (output, h_n)`` for RNN and GRU."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, input: Tensor, h_0: Tensor) -> tuple[Tensor, Tensor]:
        output, h_n = self.rnn(input, h_0)
        return output, h_n


class RecurrentLSTM(torch.nn.Module):
    """``m(input, (h_0, c_0)) -> (output, (h_n, c_n))``."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        output, (h_n, c_n) = self.rnn(input, hx)
        return output, (h_n, c_n)


class PackedRecurrent(torch.nn.Module):
    """``m(input, h_0, lengths) -> (output, h_n)`` with packed-sequence semantics."""

    def __init__(self, rnn: torch.nn.Module, batch_first: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.batch_first = batch_first

    def forward(self, input: Tensor, h_0: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        packed = pack_padded_sequence(input, lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False)
        output, h_n = self.rnn(packed, h_0)
        total = input.size(1) if self.batch_first else input.size(0)
        padded, _ = pad_packed_sequence(output, batch_first=self.batch_first, total_length=total)
        return padded, h_n


class PackedRecurrentLSTM(torch.nn.Module):
    """``m(input, (h_0, c_0), lengths) -> (output, (h_n, c_n))`` with packed-sequence semantics."""

    def __init__(self, rnn: torch.nn.Module, batch_first: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.batch_first = batch_first

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        packed = pack_padded_sequence(input, lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False)
        output, (h_n, c_n) = self.rnn(packed, hx)
        total = input.size(1) if self.batch_first else input.size(0)
        padded, _ = pad_packed_sequence(output, batch_first=self.batch_first, total_length=total)
        return padded, (h_n, c_n)


def wrap(module: torch.nn.Module, spec: RNNSpec) -> torch.nn.Module:
    """`module` behind the artifact calling contract of `spec` (see the module docstring)."""
    if spec.variable_length:
        cls = PackedRecurrentLSTM if spec.cell == "lstm" else PackedRecurrent
        return cls(module, spec.batch_first).eval()
    return (RecurrentLSTM if spec.cell == "lstm" else Recurrent)(module).eval()


def arranged(spec: RNNSpec, named: Mapping[str, Any]) -> tuple:
    """One value per graph input, `named`, arranged as the calling contract's positional
    arguments: ``(input, h_0 | (h_0, c_0)[, lengths])``."""
    state = (named["h_0"], named["c_0"]) if spec.cell == "lstm" else named["h_0"]
    return (named["input"], state, *((named["lengths"],) if spec.variable_length else ()))


def contract_args(spec: RNNSpec, feeds: Mapping[str, np.ndarray | Tensor]) -> tuple:
    """Positional arguments of the calling contract, built from named graph inputs."""
    return arranged(spec, {name: value if isinstance(value, Tensor) else torch.from_numpy(np.array(value))
                           for name, value in feeds.items() if name in spec.input_names})


def example_args(spec: RNNSpec) -> tuple:
    """Contract arguments for tracing/exporting: the documented shape, at least 2 x 2.

    Tracers and torch.export treat dimensions of size 1 (and 0) as constants, so a 1 x 1
    example would pin batch or seq.
    """
    from rnnexport.inputs import Case, make_inputs

    feeds = make_inputs(spec, Case.rnn(max(spec.batch_size, 2), max(spec.seq_len, 2), "random"))
    return contract_args(spec, {name: value.copy() for name, value in feeds.items()})


def call_model(model, spec: RNNSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call a contract-keeping model (eager, TorchScript or torch.export) on named feeds and
    return named outputs (``output``, ``h_n``[, ``c_n``]) as numpy arrays."""
    with torch.no_grad():
        output, state = model(*contract_args(spec, feeds))
    states = state if spec.cell == "lstm" else (state,)
    return {"output": output.numpy(), **{f"{s}_n": t.numpy() for s, t in zip(spec.state_names, states)}}
