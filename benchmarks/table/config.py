"""Typed settings of a row benchmark; benchmarks/table/cli.py builds them from alembert/conf/sst2.yaml or alembert/conf/recipes.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alembert.config import from_dict
from alembert.errors import fail
from pipeline.run import RunConfig

SPLIT_FILES = ("train.tsv", "dev.tsv", "test.tsv")
COLUMNS = ("sentence", "label")
ROW_KINDS = ("teacher", "baseline", "distil", "compress")


@dataclass(frozen=True)
class ModeConfig:
    """What `mode=full`, `mode=quick`, ... changes: shared overrides, the data and how long to time each model."""

    overrides: tuple[str, ...] = ()
    data_files: bool = True  # the task is data_dir's SST-2 files; false: the overrides name the task (data.task=demo)
    dataset: str = "SST-2 test (GLUE dev)"  # what the accuracy column is measured on, for the table's header
    latency_runs: int = 50
    throughput_runs: int = 10


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
class BenchConfig:
    name: str = "sst2"  # results are <name>.md/.json/.png, or <name>_<mode>.* outside the full mode
    mode: str = "full"
    data_dir: str = "../shared/data/sst2"
    work_dir: str = "~/.cache/alembert/benchmarks"  # rows/<id>-<key>/: shared by every benchmark
    results_dir: str = "benchmarks/results/sst2"  # one folder per benchmark: benchmarks/results/<name>/
    threads: int = 2
    modes: dict[str, dict] = field(default_factory=dict)  # mode name -> ModeConfig fields
    overrides: tuple[str, ...] = ()  # the user's own, after the mode's
    base_overrides: tuple[str, ...] = ()
    rows: tuple[RowSpec, ...] = ()
    onnx_variants: tuple[str, ...] = ("optimized", "int8_dynamic")
    columns: tuple[str, ...] = ()  # the table's columns; empty: report.COLUMNS

    @property
    def settings(self) -> ModeConfig:
        if self.mode not in self.modes:
            raise fail(f"mode={self.mode} is unknown", f"use one of: {', '.join(self.modes)}")
        return from_dict(ModeConfig, self.modes[self.mode])

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


def check_data_dir(data_dir: str) -> Path:
    """The data directory must hold SST-2's three TSV files with a `sentence` and a `label` column."""
    root = Path(data_dir).expanduser()
    missing = [name for name in SPLIT_FILES if not (root / name).is_file()]
    if missing:
        raise fail(f"data_dir={data_dir} lacks {', '.join(missing)}",
                   "point data_dir at a folder with SST-2's train.tsv, dev.tsv and test.tsv (columns sentence, label)")
    for name in SPLIT_FILES:
        header = (root / name).open(encoding="utf-8").readline().rstrip("\n").split("\t")
        if not set(COLUMNS) <= set(header):
            raise fail(f"{root / name} has columns {header}, not {list(COLUMNS)}",
                       "use SST-2's GLUE TSV files, whose header is: sentence<TAB>label")
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
