"""The end-to-end distillation run: setup -> (teacher fine-tune) -> fit -> evaluate -> summary.

Plain functions over typed configs; only distill/__main__.py knows about Hydra.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, PreTrainedModel

from compress.cli import CompressStage, build_steps, run_stage
from compress.pipeline import TaskLoaders
from distill import distributed
from alembert.data import DataConfig, TaskData, encode, load_task, loader
from alembert.devices import device_record, resolve_device
from alembert.training import TrainConfig
from distill.engine import chosen_autocast, fit, seed_everything
from alembert.evaluate import predict_logits
from alembert.config import bounded, one_of
from alembert.errors import AlembertError, fail
from alembert.training import KDConfig
from distill.recipes import RecipeConfig, StageConfig, TermConfig, check_recipe, layer_methods, stage_objective
from distill.students import check_student
from distill.augment import AugmentConfig, augment_with
from distill.cross_tokenizer import check_cross_tokenizer, paired_loader
from distill.recovery import kd_recovery
from distill.multi_teacher import MultiTeacher, check_same_tokenizer, soft_target_temperature
from distill.models import StudentConfig, Teacher, build_student, disable_attention_dropout
from distill.theseus import replacing
from alembert.tasks import check_deployable, task_named
from alembert.modeldir import count_parameters, load_classifier, load_tokenizer, resolve_source, save_model
from alembert.report import latency_ms, save_table, size_on_disk_mb
from alembert.word_vocab import WORDS, example_texts, word_tokenizer

FINETUNE_MODES = ("auto", "always", "never")
# The training settings that change the fine-tuned weights; engine options such as caching or logging do not.
FINETUNE_KEY_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_grad_norm", "seed", "grad_accum",
                       "precision", "attention_dropout", "layerdrop", "bucket_batches")
HARD_LABELS = StageConfig(name="hard labels", terms=(TermConfig("hard", 1.0),))
EvalCallback = Callable[[int, dict[str, float]], None]  # (step, dev metrics) after each evaluation
SIZE_COLUMNS = ["params", "non_embedding_params", "size_mb", "latency_ms", "train_s"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Teacher fine-tuning: "auto" runs it when the teacher has no head trained for the task's labels."""

    mode: str = one_of("auto", FINETUNE_MODES)
    train: TrainConfig = TrainConfig(epochs=2, lr=5e-5)
    cache_dir: str = "~/.cache/alembert/teachers"


@dataclass(frozen=True)
class RunConfig:
    teacher: str = "minilm"
    recipe: RecipeConfig = RecipeConfig(stages=(StageConfig(terms=(TermConfig("hard", 0.5), TermConfig("kd", 0.5, {"temperature": 4.0}))),))
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    kd: KDConfig = KDConfig()  # the Hinton parameters alembert/conf/recipe/kd.yaml reads; code uses `recipe`
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    baseline: bool = True
    latency_seq_len: int = bounded(64, low=1)
    augment: AugmentConfig = AugmentConfig()  # transfer-set augmentation: TinyBERT's (an MLM model) or Tang's
    compress: CompressStage = CompressStage()  # passes run on the distilled student, e.g. compress.passes=[prune_ffn]
    teachers: tuple[str, ...] = ()  # several teachers sharing a tokenizer: their soft targets are averaged
    teacher_weights: tuple[float, ...] | None = None


@dataclass
class Loaders:
    """`train` fine-tunes the teacher; `transfer` (train, its augmented copy, or with data.labelled_examples every
    training example where `train` holds the labelled ones) distils the student."""

    train: DataLoader
    dev: DataLoader | None
    eval: DataLoader
    eval_split: str
    transfer: DataLoader | None = None


@dataclass
class Setup:
    source: str
    tokenizer: object
    task: TaskData
    loaders: Loaders
    teacher_labels: tuple[str, ...] | None = field(default=None)
    # with student.tokenizer: the student's own tokenizer and loaders (distillation pairs its rows with the teacher's
    # encoding of the same examples, distill.cross_tokenizer); None: the student reads the teacher's
    student_tokenizer: object | None = None
    student_loaders: Loaders | None = None

    def for_student(self) -> tuple[object, Loaders]:
        return (self.student_tokenizer, self.student_loaders) if self.student_loaders else (self.tokenizer, self.loaders)


