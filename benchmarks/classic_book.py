"""The book's model (深度学习框架PyTorch：入门与实践, chapter 9), reimplemented faithfully for the benchmarks.

Both the training and the generation benchmarks compare the project against this exact network.
"""
from __future__ import annotations

from torch import nn

LAYERS = 2


class ClassicPoetryModel(nn.Module):
    """The book's PoetryModel: seq-first LSTM, logits for every position, zero state when none is given."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, self.hidden_dim, num_layers=LAYERS)
        self.linear1 = nn.Linear(self.hidden_dim, vocab_size)

    def forward(self, input, hidden=None):
        seq_len, batch_size = input.size()
        if hidden is None:
            h_0 = input.data.new(LAYERS, batch_size, self.hidden_dim).fill_(0).float()
            c_0 = input.data.new(LAYERS, batch_size, self.hidden_dim).fill_(0).float()
        else:
            h_0, c_0 = hidden
        embeds = self.embeddings(input)
        output, hidden = self.lstm(embeds, (h_0, c_0))
        output = self.linear1(output.view(seq_len * batch_size, -1))
        return output, hidden
