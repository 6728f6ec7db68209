"""Custom ops ``rnnexport::rnn`` and ``rnnexport::lstm``: a whole recurrent module as one op.

Why: the torch.export-based ONNX exporter decomposes ``aten.rnn_tanh``/``lstm``/``gru`` into a
per-time-step loop while tracing, which pins the sequence length to the example's and unrolls
it into MatMul/Tanh nodes (README, "How the dynamo path works"). A ``torch.library.custom_op`` with
a shape-only fake keeps the recurrence one node with symbolic batch and seq; `onnx_translation`
then emits one native ONNX ``RNN``/``GRU``/``LSTM`` op per layer.

Importing this module registers the ops. A ``model.pt2`` written by rnnexport contains them,
so ``import rnnexport.ops`` must run before ``torch.export.load("model.pt2")`` in a fresh process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

__all__ = ["GATE_ORDER", "flat_weight_names", "lstm", "lstm_onnx_translation", "native_op", "onnx_translation",
           "rnn"]

# For each ONNX gate position, the PyTorch gate it takes (weights are stacked gate by gate).
# PyTorch LSTM: i, f, g, o; ONNX LSTM: i, o, f, c (c is PyTorch's g).
# PyTorch GRU: r, z, n; ONNX GRU: z, r, h (h is PyTorch's n; needs linear_before_reset=1).
GATE_ORDER = {"RNN": (0,), "GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}
_KERNELS = {"rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu, "gru": torch.gru, "lstm": torch.lstm}


def _run(mode: str, input: Tensor, hx, weights: list[Tensor], num_layers: int, bidirectional: bool,
         batch_first: bool, has_biases: bool, lengths: Tensor | None) -> tuple[Tensor, ...]:
    """Eval-mode recurrence, as ``nn.RNN/GRU/LSTM.forward`` computes it (packed if lengths)."""
    kernel = _KERNELS[mode]
    if lengths is None:
        output, *states = kernel(input, hx, weights, has_biases, num_layers, 0.0, False, bidirectional, batch_first)
        return (output, *states)
    packed = pack_padded_sequence(input, lengths.cpu(), batch_first=batch_first, enforce_sorted=False)
    order, restore = packed.sorted_indices, packed.unsorted_indices
    hx = [h.index_select(1, order) for h in hx] if mode == "lstm" else hx.index_select(1, order)
    data, *states = kernel(packed.data, packed.batch_sizes, hx, weights, has_biases, num_layers, 0.0, False,
                           bidirectional)
    total = input.shape[1] if batch_first else input.shape[0]
    output, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, order, restore),
                                    batch_first=batch_first, total_length=total)
    return (output, *(s.index_select(1, restore) for s in states))


@torch.library.custom_op("rnnexport::rnn", mutates_args=())
def rnn(
    input: Tensor,
    h_0: Tensor,
    weights: list[Tensor],
    mode: str,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    has_biases: bool,
    lengths: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Eval-mode Elman RNN (`mode` ``rnn_tanh``/``rnn_relu``) or GRU (``gru``).

    `weights` is ``_flat_weights`` order: per layer and direction ``w_ih, w_hh(, b_ih, b_hh)``.
    """
    output, h_n = _run(mode, input, h_0, weights, num_layers, bidirectional, batch_first, has_biases, lengths)
    return output, h_n


@rnn.register_fake
def _rnn_fake(input, h_0, weights, mode, hidden_size, num_layers, bidirectional, batch_first, has_biases, lengths):
    directions = 2 if bidirectional else 1
    return input.new_empty((input.shape[0], input.shape[1], directions * hidden_size)), h_0.new_empty(h_0.shape)


