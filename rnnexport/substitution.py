"""Native recurrent ops inside a user's module, with the user's objects left as they are.

While `native_recurrence` is active, the ``forward`` of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``
(the class attribute, so subclasses that call ``super().forward`` or ``nn.LSTM.forward(self,
...)`` reach it too) computes the recurrence as one `rnnexport.ops` custom op instead of
``_VF.lstm`` & co. Nothing is copied or replaced: the module the user wrote is the one torch.export
traces, so ``self.rnn.flatten_parameters()``, ``self.rnn.num_layers``, a subclass's own methods and
hooks behave as in eager.

``pack_padded_sequence``/``pad_packed_sequence`` pass the padded batch and its lengths through
(`PaddedBatch`): packing sorts by data-dependent lengths, which torch.export cannot trace; the op
gets ``lengths`` (ONNX ``sequence_lens``), which has the packed semantics (outputs past each length
are 0, ``h_n`` is taken at each example's last step).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnexport.errors import ExportRejected
from rnnexport.ops import native_op

__all__ = ["RECURRENT_MODULES", "PaddedBatch", "native_recurrence"]

RECURRENT_MODULES = (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)


class PaddedBatch(PackedSequence):
    """What ``pack_padded_sequence`` returns while exporting: the padded batch (`data`, in the
    layout `batch_first` says) and its `lengths`. A `PackedSequence` to the user's code
    (``isinstance`` checks hold); its ``batch_sizes`` are the lengths, not packed batch sizes.
    `zero_padded`: every step past its example's length is 0 already (a recurrent op's output)."""

    def __new__(cls, data: Tensor, lengths: Tensor, batch_first: bool, zero_padded: bool = False) -> PaddedBatch:
        self = tuple.__new__(cls, (data, lengths, None, None))
        self.lengths, self.batch_first, self.zero_padded = lengths, batch_first, zero_padded
        return self


def _native_forward(self: torch.nn.RNNBase, input, hx=None):
    """``nn.RNN/LSTM/GRU.forward`` as one custom op: same arguments, same results."""
    lengths, batch_first = None, self.batch_first
    if isinstance(input, PaddedBatch):
        input, lengths, batch_first = input.data, input.lengths, input.batch_first
    elif isinstance(input, PackedSequence):
        raise ExportRejected(f"a {type(self).__name__} gets a PackedSequence built in a way rnnexport cannot follow "
                             "(only pack_padded_sequence is supported)")
    unbatched = input.dim() == 2
    if unbatched:  # as eager: a batch of one, squeezed again after
        input = input.unsqueeze(0 if batch_first else 1)
        hx = None if hx is None else tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
    output, state = _recurrence(self, input, hx, lengths, batch_first)
    if unbatched:
        output = output.squeeze(0 if batch_first else 1)
        state = tuple(s.squeeze(1) for s in state) if isinstance(state, tuple) else state.squeeze(1)
    if lengths is not None:
        output = PaddedBatch(output, lengths, batch_first, zero_padded=True)  # the op's packed semantics
    return output, state


def _recurrence(m: torch.nn.RNNBase, input: Tensor, hx, lengths: Tensor | None, batch_first: bool):
    if hx is None:  # zeros, as eager makes them
        batch = input.shape[0] if batch_first else input.shape[1]
        states = m.num_layers * (2 if m.bidirectional else 1)
        h_0 = input.new_zeros(states, batch, m.proj_size or m.hidden_size)  # proj_size: 0 but for a projected LSTM
        hx = (h_0, input.new_zeros(states, batch, m.hidden_size)) if m.mode == "LSTM" else h_0
    return native_op(m, input, hx, lengths, batch_first)


def _pack_as_padded(input, lengths, batch_first=False, enforce_sorted=True):
    return PaddedBatch(input, lengths if isinstance(lengths, Tensor) else torch.as_tensor(lengths), batch_first)


def _pad_from_padded(original, padded_to_longest: bool):
    def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
        if not isinstance(sequence, PaddedBatch):
            return original(sequence, batch_first, padding_value, total_length)
        if total_length is None and not padded_to_longest:
            raise ExportRejected(
                "pad_packed_sequence(...) without total_length: its output length is max(lengths), which depends "
                "on the data and cannot be a dynamic ONNX/torch.export dim; pass total_length=<the input's "
                "sequence length> (e.g. x.size(1)), or, if every batch is padded to its longest sequence, say so "
                "with reaches_max = true on the lengths input")
        data = sequence.data
        if sequence.batch_first != batch_first:
            data = data.transpose(0, 1)
        if sequence.zero_padded and padding_value == 0:
            return data, sequence.lengths
        steps = torch.arange(data.shape[1] if batch_first else data.shape[0])
        padding = steps[None, :] >= sequence.lengths[:, None]  # [B, S]
        mask = padding[:, :, None] if batch_first else padding.transpose(0, 1)[:, :, None]
        data = torch.where(mask, torch.full_like(data, padding_value), data)
        return data, sequence.lengths
    return pad_packed_sequence


@contextlib.contextmanager
def native_recurrence(module: torch.nn.Module, *, padded_to_longest: bool = False) -> Iterator[None]:
    """Within the block, every ``nn.RNN/LSTM/GRU`` computes its recurrence as one native op, and
    ``pack_padded_sequence``/``pad_packed_sequence`` (as ``torch.nn.utils.rnn`` and the module
    file of each of `module`'s classes bind them) pass `PaddedBatch` through. Everything is
    restored on exit. For exporting only: it changes classes process-wide while active.

    `padded_to_longest`: the spec says the longest sequence fills the padded length (lengths
    ``reaches_max``), so ``pad_packed_sequence`` without ``total_length`` gives the full length."""
    import torch.nn.utils.rnn as rnn_utils

    pack, pad = rnn_utils.pack_padded_sequence, rnn_utils.pad_packed_sequence
    replacements = {id(pack): _pack_as_padded, id(pad): _pad_from_padded(pad, padded_to_longest)}
    namespaces = {id(rnn_utils.__dict__): rnn_utils.__dict__}
    for child in module.modules():
        for cls in type(child).__mro__:
            owner = sys.modules.get(cls.__module__)
            if owner is not None and not owner.__name__.startswith("torch."):
                namespaces[id(owner.__dict__)] = owner.__dict__
    forwards = {cls: cls.__dict__["forward"] for cls in RECURRENT_MODULES}
    patched = [(namespace, key, value) for namespace in namespaces.values() for key, value in list(namespace.items())
               if id(value) in replacements and value in (pack, pad)]
    try:
        for cls in forwards:
            cls.forward = _native_forward
        for namespace, key, value in patched:
            namespace[key] = replacements[id(value)]
        yield
    finally:
        for cls, forward in forwards.items():
            cls.forward = forward
        for namespace, key, value in patched:
            namespace[key] = value
