"""What the non-transformer students share: the config's common settings, the word table, the head, pooling.

Inputs are right-padded (what alembert's collate and the tokenizers produce); `attention_mask` marks the real
tokens, and no output depends on how much padding a batch has (tests/test_small_students.py checks this).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class SmallConfig(PretrainedConfig):
    """The settings every small student has: its vocabulary, word-vector width, head width and dropout.
    `num_hidden_layers` is the depth a summary reports (the LSTM or convolution layer; none for static)."""

    layers = 1

    def __init__(self, vocab_size: int = 30522, embedding_dim: int = 300, head_size: int = 400, dropout: float = 0.1,
                 pad_token_id: int = 0, **kwargs):
        self.vocab_size, self.embedding_dim, self.head_size, self.dropout = vocab_size, embedding_dim, head_size, dropout
        self.num_hidden_layers = kwargs.pop("num_hidden_layers", self.layers)
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class SmallStudent(PreTrainedModel):
    """Word table -> `encode` (one vector per sequence) -> ReLU MLP head (Tang et al.'s) -> logits."""

    base_model_prefix = "student"
    main_input_name = "input_ids"

    def __init__(self, config: SmallConfig, width: int):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Sequential(nn.Linear(width, config.head_size), nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.head_size, config.num_labels))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def encode(self, words: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_) -> SequenceClassifierOutput:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        words = self.dropout(self.embeddings(input_ids)) * mask.unsqueeze(-1).to(self.embeddings.weight.dtype)
        return SequenceClassifierOutput(logits=self.head(self.encode(words, mask)))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)


def masked_mean(states: Tensor, mask: Tensor) -> Tensor:
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_max(states: Tensor, mask: Tensor) -> Tensor:
    return states.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(states.dtype).min).amax(1)


def lengths_of(mask: Tensor) -> Tensor:
    return mask.long().sum(1).clamp_min(1)