def setup(config: RunConfig) -> Setup:
    """Resolve the teacher, load and validate the data and tokenise it: every bad input fails here, before training."""
    # a misspelt term parameter fails here, not as a TypeError mid-training
    unlabelled = config.data.labelled_examples is not None or config.data.transfer is not None
    check_recipe(config.recipe, layerdrop=config.train.layerdrop, unlabelled=unlabelled)
    check_student(config.student, layer_methods=layer_methods(config.recipe, layerdrop=config.train.layerdrop))
    if unlabelled and config.augment.enabled:
        given = "data.labelled_examples" if config.data.labelled_examples is not None else "data.transfer"
        raise fail(f"{given} and augment.enabled=true together are not supported",
                   "the unlabelled examples already enlarge the transfer set: set augment.enabled=false")
    if config.compress.passes:
        check_deployable(task_named(config.data.task_type), "compress.passes")
        build_steps(config.compress.passes, config.compress.settings)  # and a bad pass setting, not after training
    source = resolve_source(config.teacher)
    tokenizer = load_tokenizer(source)
    task = load_task(config.data)
    trained_labels = _trained_label_names(source)
    if trained_labels and task.label_names and set(trained_labels) == set(task.label_names) and trained_labels != task.label_names:
        task = load_task(config.data, label_names=trained_labels)  # keep the trained head's label order
    loaders = make_loaders(task, tokenizer, config)
    if config.student.tokenizer is None:
        return Setup(source, tokenizer, task, loaders, trained_labels)
    check_cross_tokenizer(task.task, config.recipe.stages)
    if config.augment.enabled:
        raise fail("augment.enabled=true with student.tokenizer is not supported: the augmented transfer set would be "
                   "drawn twice, once per tokenizer", "set augment.enabled=false, or drop student.tokenizer")
    student_tokenizer = (word_tokenizer(example_texts(task.transfer_examples()), tokenizer, config.student.words)
                         if config.student.tokenizer == WORDS else load_tokenizer(config.student.tokenizer))
    return Setup(source, tokenizer, task, loaders, trained_labels, student_tokenizer, make_loaders(task, student_tokenizer, config))


def _trained_label_names(source: str) -> tuple[str, ...] | None:
    config = AutoConfig.from_pretrained(source)
    names = tuple(config.id2label[i] for i in range(config.num_labels)) if config.id2label else ()
    return None if all(name.startswith("LABEL_") for name in names) else names


def make_loaders(task: TaskData, tokenizer, config: RunConfig) -> Loaders:
    def build(split: str, shuffle: bool, data: TaskData = task) -> DataLoader:
        rows = encode(data, split, tokenizer, config.data)
        size = config.train.batch_size if shuffle else config.train.eval_batch_size
        return loader(rows, tokenizer, batch_size=size, task=task.task, shuffle=shuffle, seed=config.train.seed)

    eval_split = "test" if "test" in task.splits else "dev" if "dev" in task.splits else "train"
    dev = build("dev", False) if "dev" in task.splits else None
    train = build("train", True)
    transfer = (build("train", True, replace(task, splits={**task.splits, "train": task.transfer_examples()}))
                if task.unlabelled else train)
    if config.data.labelled_examples is not None:
        train = build_labelled(task, tokenizer, config)
    if config.augment.enabled and not task.task.augmentable():
        raise fail(f"augment.enabled=true does not work for the {task.task.name} task: replaced words would break its labels",
                   "set augment.enabled=false (augmentation is for sequence classification and regression)")
    if config.augment.enabled:
        augmented = replace(task, splits={**task.splits, "train": augment_with(config.augment, task.splits["train"], teacher=config.teacher)})
        transfer = make_loaders(augmented, tokenizer, replace(config, augment=replace(config.augment, enabled=False))).train
    return Loaders(train=train, dev=dev, eval=build(eval_split, False), eval_split=eval_split, transfer=transfer)


