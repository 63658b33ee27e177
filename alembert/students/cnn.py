"""A TextCNN student (Kim 2014): convolutions of several widths over the word vectors, max-pooled over the real
tokens, then the MLP head. Padded positions hold zero vectors, as the convolution's own zero padding does, so an
output never depends on how far a batch is padded."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alembert.students.base import SmallConfig, SmallStudent, masked_max


class CnnConfig(SmallConfig):
    model_type = "alembert-cnn"

    def __init__(self, kernel_sizes: tuple[int, ...] | list[int] = (3, 4, 5), filters: int = 100, **kwargs):
        self.kernel_sizes, self.filters = list(kernel_sizes), filters
        super().__init__(**kwargs)


class CnnStudent(SmallStudent):
    config_class = CnnConfig

    def __init__(self, config: CnnConfig):
        super().__init__(config, config.filters * len(config.kernel_sizes))
        self.convolutions = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.filters, size) for size in config.kernel_sizes)
        self.post_init()

    def encode(self, words: Tensor, mask: Tensor) -> Tensor:
        channels = words.transpose(1, 2)
        pooled = []
        for convolution in self.convolutions:
            size = convolution.kernel_size[0]
            padded = F.pad(channels, ((size - 1) // 2, size // 2))  # "same" length, for odd and even widths alike
            pooled.append(masked_max(torch.relu(convolution(padded)).transpose(1, 2), mask))
        return torch.cat(pooled, dim=-1)
