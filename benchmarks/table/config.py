"""Typed settings of a row benchmark; benchmarks/table/cli.py builds them from alembert/conf/sst2.yaml,
alembert/conf/recipes.yaml, alembert/conf/conll.yaml or alembert/conf/squad.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alembert.config import bounded, from_dict
from alembert.errors import fail
from pipeline.run import RunConfig

SPLIT_FILE = "{split}.tsv"  # SST-2's train.tsv, dev.tsv, test.tsv
HEADER = ("sentence", "label")
SPLITS = ("train", "dev", "test")
ROW_KINDS = ("teacher", "baseline", "distil", "compress")


@dataclass(frozen=True)
class RowSpec:
    """One row of a benchmark (alembert/conf/sst2.yaml, alembert/conf/recipes.yaml): how it is built, from which row, with which python -m distill overrides."""

    id: str
    label: str
    kind: str
    overrides: tuple[str, ...] = ()
    parent: str | None = None
    baseline: str | None = None  # an earlier row to test this one against (paired, on the same test sentences)


@dataclass(frozen=True)
class ModeConfig:
    """What `mode=full`, `mode=quick`, ... changes: shared overrides, the data and how long to time each model."""

    overrides: tuple[str, ...] = ()
    data_files: bool = True  # the task is data_dir's split files; false: the overrides name the task (data.task=demo)
    dataset: str = "SST-2 test (GLUE dev)"  # what the metric column is measured on, for the table's header
    splits: tuple[str, ...] = SPLITS  # which of data_dir's split files the mode reads; without test, it reports on dev
    notes: str = ""  # a line under the table's header: training subsets, what an example is, ...
    latency_runs: int = 50
    throughput_runs: int = 10
    rows: tuple[RowSpec, ...] = ()  # the mode's own rows, in place of the benchmark's (e.g. sst2's labelled mode)
    onnx_variants: tuple[str, ...] | None = None  # None: the benchmark's
    columns: tuple[str, ...] = ()  # the mode's own table columns (e.g. vs_baseline where its rows name baselines); empty: the benchmark's


@dataclass(frozen=True)
class BenchConfig:
    name: str = "sst2"  # results are <name>.md/.json/.png, or <name>_<mode>.* outside the full mode
    mode: str = "full"
    data_dir: str = "../shared/data/sst2"
    work_dir: str = "~/.cache/alembert/benchmarks"  # rows/<id>-<key>/: shared by every benchmark
    results_dir: str = "benchmarks/results/sst2"  # one folder per benchmark: benchmarks/results/<name>/
    threads: int = 2
    seq_len: int = bounded(64, low=2)  # every model is timed on random token ids of this length
    throughput_batch: int = bounded(32, low=1)  # ... and for throughput at this batch size
    modes: dict[str, dict] = field(default_factory=dict)  # mode name -> ModeConfig fields
    overrides: tuple[str, ...] = ()  # the user's own, after the mode's
    base_overrides: tuple[str, ...] = ()
    rows: tuple[RowSpec, ...] = ()
    onnx_variants: tuple[str, ...] = ("optimized", "int8_dynamic")
    columns: tuple[str, ...] = ()  # the table's columns; empty: report.COLUMNS, with the task's primary metric
    split_file: str = SPLIT_FILE  # each split's file name in data_dir, {split} standing for train, dev or test
    split_files: dict[str, str] = field(default_factory=dict)  # split -> file name, where names follow no pattern
    header: tuple[str, ...] = HEADER  # columns each split file's tab-separated header row must have; []: no header row
    metric_label: str = ""  # the metric's name on the figure, e.g. "entity F1"; empty: the task's primary metric

    @property
    def settings(self) -> ModeConfig:
        if self.mode not in self.modes:
            raise fail(f"mode={self.mode} is unknown", f"use one of: {', '.join(self.modes)}")
        return from_dict(ModeConfig, self.modes[self.mode])

    @property
    def active_rows(self) -> tuple[RowSpec, ...]:
        return self.settings.rows or self.rows

    @property
    def active_variants(self) -> tuple[str, ...]:
        variants = self.settings.onnx_variants
        return self.onnx_variants if variants is None else variants

    @property
    def active_columns(self) -> tuple[str, ...]:
        return self.settings.columns or self.columns

    @property
    def results_name(self) -> str:
        return self.name if self.mode == "full" else f"{self.name}_{self.mode}"


@dataclass(frozen=True)
class Row:
    """A row spec with its composed run config; `overrides` reproduce it as a single python -m distill run.
    `key` hashes what builds the row (kind, overrides, the parent's key), so every benchmark that composes
    the same row finds it in the shared cache, and a changed row never reuses a stale one."""

    spec: RowSpec
    config: RunConfig
    overrides: tuple[str, ...]
    key: str

    @property
    def folder(self) -> str:
        return f"{self.spec.id}-{self.key}"


def split_path(bench: BenchConfig, split: str) -> str:
    return bench.split_files.get(split) or bench.split_file.replace("{split}", split)


def check_data_dir(bench: BenchConfig) -> Path:
    """data_dir must hold the mode's split files, each with the header columns the benchmark names (if any)."""
    root = Path(bench.data_dir).expanduser()
    splits = bench.settings.splits
    if "train" not in splits or not set(splits) <= set(SPLITS):
        raise fail(f"mode={bench.mode} reads splits {list(splits)}", "a mode reads train and any of dev, test")
    names = [split_path(bench, split) for split in splits]
    missing = [name for name in names if not (root / name).is_file()]
    columns = f" (header row: {'<TAB>'.join(bench.header)})" if bench.header else ""
    if missing:
        raise fail(f"data_dir={bench.data_dir} lacks {', '.join(missing)}",
                   f"point data_dir at a folder with the benchmark's {', '.join(names)}{columns}")
    for name in names if bench.header else ():
        header = (root / name).open(encoding="utf-8").readline().rstrip("\n").split("\t")
        if not set(bench.header) <= set(header):
            raise fail(f"{root / name} has columns {header}, not {list(bench.header)}",
                       f"use the benchmark's files, whose header row is: {'<TAB>'.join(bench.header)}")
    return root.resolve()


def check_rows(rows: tuple[RowSpec, ...]) -> None:
    """Known kinds, unique ids, parents that come earlier: checked before anything trains."""
    seen: set[str] = set()
    for row in rows:
        if row.kind not in ROW_KINDS:
            raise fail(f"row {row.id} has kind={row.kind}", f"use one of: {', '.join(ROW_KINDS)}")
        if row.id in seen:
            raise fail(f"row id {row.id} appears twice in the benchmark's rows", "give every row its own id")
        if (row.kind == "compress") != (row.parent is not None) or (row.parent and row.parent not in seen):
            raise fail(f"row {row.id} ({row.kind}) has parent={row.parent}",
                       "a compress row names an earlier row as parent; other rows name none")
        if row.baseline is not None and row.baseline not in seen:
            raise fail(f"row {row.id} has baseline={row.baseline}, which is not an earlier row", "name an earlier row's id")
        seen.add(row.id)
    if not rows or rows[0].kind != "teacher":
        raise fail("the benchmark's first row must be the teacher", "start rows with {id: teacher, kind: teacher}")
