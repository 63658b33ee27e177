"""The Task interface every task module implements (see alembert/tasks/__init__.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alembert import demo
from alembert.tables import read_table


def soft_targets(student_logits: Tensor, teacher_logits: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
    """Hinton's KL(teacher_T || student_T), averaged over the batch (over tokens, for (tokens, vocab) rows), times T²
    so gradients keep their size across T."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2 if scale_by_t2 else kl


class TokenOutputs:
    """Gathering, trimming and padding for tasks with one output row per token (token tags, span logits)."""

    def gather(self, batches: list[Tensor], pad_value: float) -> Tensor:
        width = max(batch.shape[1] for batch in batches)
        return torch.cat([pad_to(batch, width, pad_value) for batch in batches])

    def trim(self, outputs: Tensor, attention_mask: Tensor) -> list[Tensor]:
        lengths = attention_mask.sum(-1).tolist()
        return [row[: int(length)] for row, length in zip(outputs, lengths)]

    def pad(self, rows: list[Tensor], width: int) -> Tensor:
        return torch.stack([pad_to(row.unsqueeze(0), width, 0.0)[0] for row in rows])

    def stand_in_label(self):
        return None  # word tags and answer spans: an unlabelled text has no words or context to align


def pad_to(batch: Tensor, width: int, value: float) -> Tensor:
    """`batch` ([rows, tokens, ...]) padded with `value` to `width` tokens."""
    missing = width - batch.shape[1]
    if missing <= 0:
        return batch
    padding = [0, 0] * (batch.dim() - 2) + [0, missing]
    return F.pad(batch, padding, value=value)


def make_collate(pad_token_id: int, task: Task):
    """Pad a list of encoded rows to the longest row of the batch; the task collates its labels."""

    def collate(rows: list[dict]) -> dict[str, Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key, pad in (("input_ids", pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] + [pad] * (width - len(r[key])) for r in rows], dtype=torch.long)
        batch["labels"] = task.collate_labels([r["labels"] for r in rows], width)
        batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        return batch

    return collate


