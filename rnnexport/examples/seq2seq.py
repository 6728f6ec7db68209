"""A GRU encoder and a one-step decoder (Embedding -> GRUCell -> Linear), exported separately
and run by a greedy decoding loop, the way translation/g2p models are deployed."""

from __future__ import annotations

from torch import Tensor, nn

VOCAB, HIDDEN = 30, 32
BOS, EOS = 1, 2


class Encoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, embed: int = 16, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)

    def forward(self, source: Tensor) -> tuple[Tensor, Tensor]:
        memory, h_n = self.gru(self.embedding(source))
        return memory, h_n[-1]


class Decoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, embed: int = 16, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.cell = nn.GRUCell(embed, hidden)
        self.output = nn.Linear(hidden, vocab)

    def forward(self, token: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.cell(self.embedding(token), hidden)
        return self.output(hidden), hidden
