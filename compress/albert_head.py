"""Refitting a sequence head ALBERT cannot express exactly.

ALBERT's sequence head is classifier(tanh(pooler(h_cls))). DistilBERT puts a ReLU (ELECTRA a GELU) where ALBERT
has tanh, and no stock ALBERT config changes that activation, so such a head has no exact ALBERT form. The
converter keeps the family's dense layer as ALBERT's pooler and refits the head on task rows: the classifier by
ridge least squares from the pooled tanh features to the original model's logits, then pooler and classifier
together by L-BFGS on the same squared error (kept only where it lowers the held-out error). A quarter of the rows are held out to measure it. Recovery
distillation, when the pass has it, trains the rest away; the history records the held-out logit error before
and after.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from alembert.errors import fail
from alembert.families import entry, family
from alembert.modeldir import MODEL_INPUTS

REFIT_ROWS = 4096  # task rows the refit reads (a quarter held out): several per pooler weight row at width 1024
REFIT_STEPS = 100  # L-BFGS iterations over pooler and classifier together
RIDGE = 1e-3  # relative to the mean feature energy: keeps the solve stable when rows are few or features collinear


def needs_refit(model: nn.Module, source) -> bool:
    """Whether `model` has a sequence head whose activation ALBERT's tanh pooler does not reproduce."""
    if source.head_activation == "tanh":
        return False
    heads = tuple(prefix for prefix, target in source.head.items() if target.startswith("albert.pooler."))
    return any(key.startswith(heads) for key in model.state_dict())


def refit_head(source: nn.Module, target: nn.Module, batches, *, activation: str) -> dict:
    """Fit `target`'s pooler and classifier so that its logits match `source`'s on up to REFIT_ROWS rows of `batches`."""
    name = family(source)
    if batches is None:
        raise fail(f"converting a {name} sequence model to ALBERT needs task data: its {activation} head has no exact "
                   "ALBERT form and is refitted on task rows", "run the pass with data (python -m compress with data.*, "
                   "or compress.passes in python -m distill)")
    cls, logits = _head_rows(source, target, batches)
    held = max(1, len(cls) // 4)
    fit_x, fit_y, test_x, test_y = cls[held:], logits[held:], cls[:held], logits[:held]
    head = nn.Sequential(target.albert.pooler, nn.Tanh(), target.classifier)  # ALBERT's head, its modules shared
    before = _relative_error(head, test_x, test_y)
    with torch.no_grad():
        weight, bias = ridge(torch.tanh(target.albert.pooler(fit_x)).double(), fit_y.double())
        target.classifier.weight.copy_(weight.float())
        target.classifier.bias.copy_(bias.float())
    least_squares = copy.deepcopy(head.state_dict()), _relative_error(head, test_x, test_y)
    _lbfgs(head, fit_x, fit_y)
    after = _relative_error(head, test_x, test_y)
    if after > least_squares[1]:  # L-BFGS fitted the fit rows at the held-out rows' cost: keep the linear solve
        head.load_state_dict(least_squares[0])
        after = least_squares[1]
    print(f"ALBERT conversion: the {name} sequence head has {activation} where ALBERT's pooler has tanh; it was refitted "
          f"on {len(fit_x)} task rows: held-out relative logit error {before:.4f} -> {after:.4f} ({held} rows)")
    return {"head_refit": {"activation": activation, "rows": len(fit_x), "held_out_rows": held,
                           "logit_error_before": round(before, 6), "logit_error_after": round(after, 6)}}


@torch.no_grad()
def _head_rows(source: nn.Module, target: nn.Module, batches) -> tuple[Tensor, Tensor]:
    """The converted model's [CLS] states and the original model's logits on up to REFIT_ROWS rows."""
    source.eval()
    target.eval()
    states, wanted = [], []
    for batch in batches:
        wanted.append(source(**_inputs(batch, entry(source).albert.token_types)).logits)
        states.append(target.albert(**_inputs(batch, True)).last_hidden_state[:, 0])
        if sum(len(rows) for rows in wanted) >= REFIT_ROWS:
            break
    return torch.cat(states)[:REFIT_ROWS], torch.cat(wanted)[:REFIT_ROWS]


def _lbfgs(head: nn.Module, inputs: Tensor, wanted: Tensor) -> None:
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=REFIT_STEPS, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (head(inputs) - wanted).pow(2).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    head.zero_grad(set_to_none=True)


def ridge(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(weight, bias) minimising ||features @ weight.T + bias - targets||² + λ||weight||², in float64."""
    mean_x, mean_y = features.mean(0), targets.mean(0)
    x, y = features - mean_x, targets - mean_y
    gram = x.T @ x
    penalty = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
    weight = torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ y).T
    return weight, mean_y - weight @ mean_x


def _inputs(batch: dict, token_types: bool) -> dict:
    """The batch's model inputs; segment ids only for a model that reads them (DistilBERT's forward has none)."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch and (token_types or key != "token_type_ids")}


@torch.no_grad()
def _relative_error(head: nn.Module, inputs: Tensor, wanted: Tensor) -> float:
    return float(torch.linalg.norm(head(inputs) - wanted) / torch.linalg.norm(wanted).clamp_min(1e-12))
