"""A BiLSTM student (Tang et al. 2019): one bidirectional LSTM layer over the word vectors; the last states of both
directions, concatenated, go to the MLP head.

The backward direction runs a forward LSTM over each sequence reversed within its own length, rather than
torch's bidirectional LSTM over the padded batch: that one would start the backward pass on the padding, so a
sequence's output would depend on its batch. (Packed sequences would avoid it too, but do not export to ONNX.)"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alembert.students.base import SmallConfig, SmallStudent, lengths_of


class BiLstmConfig(SmallConfig):
    model_type = "alembert-bilstm"

    def __init__(self, hidden_size: int = 300, **kwargs):
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class BiLstmStudent(SmallStudent):
    config_class = BiLstmConfig

    def __init__(self, config: BiLstmConfig):
        super().__init__(config, 2 * config.hidden_size)
        self.forward_lstm = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True)
        self.post_init()

    def encode(self, words: Tensor, mask: Tensor) -> Tensor:
        lengths = lengths_of(mask)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.config.hidden_size)
        forward_states, _ = self.forward_lstm(words)
        backward_states, _ = self.backward_lstm(reverse_within_length(words, lengths))
        return torch.cat([forward_states.gather(1, last), backward_states.gather(1, last)], dim=-1).squeeze(1)


def reverse_within_length(values: Tensor, lengths: Tensor) -> Tensor:
    """Each row's first `length` positions in reverse order; the padding after them stays where it is."""
    positions = torch.arange(values.shape[1], device=values.device).unsqueeze(0)
    flipped = lengths.unsqueeze(1) - 1 - positions
    order = torch.where(flipped >= 0, flipped, positions)
    return values.gather(1, order.unsqueeze(-1).expand_as(values))
