"""A static student (model2vec-style): the mean of its tokens' vectors, then the MLP head. No token sees another,
so one forward is a table look-up and a mean: the fastest and smallest student."""

from __future__ import annotations

from torch import Tensor

from alembert.students.base import SmallConfig, SmallStudent, masked_mean


class StaticConfig(SmallConfig):
    model_type = "alembert-static"
    layers = 0

    def __init__(self, embedding_dim: int = 256, head_size: int = 256, **kwargs):
        super().__init__(embedding_dim=embedding_dim, head_size=head_size, **kwargs)


class StaticStudent(SmallStudent):
    config_class = StaticConfig

    def __init__(self, config: StaticConfig):
        super().__init__(config, config.embedding_dim)
        self.post_init()

    def encode(self, words: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(words, mask)
