"""`rnnexport.substitution` in eager mode: what a module computes while its recurrent layers are
native ops is what it computes without (the export tests prove the exported files; these the
pieces that decide the graph's shape)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnexport.substitution import native_recurrence


class Padding(nn.Module):
    """Packs, runs a GRU over the packed batch or not, and pads it again with `padding_value`."""

    def __init__(self, recurrent: bool, padding_value: float) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 3)
        self.recurrent, self.padding_value = recurrent, padding_value

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out = self.gru(packed)[0] if self.recurrent else packed
        return pad_packed_sequence(out, padding_value=self.padding_value, total_length=x.size(0))[0]


@pytest.mark.parametrize("recurrent, padding_value", [(True, 0.0), (True, -1.0), (False, 0.0)],
                         ids=["op-output-zero-padded", "op-output-padded-with-minus-one", "input-padded"])
def test_padding_past_each_length_is_what_eager_gives(recurrent, padding_value):
    """The recurrent op's output is 0 past each length already, so padding it with 0 adds no
    mask to the graph; any other padding, or an input that went through no op, is masked."""
    module = Padding(recurrent, padding_value).eval()
    x, lengths = torch.randn(6, 4, 3), torch.tensor([6, 2, 4, 1])
    with torch.no_grad():
        expected = module(x, lengths)
        with native_recurrence(module):
            got = module(x, lengths)
    torch.testing.assert_close(got, expected)