@dataclass(frozen=True)
class Task:
    name: str  # data.task_type picks it
    problem_type: str  # what transformers writes to config.json for it
    decoder: str | None  # the torch-free output decoder of the ONNX runtime (alembert.decoding); None: not deployable
    primary_metric: str  # the dev metric that selects epochs and models (larger is better)
    summary_columns: tuple[str, ...]  # the metric columns of a run's summary table
    label_dtype: torch.dtype

    @property
    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def output_logits(self, outputs) -> Tensor:
        """What hard_loss, metrics and drift checks read from a forward's output (a span task stacks its start and
        end logits here, as the runtime stacks the graph's outputs: alembert.decoding.joined)."""
        return outputs.logits

    def output_tensors(self, outputs) -> tuple[Tensor, ...]:
        """The ONNX graph's outputs, in the order `onnx_outputs` names them."""
        return (outputs.logits,)

    def manifest_fields(self, data_config) -> dict:
        """What the torch-free runtime must know of the data settings (a span task's window stride)."""
        return {}

    def onnx_outputs(self) -> dict[str, dict[int, str]]:
        """Output names and their dynamic axes."""
        return {"logits": {0: "batch"}}

    def int8_metric_drop(self) -> float:
        """The most the primary metric may fall from the fp32 graph to an int8 one (a fraction: 0.02 = 2 points) before
        the export refuses the int8 variant; the export's tolerances.int8_metric_drop overrides it."""
        return 0.02

    def augmentable(self) -> bool:
        """Whether TinyBERT's word-replacement augmentation keeps labels valid: a sequence label survives a
        replaced word; word tags and answer offsets would not."""
        return True

    def one_output_per_text(self) -> bool:
        """Whether the model gives one output per text whatever its tokens, so that a teacher and a student with
        different tokenizers can be compared output to output (per-token and per-span outputs cannot)."""
        return True

    def stand_in_label(self):
        """The label an unlabelled example (data.transfer) carries, never read: such a transfer set takes soft
        targets only. None where the task takes no unlabelled examples."""
        return None

    def int8_logit_bound(self) -> float:
        """The coarse max |logit difference| an int8 graph may show before the export calls it broken."""
        return 1.0

    # --- data: reading, encoding, collating (sequence-level defaults; a token or span task overrides them) ---

    def read_file(self, path, config) -> list[tuple]:
        """(text, text_pair, label[, where]) rows of one local file; `config` is the DataConfig."""
        return read_table(path, config)

    def demo_rows(self, config) -> dict[str, list[tuple]]:
        """The built-in generated task's rows per split, so the task runs offline with no files."""
        return {split: [(r["sentence"], None, r["label"]) for r in rows] for split, rows in demo.generate(config).items()}

    def parse_row(self, text, pair, label, index: dict[str, int], where: str) -> tuple:
        """A raw row's (text, text_pair, label) as an Example holds them; `index` maps label names to ids."""
        return str(text), None if pair is None else str(pair), self.parse_label(label, index, where)

    def label_names(self, raw_labels) -> tuple[str, ...] | None:
        raise NotImplementedError

    def encode(self, examples, tokenizer, config, label_names: tuple[str, ...] | None = None) -> list[dict]:
        """Tokenise with truncation to `config.max_length` (a DataConfig); padding happens per batch at collate.

        Each row keeps "index", its position, which the teacher-logit cache looks rows up by after shuffling."""
        texts = [e.text for e in examples]
        pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
        encoded = tokenizer(texts, pairs, truncation=True, max_length=config.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        return [{**{k: encoded[k][i] for k in keys}, "labels": e.label, "index": i} for i, e in enumerate(examples)]

    def collate_labels(self, labels: list, width: int) -> Tensor:
        return torch.tensor(labels, dtype=self.label_dtype)

    def collate_fn(self, rows, tokenizer, seed: int = 0):
        """The loader's collate for rows `encode` returned (the masked-LM task masks each batch here)."""
        return make_collate(tokenizer.pad_token_id or 0, self)

    def labelled(self) -> bool:
        """Whether rows carry a label column; False: the labels come from the text itself (masked-LM)."""
        return True

    def repeats_inputs(self) -> bool:
        """Whether a row feeds the model the same inputs every epoch, so the teacher's outputs can be cached
        (masked-LM masks each epoch afresh)."""
        return True

    def deployable(self) -> bool:
        """Whether the model is an end product that compress passes and the export take (a masked-LM student is
        a general-purpose checkpoint, fine-tuned on a task before it is compressed): it has a runtime decoder."""
        return self.decoder is not None

    # --- outputs: where losses read them, and how rows of different widths are gathered ---

    def positions(self, labels: Tensor | None, attention_mask: Tensor) -> Tensor | None:
        """Which output rows the logit-level losses average over; None: every row (one per sequence)."""
        return None

    def soft_rows(self, logits: Tensor, labels: Tensor | None, attention_mask: Tensor) -> Tensor:
        """The distributions logit-level losses compare, one per row: the rows `positions` picks (a span task
        turns its start and end logits into two distributions over the context instead)."""
        chosen = self.positions(labels, attention_mask)
        return logits if chosen is None else logits[chosen]

    def eval_outputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """What evaluation keeps of one batch's logits and labels for `metrics` and `agreement` (a masked-LM task
        keeps two numbers per token, not a vocabulary-wide row)."""
        return logits, labels

    def gather(self, batches: list[Tensor], pad_value: float) -> Tensor:
        """Per-batch outputs (or labels) of one loader as one tensor, in order."""
        return torch.cat(batches)

    def trim(self, outputs: Tensor, attention_mask: Tensor) -> list[Tensor]:
        """A batch's outputs as one tensor per example, without padding (the teacher-logit cache's rows)."""
        return list(outputs)

    def pad(self, rows: list[Tensor], width: int) -> Tensor:
        """Rows from `trim` as a batch `width` tokens wide."""
        return torch.stack(rows)

    def head_kwargs(self, label_names: tuple[str, ...] | None) -> dict:
        """What from_pretrained / from_config need to build this task's head."""
        raise NotImplementedError

    def parse_label(self, label, index: dict[str, int], where: str):
        raise NotImplementedError

    def hard_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def soft_loss(self, student: Tensor, teacher: Tensor, temperature: float, *, scale_by_t2: bool = True) -> Tensor:
        """The teacher's soft targets as a loss (Hinton's KL for a distribution; MSE where there is none)."""
        raise NotImplementedError

    def soft_cross_entropy(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        """TinyBERT's prediction-layer loss."""
        raise NotImplementedError

    def soft_term(self, preferred: str) -> str:
        """The registered loss term that distils this task's logits, given the recipe's choice (kd | logit_mse)."""
        return preferred

    def metrics(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                rows: Sequence[dict] | None = None) -> dict[str, float]:
        """The task's metrics; `rows` are the encoded rows the labels were collated from (a span task finds its
        contexts and gold answers there; the others ignore them)."""
        raise NotImplementedError

    def agreement(self, student: Tensor, teacher: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """How close a student's outputs are to its teacher's (over the rows `positions` picks, given labels)."""
        raise NotImplementedError

    def mix(self, logits: list[Tensor], weights: list[float], temperature: float) -> Tensor:
        """Several teachers' outputs as one teacher's (multi-teacher distillation)."""
        raise NotImplementedError

    # --- paired comparisons (the benchmark tables): the primary metric as a function of per-example counts ---

    def example_counts(self, logits: Tensor, labels: Tensor, label_names: tuple[str, ...] | None = None,
                       rows: Sequence[dict] | None = None) -> np.ndarray:
        """Per-example counts, [examples, k], whose column sums give the primary metric through `score_counts`;
        a paired bootstrap resamples these rows (e.g. [correct, 1] for accuracy)."""
        raise NotImplementedError(f"the {self.name} task has no per-example counts for a paired comparison")

    def score_counts(self, summed: np.ndarray) -> np.ndarray:
        """The primary metric from counts summed over examples: [..., k] -> [...]. Given one example's counts, it is
        that example's own score, which a paired sign test compares."""
        raise NotImplementedError(f"the {self.name} task has no per-example counts for a paired comparison")