def build_labelled(task: TaskData, tokenizer, config: RunConfig) -> DataLoader:
    """The first data.labelled_examples training examples: what the teacher and the baseline learn labels from."""
    examples = task.splits["train"]
    if config.data.labelled_examples >= len(examples):
        raise fail(f"data.labelled_examples={config.data.labelled_examples} leaves no unlabelled training example "
                   f"(the training set has {len(examples)})", f"set it below {len(examples)}, or drop it")
    labelled = replace(task, splits={**task.splits, "train": examples[: config.data.labelled_examples]})
    rows = encode(labelled, "train", tokenizer, config.data)
    return loader(rows, tokenizer, batch_size=config.train.batch_size, task=task.task, shuffle=True, seed=config.train.seed)


def prepare_teacher(run: Setup, config: RunConfig, *, out_dir: Path | None = None,
                    name: str = "teacher") -> tuple[PreTrainedModel, str]:
    """Load the teacher; fine-tune it on the task first when its head is untrained, caching the result.

    With `out_dir`, the fine-tune checkpoints to out_dir/checkpoints/<name>-finetune/ as train.checkpoint_every
    and train.resume ask, so a killed fine-tune resumes like the student stages; None writes no checkpoints.
    """
    # Seeded first: a head the checkpoint lacks is initialised at random, and torch's start-up seed differs per process.
    seed_everything(config.finetune.train.seed)
    model, head_trained = load_classifier(run.source, run.task.label_names, task=run.task.task)
    if run.teacher_labels and run.task.label_names and set(run.teacher_labels) != set(run.task.label_names):
        head_trained = False  # a head trained for other labels is as good as none for this task
    needs_finetune = config.finetune.mode == "always" or (config.finetune.mode == "auto" and not head_trained)
    if not needs_finetune:
        return model, run.source
    cache = Path(config.finetune.cache_dir).expanduser() / _finetune_key(run, config)
    reason = "finetune.mode=always" if head_trained else _why_untrained(run)
    if (cache / "config.json").is_file():
        tqdm.write(f"reusing the fine-tuned teacher cached at {cache}")
        try:
            return load_classifier(str(cache), run.task.label_names, task=run.task.task)[0], str(cache)
        except AlembertError:
            raise fail(f"the cached teacher at {cache} is corrupt", f"delete {cache} and run again") from None
    tqdm.write(f"fine-tuning the teacher first ({reason}); the result is cached at {cache}")
    seed_everything(config.finetune.train.seed)
    hard, _ = stage_objective(HARD_LABELS, model.config, model.config)
    fit(model, run.loaders.train, run.loaders.dev, hard, **_finetune_train(config, out_dir, name), desc="fine-tune teacher")
    if distributed.is_main():  # under torchrun every rank holds the same weights; one writes them
        save_model(model, run.tokenizer, cache, extra={"finetuned_from": run.source})
    distributed.barrier()
    return model, str(cache)


def _why_untrained(run: Setup) -> str:
    wanted = run.task.label_names
    if run.teacher_labels and wanted and set(run.teacher_labels) != set(wanted):
        return (f"its head was trained for {len(run.teacher_labels)} labels ({', '.join(run.teacher_labels)}), this task "
                f"has {len(wanted)} ({', '.join(wanted)}): a fresh {len(wanted)}-label head")
    return f"the teacher has no {run.task.task.name} head trained for these labels"


def _finetune_train(config: RunConfig, out_dir: Path | None, name: str) -> dict:
    """The fine-tune's TrainConfig and checkpoint directory, as keyword arguments of `fit`.

    Only the run-level checkpoint_every/resume carry over from config.train: the rest of finetune.train is the
    teacher's own (and keys its cache), and the two flags are what users already set to make a run resumable.
    """
    if out_dir is None:
        return {"config": config.finetune.train}
    train = replace(config.finetune.train, checkpoint_every=config.train.checkpoint_every, resume=config.train.resume)
    return {"config": train, "checkpoint_dir": Path(out_dir) / "checkpoints" / f"{name}-finetune"}


