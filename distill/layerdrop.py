"""Layer lists whose training-time structure is drawn per step: LayerDrop (Fan et al. 2019) and, in
distill/theseus.py, BERT-of-Theseus's module replacement.

Both swap the encoder's `nn.ModuleList` for a subclass while a stage trains. The encoders of the supported families
run `for layer in self.layer`, so the subclass decides which modules run at each step without touching the model's
code. Draws come from a generator seeded by (seed, step) alone, never from the global RNG, so:
- the pattern is a pure function of the seed and the step: the same on every rank of a torchrun job (no rank ends
  up with gradients for layers another skipped) and the same after a resume;
- dropout's random stream is the one an unwrapped run sees.
The engine calls `advance(model, step, progress)` before each training forward; in eval mode every layer runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from alembert.errors import fail
from alembert.families import layer_list, replace_layer_list


class SteppedLayers(nn.ModuleList):
    """A layer list told the training step before each forward; subclasses draw their structure from it.

    `salt` differs per subclass, so LayerDrop and module replacement in one stage draw independent streams.
    """

    salt = 0

    def __init__(self, modules=(), *, seed: int = 0):
        super().__init__(modules)
        self.seed, self.step = seed, 0

    def at_step(self, step: int, progress: float) -> None:
        """Called before each training forward; `progress` (0..1 over the stage) is for subclasses with schedules."""
        self.step = step

    def uniforms(self, count: int) -> Tensor:
        """`count` draws in [0, 1) for the current step, from (seed, step) alone."""
        # hash() of a tuple of ints is the same in every process (only str and bytes hashes are randomised)
        generator = torch.Generator().manual_seed(hash((self.salt, self.seed, self.step)) & (2**63 - 1))
        return torch.rand(count, generator=generator)


def advance(model: nn.Module, step: int, progress: float) -> None:
    """Tell every stepped layer list in `model` the step (0-based, per batch) and the stage's progress in [0, 1]."""
    for module in model.modules():
        if isinstance(module, SteppedLayers):
            module.at_step(step, progress)


class LayerDropLayers(SteppedLayers):
    """In training, each layer is skipped with probability `rate` at each step; in eval mode all run."""

    salt = 1

    def __init__(self, modules=(), *, rate: float = 0.0, seed: int = 0):
        super().__init__(modules, seed=seed)
        self.rate = rate

    def kept(self) -> list[int]:
        """The indices of the layers that run at the current step."""
        return [i for i, draw in enumerate(self.uniforms(len(self)).tolist()) if draw >= self.rate]

    def __iter__(self) -> Iterator[nn.Module]:
        if not self.training:
            return super().__iter__()
        layers = list(super().__iter__())
        return iter([layers[i] for i in self.kept()])


def check_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise fail(f"train.layerdrop={rate} is outside [0, 1)", "give the probability of skipping a layer, e.g. 0.2, or null")


def check_layerdrop(objective) -> None:
    """Layer-wise terms compare fixed layer pairs, and LayerDrop skips layers: the two are refused together."""
    if objective.reads_layers:
        raise fail("train.layerdrop is set, but this stage has layer-wise terms, whose layer pairs LayerDrop would skip",
                   "use LayerDrop with logit-level terms (hard, kd, logit_mse), or set train.layerdrop=null")


@contextmanager
def layer_drop(model: nn.Module, rate: float | None, seed: int):
    """While the block runs, `model` trains with LayerDrop at `rate` (None: unchanged); the plain list comes back after,
    holding the same (trained) layers. The state-dict keys are the plain model's, so checkpoints and the best-weights
    copy need nothing special."""
    if rate is None:
        yield model
        return
    check_rate(rate)
    plain = layer_list(model, "train.layerdrop")
    replace_layer_list(model, LayerDropLayers(list(plain), rate=rate, seed=seed))
    try:
        yield model
    finally:
        replace_layer_list(model, plain)  # the same layer modules, so the trained (or best) weights stay