@torch.library.custom_op("rnnexport::lstm", mutates_args=())
def lstm(
    input: Tensor,
    h_0: Tensor,
    c_0: Tensor,
    weights: list[Tensor],
    hidden_size: int,
    proj_size: int,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    has_biases: bool,
    lengths: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Eval-mode LSTM; `weights` per layer and direction ``w_ih, w_hh(, b_ih, b_hh)(, w_hr)``."""
    output, h_n, c_n = _run("lstm", input, [h_0, c_0], weights, num_layers, bidirectional, batch_first,
                            has_biases, lengths)
    return output, h_n, c_n


@lstm.register_fake
def _lstm_fake(input, h_0, c_0, weights, hidden_size, proj_size, num_layers, bidirectional, batch_first,
               has_biases, lengths):
    directions = 2 if bidirectional else 1
    features = directions * (proj_size or hidden_size)
    return (input.new_empty((input.shape[0], input.shape[1], features)), h_0.new_empty(h_0.shape),
            c_0.new_empty(c_0.shape))


def flat_weight_names(module: torch.nn.RNNBase) -> list[str]:
    """The parameter names of `module` in ``_flat_weights`` order, from PyTorch's documented
    naming: per layer and direction ``weight_ih_l{k}{_reverse}``, ``weight_hh_l{k}{_reverse}``,
    then the biases ``bias_ih``/``bias_hh`` and an LSTM's projection ``weight_hr``."""
    names = []
    for layer in range(module.num_layers):
        for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
            kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
            kinds += ["weight_hr"] if getattr(module, "proj_size", 0) else []
            names += [f"{kind}_l{layer}{suffix}" for kind in kinds]
    return names


def native_op(m: torch.nn.RNNBase, input: Tensor, hx, lengths: Tensor | None, batch_first: bool):
    """What ``nn.RNN/GRU/LSTM.forward`` computes, as one `rnn`/`lstm` op on `m`'s weights:
    ``(output, h_n)``, an LSTM ``(output, (h_n, c_n))`` from ``hx = (h_0, c_0)``."""
    weights = [getattr(m, name) for name in flat_weight_names(m)]
    if m.mode == "LSTM":
        output, h_n, c_n = torch.ops.rnnexport.lstm(input, hx[0], hx[1], weights, m.hidden_size, m.proj_size,
                                                    m.num_layers, m.bidirectional, batch_first, m.bias, lengths)
        return output, (h_n, c_n)
    mode = "gru" if m.mode == "GRU" else ("rnn_tanh" if m.nonlinearity == "tanh" else "rnn_relu")
    return torch.ops.rnnexport.rnn(input, hx, weights, mode, m.hidden_size, m.num_layers, m.bidirectional,
                                   batch_first, m.bias, lengths)


def _gates(op, weight, onnx_op: str, hidden_size: int):
    """Reorder a PyTorch gate-stacked weight/bias (axis 0) into ONNX gate order."""
    order = GATE_ORDER[onnx_op]
    if order == tuple(range(len(order))):
        return weight
    chunks = [op.Slice(weight, [g * hidden_size], [(g + 1) * hidden_size], [0]) for g in order]
    return op.Concat(*chunks, axis=0)


def _translate(onnx_op: str, input, states: list, weights: Sequence, hidden_size: int, num_layers: int,
               bidirectional: bool, batch_first: bool, has_biases: bool, lengths, activation: str | None = None):
    """One native ONNX recurrent op per layer.

    Layout where PyTorch meets ONNX (``RNN``/``GRU``/``LSTM``, opset 14+), G gates:
    ``W = [D, G*H, I]`` stacks ``weight_ih_l{k}{,_reverse}`` with gates in ONNX order
    (`GATE_ORDER`); ``R = [D, G*H, H]`` likewise ``weight_hh``; ``B = [D, 2*G*H] =
    concat(b_ih, b_hh)``. ONNX ``Y`` is ``[S, D, B, H]``; PyTorch's output is ``[S, B, D*H]``:
    Transpose(0, 2, 1, 3) then Reshape(0, 0, -1). ``Y_h``/``Y_c`` are ``[D, B, H]``, the layer's
    slices of ``h_n``/``c_n``. ``lengths`` becomes ``sequence_lens`` (int32) for every layer.
    """
    from onnxscript import opset18 as op

    directions = 2 if bidirectional else 1
    per_direction = 4 if has_biases else 2
    x = op.Transpose(input, perm=[1, 0, 2]) if batch_first else input  # ONNX X is [S, B, I]
    sequence_lens = op.Cast(lengths, to=6) if lengths is not None else None  # 6: INT32
    finals: list[list] = [[] for _ in states]
    for layer in range(num_layers):
        w, r, b = [], [], []
        for direction in range(directions):
            start = (layer * directions + direction) * per_direction
            w_ih, w_hh, *biases = weights[start:start + per_direction]
            w.append(op.Unsqueeze(_gates(op, w_ih, onnx_op, hidden_size), [0]))
            r.append(op.Unsqueeze(_gates(op, w_hh, onnx_op, hidden_size), [0]))
            if has_biases:
                b_ih, b_hh = (_gates(op, bias, onnx_op, hidden_size) for bias in biases)
                b.append(op.Unsqueeze(op.Concat(b_ih, b_hh, axis=0), [0]))
        stack = (lambda parts: op.Concat(*parts, axis=0)) if directions > 1 else (lambda parts: parts[0])
        initial = [op.Slice(state, [layer * directions], [(layer + 1) * directions], [0]) for state in states]
        common = dict(direction="bidirectional" if bidirectional else "forward", hidden_size=hidden_size)
        bias = stack(b) if has_biases else None
        if onnx_op == "RNN":
            y, *final = op.RNN(x, stack(w), stack(r), bias, sequence_lens, initial[0],
                               activations=[activation] * directions, **common)
        elif onnx_op == "GRU":
            y, *final = op.GRU(x, stack(w), stack(r), bias, sequence_lens, initial[0], linear_before_reset=1, **common)
        else:
            y, *final = op.LSTM(x, stack(w), stack(r), bias, sequence_lens, initial[0], initial[1], **common)
        x = op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), [0, 0, -1])
        for collected, value in zip(finals, final):
            collected.append(value)
    output = op.Transpose(x, perm=[1, 0, 2]) if batch_first else x
    return (output, *(op.Concat(*f, axis=0) if num_layers > 1 else f[0] for f in finals))


def onnx_translation(input, h_0, weights, mode: str, hidden_size: int, num_layers: int, bidirectional: bool,
                     batch_first: bool, has_biases: bool, lengths=None):
    """onnxscript translation of `rnn`: native ``RNN`` (tanh/relu) or ``GRU`` ops."""
    if mode == "gru":
        return _translate("GRU", input, [h_0], weights, hidden_size, num_layers, bidirectional, batch_first,
                          has_biases, lengths)
    activation = {"rnn_tanh": "Tanh", "rnn_relu": "Relu"}[mode]
    return _translate("RNN", input, [h_0], weights, hidden_size, num_layers, bidirectional, batch_first,
                      has_biases, lengths, activation)


def lstm_onnx_translation(input, h_0, c_0, weights, hidden_size: int, proj_size: int, num_layers: int,
                          bidirectional: bool, batch_first: bool, has_biases: bool, lengths=None):
    """onnxscript translation of `lstm`: native ``LSTM`` ops (no projection: ONNX has none)."""
    if proj_size:
        raise ValueError("ONNX LSTM has no projection (proj_size > 0)")
    return _translate("LSTM", input, [h_0, c_0], weights, hidden_size, num_layers, bidirectional, batch_first,
                      has_biases, lengths)