def _finetune_key(run: Setup, config: RunConfig) -> str:
    """Hash of everything that determines the fine-tuned teacher: source weights, data, labels and settings."""
    digest = hashlib.sha256()
    settings = {name: getattr(config.finetune.train, name) for name in FINETUNE_KEY_FIELDS}
    digest.update(json.dumps([run.source, settings, config.data.max_length,
                              run.task.label_names, run.task.task.name]).encode())
    weights = Path(run.source) / "model.safetensors"
    if weights.is_file():
        digest.update(str(weights.stat().st_size).encode() + str(weights.stat().st_mtime_ns).encode())
    for example in run.task.splits["train"][: config.data.labelled_examples]:  # what it learns from
        digest.update(f"{example.text}\t{example.text_pair}\t{example.label}\n".encode())
    return digest.hexdigest()[:16]


def describe(name: str, model: PreTrainedModel, model_dir: Path | str, run: Setup, config: RunConfig, *,
             teacher_logits=None, train_s: float = 0.0, loaders: Loaders | None = None) -> dict:
    """One summary row: metric on the eval split (of `loaders`, default the teacher's tokenisation), closeness to
    the teacher, size and batch-1 latency."""
    loaders = loaders or run.loaders
    logits, labels = predict_logits(model, loaders.eval)
    device = resolve_device(config.train.device)  # where it trained (a loaded teacher: where it was fine-tuned or read)
    total, non_embedding = count_parameters(model)
    row = {"model": name, "layers": model.config.num_hidden_layers, **run.task.task.metrics(logits, labels, run.task.label_names, rows=loaders.eval.dataset)}
    if teacher_logits is not None:
        row.update(run.task.task.agreement(logits, teacher_logits, labels))
    row.update(params=total, non_embedding_params=non_embedding, size_mb=size_on_disk_mb(model_dir),
               latency_ms=latency_ms(model, seq_len=config.latency_seq_len), train_s=round(train_s, 1),
               **device_record(device, chosen_autocast(config.train.precision, device)[0]))
    return row


def distil(run: Setup, teacher_model: PreTrainedModel, config: RunConfig, *, use_teacher: bool,
           out_dir: Path | None = None, teacher: Teacher | MultiTeacher | None = None,
           on_evaluate: EvalCallback | None = None) -> tuple[PreTrainedModel, float]:
    """Build the student and train it through the recipe's stages, or on hard labels only (the baseline).

    With `out_dir`, each stage checkpoints to out_dir/checkpoints/<student|baseline>-stage<N>/ and logs
    TensorBoard events to out_dir/tensorboard/<student|baseline>-stage<N>/ when the train config asks for it.
    `on_evaluate` sees the dev evaluations of the last stage only: earlier (layer-wise) stages' metrics mean nothing yet.
    """
    seed_everything(config.train.seed)
    tokenizer, loaders = run.for_student()
    for data in (loaders.train, loaders.transfer):
        if data is not None and data.generator is not None:
            data.generator.manual_seed(config.train.seed)  # KD and baseline students see the same batch order
    student = build_student(teacher_model, config.student, tokenizer if run.student_tokenizer is not None else None,
                            teacher_tokenizer=run.tokenizer)
    stages = config.recipe.stages if use_teacher else (HARD_LABELS,)
    teacher = teacher or Teacher(teacher_model)
    train = loaders.transfer if use_teacher and loaders.transfer is not None else loaders.train
    if use_teacher and run.student_loaders is not None:  # the teacher reads the same rows in its own tokenisation
        train = paired_loader(train, run.loaders.transfer if loaders.transfer is not None else run.loaders.train)
    start = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        objective, extra_modules = stage_objective(stage, student.config, teacher_model.config)
        if objective.needs_attentions:
            disable_attention_dropout(student)
        stage_train = replace(config.train, epochs=stage.epochs if stage.epochs is not None else config.train.epochs)
        with replacing(student, teacher_model, stage.replacement, seed=config.train.seed, objective=objective):
            fit(student, train, loaders.dev, objective, stage_train,
                teacher=teacher if objective.needs_teacher else None, extra_modules=extra_modules,
                keep_best=number == len(stages), desc=stage.name if use_teacher else "baseline",
                on_evaluate=on_evaluate if number == len(stages) else None,
                **_stage_dirs(out_dir, "student" if use_teacher else "baseline", number))
    return student, time.perf_counter() - start


