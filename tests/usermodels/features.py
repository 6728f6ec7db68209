"""Users' own modules for the feature matrix of tests/export/test_user_models.py: each one a
thing people deploy, around nn.RNN/LSTM/GRU layers and cells."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Tagger(nn.Module):
    """Int token ids and a float input; three outputs; a GRU in a nested block."""

    def __init__(self, vocab: int = 20, hidden: int = 8) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 6)
        self.block = nn.ModuleDict({"inner": nn.Sequential(nn.Linear(7, 6), nn.Tanh())})
        self.encoder = nn.ModuleList([nn.GRU(6, hidden, batch_first=True)])
        self.tags = nn.Linear(hidden, 3)

    def forward(self, tokens: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.cat([self.embedding(tokens), scale.unsqueeze(2)], dim=2)
        out, h_n = self.encoder[0](self.block["inner"](x))
        return self.tags(out), h_n, out.mean(1)


class StatefulLSTM(nn.Module):
    """An LSTM whose (h, c) state goes in and comes out, seq-first, 2 layers."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2)
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor, h_0: Tensor, c_0: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, (h_n, c_n) = self.lstm(x, (h_0, c_0))
        return self.head(out), (h_n, c_n)


class TwoRecurrent(nn.Module):
    """Two recurrent layers in one model: a bidirectional GRU, then a 2-layer RNN (relu)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.GRU(3, 5, bidirectional=True, batch_first=True)
        self.second = nn.RNN(10, 4, num_layers=2, nonlinearity="relu", batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.first(x)
        z, _ = self.second(y)
        return z


class PackedGRU(nn.Module):
    """Packs padded sequences itself (seq-first, a GRU with a given initial state)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, bidirectional=True)

    def forward(self, x: Tensor, lengths: Tensor, h_0: Tensor) -> tuple[Tensor, Tensor]:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, h_n = self.gru(packed, h_0)
        out, _ = pad_packed_sequence(out, total_length=x.size(0))
        return out, h_n


class PackedNoTotalLength(nn.Module):
    """pad_packed_sequence without total_length: the output length is max(lengths)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return pad_packed_sequence(out, batch_first=True)[0]


class CellStep(nn.Module):
    """One step of an LSTMCell and an RNNCell: a decoder step, state in and out."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 6)
        self.post = nn.RNNCell(6, 5)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, c = self.cell(x, (h, c))
        return self.post(h), h, c


def make_tagger(vocab: int = 20) -> nn.Module:
    """A factory function (ATTR may be a callable returning an nn.Module)."""
    return Tagger(vocab=vocab)


def not_a_module() -> int:
    return 3


class UnusedLayer(nn.Module):
    """Holds an LSTM that forward() never calls: the graph has fewer recurrent ops than the module."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.spare = nn.LSTM(3, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.gru(x)[0]


class MaskedIds(nn.Module):
    """int32 ids, a bool mask and a float16 scale: the other input dtypes of a model spec."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.gru = nn.GRU(4, 5, batch_first=True)

    def forward(self, ids: Tensor, mask: Tensor, scale: Tensor) -> Tensor:
        out, _ = self.gru(self.embedding(ids))
        pooled = (out * mask.unsqueeze(2).to(out.dtype)).sum(1)
        return pooled * scale.float().unsqueeze(1)


class FlattenBiLSTM(nn.Module):
    """OCR-style head: ``self.rnn.flatten_parameters()`` in forward (cuDNN idiom), then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(5, 6, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        self.rnn.flatten_parameters()
        recurrent, _ = self.rnn(x)
        return self.linear(recurrent)


class StackedGRU(nn.GRU):
    """A GRU subclass with its own method, building h_0 from the layer's attributes."""

    def init_hidden_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size)


class InitHidden(nn.Module):
    """Reads ``num_layers``/``hidden_size`` of its recurrent layer and calls its subclass method."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = StackedGRU(3, 5, num_layers=2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        h_0 = self.gru.init_hidden_state(x.size(0), x) + 0.1 * self.gru.num_layers / self.gru.hidden_size
        out, _ = self.gru(x, h_0)
        return out


class PackingLSTM(nn.LSTM):
    """An nn.LSTM subclass that packs itself: ``forward(x, hx, lengths)`` packs, calls
    ``super().forward`` and pads again (as time-series libraries write it)."""

    def forward(self, x: Tensor, hx=None, lengths: Tensor | None = None):  # type: ignore[override]
        if lengths is None:
            return super().forward(x, hx)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False)
        out, state = super().forward(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=x.size(1 if self.batch_first else 0))
        return out, state


class Forecaster(nn.Module):
    """Encodes padded series of different lengths with a `PackingLSTM`."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = PackingLSTM(2, 4, num_layers=2, batch_first=True)
        self.head = nn.Linear(4, 1)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out, (h_n, _) = self.lstm(x, lengths=lengths)
        return self.head(out), h_n


class SortedPacking(nn.Module):
    """Packs with ``enforce_sorted=True`` (the default): the lengths must come sorted, longest first."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.lstm(pack_padded_sequence(x, lengths, batch_first=True))
        return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]


class TiedLengths(nn.Module):
    """A vocoder's contract: ``waveform`` has (frames - 4) * 4 samples for ``frames`` conditioning
    frames (a kernel-5 conv without padding, then each frame repeated 4 times)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 2, kernel_size=5)
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, waveform: Tensor, features: Tensor) -> Tensor:
        cond = self.conv(features).repeat_interleave(4, dim=2)  # [B, 2, samples]
        out, _ = self.gru(torch.cat([waveform, cond], dim=1).transpose(1, 2))
        return out


class MaskedGRU(nn.Module):
    """Takes lengths and the mask they imply: inputs seeded at random cannot agree with each other."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        out, _ = self.gru(x)
        return (out * mask.unsqueeze(2)).sum(1) / lengths.unsqueeze(1).to(out.dtype)


def masked_inputs(sizes: dict, seed: int) -> dict:
    """`inputs_fn` of MaskedGRU: lengths in [1, seq] and the mask that matches them."""
    import numpy as np

    rng = np.random.default_rng([seed, sizes["batch"], sizes["seq"]])
    lengths = rng.integers(1, sizes["seq"] + 1, size=sizes["batch"])
    mask = (np.arange(sizes["seq"])[None, :] < lengths[:, None]).astype(np.float32)
    x = rng.standard_normal((sizes["batch"], sizes["seq"], 3)).astype(np.float32)
    return {"x": x, "lengths": lengths.astype(np.int64), "mask": mask}
