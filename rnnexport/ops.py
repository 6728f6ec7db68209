"""The ``rnnexport::rnn`` custom op: nn.RNN as one opaque op for torch.export and ONNX.

Why: the torch.export-based ONNX exporter decomposes ``aten.rnn_tanh`` into a per-time-step
loop while tracing, which pins the sequence length to the example's and unrolls it into
MatMul/Tanh nodes (DESIGN.md, "Facts measured here"). Wrapping the recurrence in a
``torch.library.custom_op`` with a shape-only fake keeps it one node with symbolic batch and
seq; `onnx_translation` then emits one native ONNX ``RNN`` op per layer.

Importing this module registers the op. A ``model.pt2`` written by rnnexport contains it, so
``import rnnexport.ops`` must run before ``torch.export.load("model.pt2")`` in a fresh process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NativeRNN", "onnx_translation", "rnn"]


@torch.library.custom_op("rnnexport::rnn", mutates_args=())
def rnn(
    input: Tensor,
    h_0: Tensor,
    weights: list[Tensor],
    nonlinearity: str,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    has_biases: bool,
) -> tuple[Tensor, Tensor]:
    """Eval-mode Elman RNN, same math as ``nn.RNN.forward(input, h_0)``.

    `weights` is ``nn.RNN._flat_weights`` order: per layer and direction
    ``w_ih [H, I], w_hh [H, H] (, b_ih [H], b_hh [H])``.
    """
    kernel = torch.rnn_tanh if nonlinearity == "tanh" else torch.rnn_relu
    output, h_n = kernel(input, h_0, weights, has_biases, num_layers, 0.0, False, bidirectional, batch_first)
    return output, h_n


@rnn.register_fake
def _rnn_fake(input, h_0, weights, nonlinearity, hidden_size, num_layers, bidirectional, batch_first, has_biases):
    directions = 2 if bidirectional else 1
    output = input.new_empty((input.shape[0], input.shape[1], directions * hidden_size))
    return output, h_0.new_empty(h_0.shape)


class NativeRNN(torch.nn.Module):
    """Wraps an ``nn.RNN`` so that its forward is one `rnn` op; called as ``m(input, h_0)``.

    The weights stay the wrapped module's parameters (``rnn.weight_ih_l0`` ...), so exported
    programs carry them by their PyTorch names.
    """

    def __init__(self, rnn_module: torch.nn.RNN) -> None:
        super().__init__()
        self.rnn = rnn_module

    def forward(self, input: Tensor, h_0: Tensor) -> tuple[Tensor, Tensor]:
        m = self.rnn
        weights = [getattr(m, name) for name in m._flat_weights_names]
        return torch.ops.rnnexport.rnn(
            input, h_0, weights, m.nonlinearity, m.hidden_size, m.num_layers,
            m.bidirectional, m.batch_first, m.bias,
        )


def onnx_translation(
    input,
    h_0,
    weights: Sequence,
    nonlinearity: str,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    has_biases: bool,
):
    """onnxscript translation of `rnn`: one native ONNX ``RNN`` per layer.

    Layout where PyTorch meets ONNX (onnx ``RNN``, opset 14+):
    ``W = [D, H, I]`` stacks ``weight_ih_l{k}{,_reverse}``; ``R = [D, H, H]`` stacks
    ``weight_hh``; ``B = [D, 2H] = concat(b_ih, b_hh)``. ``Ht = f(Xt·Wᵀ + Ht-1·Rᵀ + Wb + Rb)``.
    ONNX ``Y`` is ``[S, D, B, H]``; PyTorch's output is ``[S, B, D*H]``: Transpose(0,2,1,3) then
    Reshape(0, 0, -1). ``Y_h`` is ``[D, B, H]``, the layer's slice of ``h_n``.
    """
    from onnxscript import opset18 as op

    directions = 2 if bidirectional else 1
    per_direction = 4 if has_biases else 2
    activation = {"tanh": "Tanh", "relu": "Relu"}[nonlinearity]
    x = op.Transpose(input, perm=[1, 0, 2]) if batch_first else input  # ONNX X is [S, B, I]
    h_n = []
    for layer in range(num_layers):
        w, r, b = [], [], []
        for direction in range(directions):
            start = (layer * directions + direction) * per_direction
            w_ih, w_hh, *biases = weights[start:start + per_direction]
            w.append(op.Unsqueeze(w_ih, [0]))
            r.append(op.Unsqueeze(w_hh, [0]))
            if has_biases:
                b.append(op.Unsqueeze(op.Concat(*biases, axis=0), [0]))
        layer_w = op.Concat(*w, axis=0) if directions > 1 else w[0]
        layer_r = op.Concat(*r, axis=0) if directions > 1 else r[0]
        layer_b = (op.Concat(*b, axis=0) if directions > 1 else b[0]) if has_biases else None
        layer_h0 = op.Slice(h_0, [layer * directions], [(layer + 1) * directions], [0])
        y, y_h = op.RNN(
            x, layer_w, layer_r, layer_b, None, layer_h0,
            activations=[activation] * directions,
            direction="bidirectional" if bidirectional else "forward",
            hidden_size=hidden_size,
        )
        x = op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), [0, 0, -1])
        h_n.append(y_h)
    output = op.Transpose(x, perm=[1, 0, 2]) if batch_first else x
    return output, (op.Concat(*h_n, axis=0) if num_layers > 1 else h_n[0])