def _stage_dirs(out_dir: Path | None, folder: str, number: int) -> dict:
    if out_dir is None:
        return {}
    return {"checkpoint_dir": out_dir / "checkpoints" / f"{folder}-stage{number}",
            "log_dir": out_dir / "tensorboard" / f"{folder}-stage{number}"}


def run(config: RunConfig, out_dir: str | Path, on_evaluate: EvalCallback | None = None) -> list[dict]:
    """The whole job; writes student/, (baseline/), summary.md and summary.json under `out_dir`.

    `on_evaluate(step, dev_metrics)` follows the distilled student's last training stage (not the baseline's).

    Under torchrun every rank trains; rank 0 alone evaluates, saves and prints, into rank 0's `out_dir`.
    """
    distributed.init_from_env(resolve_device(config.train.device))
    out_dir = Path(distributed.broadcast_object(str(out_dir)))
    main = distributed.is_main()
    start = time.perf_counter()
    prepared = setup(config)
    teacher_model, teacher_dir = prepare_teacher(prepared, config, out_dir=out_dir)
    teacher = build_teacher(prepared, teacher_model, config, out_dir=out_dir)
    teacher_s = time.perf_counter() - start
    teacher_logits = predict_logits(teacher_model, prepared.loaders.eval)[0] if main else None
    rows = [describe("teacher", teacher_model, teacher_dir, prepared, config, teacher_logits=teacher_logits, train_s=teacher_s)] if main else []
    variants = [("student (KD)", "student", True)] + ([("student (no KD)", "baseline", False)] if config.baseline else [])
    for name, folder, use_teacher in variants:
        student, seconds = distil(prepared, teacher_model, config, use_teacher=use_teacher, out_dir=out_dir, teacher=teacher,
                                  on_evaluate=on_evaluate if use_teacher else None)
        if not main:
            continue
        tokenizer, loaders = prepared.for_student()
        save_model(student, tokenizer, out_dir / folder, extra={"distilled_from": teacher_dir} if use_teacher else None)
        rows.append(describe(name, student, out_dir / folder, prepared, config, teacher_logits=teacher_logits, train_s=seconds,
                             loaders=loaders))
        if use_teacher and config.compress.passes:
            compress_student(student, prepared, config, out_dir)
    if not main:
        return rows
    table = save_table(rows, summary_columns(prepared.task.task), out_dir, "summary")
    print(f"\nResults on the {prepared.loaders.eval_split} split ({out_dir}):\n{table}")
    return rows


def summary_columns(task) -> list[str]:
    """The summary table's columns: the task's metric columns between the model and its size and speed."""
    return ["model", "layers", *task.summary_columns, *SIZE_COLUMNS]


def build_teacher(run: Setup, first: PreTrainedModel, config: RunConfig, *,
                  out_dir: Path | None = None) -> Teacher | MultiTeacher:
    """One frozen teacher, or with `teachers` several whose soft targets are averaged by `teacher_weights`.

    With `out_dir`, an extra teacher that needs fine-tuning checkpoints to checkpoints/teacher<N>-finetune/ (N from 2).
    """
    if not config.teachers:
        return Teacher(first)
    sources = [resolve_source(name) for name in config.teachers]
    check_same_tokenizer([run.tokenizer] + [load_tokenizer(source) for source in sources])
    others = [prepare_teacher(replace(run, source=source, teacher_labels=_trained_label_names(source)), config,
                              out_dir=out_dir, name=f"teacher{number}")[0]
              for number, source in enumerate(sources, 2)]
    return MultiTeacher([first, *others], config.teacher_weights, temperature=soft_target_temperature(config.recipe.stages))


def compress_student(student: PreTrainedModel, run: Setup, config: RunConfig, out_dir: Path) -> None:
    """Run the compression passes on a copy of the distilled student; writes out_dir/compressed/."""
    tokenizer, loaders = run.for_student()  # recovery distils from the uncompressed student: its own tokenisation
    data = TaskLoaders(train=loaders.train, dev=loaders.dev, task=run.task.task)
    # compression prepares an edge model: its passes (and int8) run on the CPU, whatever device trained the student
    run_stage(copy.deepcopy(student).cpu(), tokenizer, config.compress, data, out_dir / "compressed", distiller=kd_recovery)
