"""A streaming keyword spotter: a pointwise Conv1d front-end over [batch, features, time] ->
GRU with state input and output -> per-frame Linear. Deployed frame block by frame block, the
GRU state carried between calls (the streaming check)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class KeywordSpotter(nn.Module):
    def __init__(self, features: int = 13, channels: int = 16, hidden: int = 24, keywords: int = 4) -> None:
        super().__init__()
        # Kernel size 1: each frame's features alone, so chunked and whole runs agree exactly.
        self.frontend = nn.Conv1d(features, channels, kernel_size=1)
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, keywords)

    def forward(self, features: Tensor, h_0: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.relu(self.frontend(features)).transpose(1, 2)  # [batch, time, channels]
        frames, h_n = self.gru(x, h_0)
        return self.classifier(frames), h_n
