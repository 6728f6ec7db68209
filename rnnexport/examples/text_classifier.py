"""Embedding -> 2-layer bidirectional LSTM over padded batches with lengths -> masked mean-pool
-> Linear to 5 classes. The packed-sequence idiom (``pack_padded_sequence`` /
``pad_packed_sequence(total_length=...)``) is what users write; rnnexport exports it as native
``LSTM`` ops with ``sequence_lens``."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

VOCAB, CLASSES, KEYWORDS = 40, 5, 5


class TextClassifier(nn.Module):
    def __init__(self, vocab: int = VOCAB, embed: int = 16, hidden: int = 32, classes: int = CLASSES) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed, padding_idx=0)
        self.encoder = nn.LSTM(embed, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(2 * hidden, classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(tokens)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.encoder(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.size(1))
        mask = (torch.arange(tokens.size(1)).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2).to(states.dtype)
        pooled = (states * mask).sum(1) / lengths.unsqueeze(1).to(states.dtype)
        return self.classifier(pooled)


def synthetic_task(count: int, seed: int, max_len: int = 24) -> tuple[Tensor, Tensor, Tensor]:
    """Token sequences holding two different keywords (tokens 1..5) among noise (6..VOCAB-1),
    padded with 0; the label is the keyword that comes *first* (order matters, so a bag of
    words cannot solve it). Returns (tokens [N, max_len], lengths [N], labels [N])."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, max_len + 1, (count,), generator=g)
    tokens = torch.randint(KEYWORDS + 1, VOCAB, (count, max_len), generator=g)
    labels = torch.empty(count, dtype=torch.int64)
    for i in range(count):
        n = int(lengths[i])
        first, second = torch.randperm(KEYWORDS, generator=g)[:2] + 1
        a, b = sorted(torch.randperm(n, generator=g)[:2].tolist())
        tokens[i, a], tokens[i, b] = first, second
        tokens[i, n:] = 0
        labels[i] = first - 1
    return tokens, lengths, labels
