"""The shipped Hydra YAML against the typed configs: every shared block is written once, in its config group
(alembert/conf/data/, train/, recovery/), and spells out the defaults of the dataclass it becomes; a key added to a
dataclass but not to its YAML, or a YAML default that differs from the dataclass without being listed below as an
intended difference, fails here."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alembert.conf import CONF_DIR
from alembert.config import from_dict
from alembert.data import DataConfig
from alembert.resolvers import RESOLVERS, kd_params, one_minus, register_resolvers
from alembert.training import TrainConfig
from benchmarks.table.cli import compose_rows
from benchmarks.table.config import BenchConfig, split_path
from compress.cli import CompressConfig, CompressStage
from compress.pipeline import RecoveryConfig
from export.__main__ import to_export_config
from export.config import ExportConfig
from pipeline.run import FinetuneConfig, RunConfig

ROOT = Path(__file__).resolve().parents[1]
register_resolvers(OmegaConf.register_new_resolver)

# group file -> (the dataclass value it composes to, and where that value departs from the plain dataclass's defaults).
GROUPS = {
    "data/default": (DataConfig(), {}),
    "data/none": (CompressConfig().data, {"task": None}),  # compress and export run without task data unless told
    "data/ner": (DataConfig(task_type="token_classification", text_column="tokens", label_column="tags"), {"task_type": "token_classification", "text_column": "tokens", "label_column": "tags"}),
    "data/qa": (DataConfig(task_type="question_answering", text_column="question", text_pair_column="context",
                           label_column="answers", max_length=384),
                {"task_type": "question_answering", "text_column": "question", "text_pair_column": "context",
                 "label_column": "answers", "max_length": 384}),
    "data/corpus": (DataConfig(task_type="masked_lm", text_column="text"), {"task_type": "masked_lm", "text_column": "text"}),
    "train/default": (TrainConfig(), {}),
    "train/finetune": (FinetuneConfig().train, {"epochs": 2, "lr": 5e-5}),  # the teacher: fewer epochs, a gentler lr
    "train/recovery": (RecoveryConfig().train, {"epochs": 1, "lr": 5e-5}),  # compress recovery: one short pass
    "recovery/default": (CompressConfig().recovery, {"at_end": False}),  # recovery only when asked for
}
# primary config -> where each group lands in it.
PLACES = {
    "config": {"data": "data/default", "train": "train/default", "finetune.train": "train/finetune",
               "compress.recovery": "recovery/default"},
    "compress": {"data": "data/none", "recovery": "recovery/default"},
    "export": {"data": "data/none"},
    "sst2": {},
    "recipes": {},
    "conll": {},
    "squad": {},
}
# primary config -> the keys it sets to something other than its dataclass's default, on purpose.
INTENDED = {
    "config": {"recipe.stages"},  # recipe/kd.yaml: the kd term also spells out scale_by_t2 (RunConfig's default omits it)
    "compress": {"passes", "settings"},  # a default pass list, and every pass's settings written out
    "export": set(),
    "sst2": {"work_dir", "modes", "base_overrides", "rows"},  # the benchmark itself; work_dir via ${oc.env:HOME}
    "recipes": {"name", "work_dir", "results_dir", "modes", "base_overrides", "rows", "onnx_variants", "columns"},
    "conll": {"name", "data_dir", "work_dir", "results_dir", "modes", "base_overrides", "rows", "columns", "split_file",
              "header", "metric_label"},  # CoNLL's .txt files have no header row; the metric is entity F1
    "squad": {"name", "data_dir", "work_dir", "results_dir", "modes", "base_overrides", "rows", "columns", "split_files",
              "header", "metric_label", "seq_len", "throughput_batch"},  # JSON files; QA is timed at 384
}
# The signature of each block: a mapping with this many of the dataclass's keys is that block written out.
BLOCKS = {"train/default": (TrainConfig, 3), "data/default": (DataConfig, 3), "recovery/default": (RecoveryConfig, 2)}


def _bench(raw: dict) -> BenchConfig:
    return from_dict(BenchConfig, {key: value for key, value in raw.items() if key != "hydra"})


TYPED = {"config": lambda raw: from_dict(RunConfig, raw), "compress": lambda raw: from_dict(CompressConfig, raw),
         "export": to_export_config, "sst2": _bench, "recipes": _bench, "conll": _bench, "squad": _bench}
DEFAULTS = {"config": RunConfig(), "compress": CompressConfig(), "export": ExportConfig(), "sst2": BenchConfig(),
            "recipes": BenchConfig(), "conll": BenchConfig(), "squad": BenchConfig()}
CONLL_LINES = "-DOCSTART- -X- -X- O\n\nPeter NNP B-NP B-PER\nvisited VBD B-VP O\nParis NNP B-NP B-LOC\n\n"
SQUAD_LINES = '{"data": [{"paragraphs": [{"context": "Ann came.", "qas": [{"id": "1", "question": "Who came?", ' \
              '"answers": [{"text": "Ann", "answer_start": 0}]}]}]}]}'



def composed(name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        raw = OmegaConf.to_container(compose(config_name=name, overrides=list(overrides)), resolve=True)
    raw.pop("hydra", None)
    return raw


def group_block(group: str) -> dict:
    """A group file composed on its own, as the block it places (`train/finetune` -> the `train` mapping)."""
    return composed(group)[group.split("/")[0]]


def at(raw: dict, dotted: str):
    for key in dotted.split("."):
        raw = raw[key]
    return raw


def key_tree(cls) -> dict:
    """The field names of `cls`, nested dataclasses as sub-trees."""
    return {f.name: key_tree(type(f.default)) if dataclasses.is_dataclass(f.default) else None for f in dataclasses.fields(cls)}


def yaml_tree(raw: dict, cls) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return {key: yaml_tree(value, type(fields[key].default))
            if isinstance(value, dict) and key in fields and dataclasses.is_dataclass(fields[key].default) else None
            for key, value in raw.items()}


def departures(typed, default, raw: dict, path: str = "") -> set[str]:
    """Dotted keys that `raw` (the composed YAML) sets to a value other than the dataclass default."""
    found = set()
    for key, value in raw.items():
        mine, theirs = getattr(typed, key), getattr(default, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(mine) and dataclasses.is_dataclass(theirs):
            found |= departures(mine, theirs, value, f"{path}{key}.")
        elif mine != theirs:
            found.add(f"{path}{key}")
    return found


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_group_file_spells_out_every_key_of_its_dataclass_with_its_default(group):
    expected, intended = GROUPS[group]
    block = group_block(group)
    assert yaml_tree(block, type(expected)) == key_tree(type(expected)), f"{group}.yaml and {type(expected).__name__} differ in keys"
    assert from_dict(type(expected), block) == expected, f"{group}.yaml departs from the dataclass default"
    plain = type(expected)()
    assert dataclasses.replace(plain, **intended) == expected, f"{group}: the intended differences are not {intended}"
    assert {key for key in intended if getattr(plain, key) != intended[key]} == set(intended)


def test_every_group_file_is_listed_and_the_places_cover_them():
    on_disk = {str(path.relative_to(CONF_DIR).with_suffix("")) for folder in ("data", "train", "recovery")
               for path in (CONF_DIR / folder).glob("*.yaml")}
    assert on_disk == set(GROUPS)
    assert CompressStage().recovery == CompressConfig().recovery  # python -m distill and python -m compress share it
    used = {group for places in PLACES.values() for group in places.values()}
    # train/recovery comes in through recovery/default; data/ner, data/qa and data/corpus are options users pick (data=ner)
    assert used | {"train/recovery", "data/ner", "data/qa", "data/corpus"} == set(GROUPS)


@pytest.mark.parametrize("name", sorted(PLACES))
def test_a_primary_config_composes_to_its_dataclass_defaults_but_where_intended(name):
    raw = composed(name)
    typed = TYPED[name](raw)
    for place, group in PLACES[name].items():
        assert at(raw, place) == group_block(group), f"{name}: {place} is not {group}.yaml"
    assert departures(typed, DEFAULTS[name], raw) == INTENDED[name]


def test_the_composed_blocks_are_the_typed_defaults():
    run = from_dict(RunConfig, composed("config"))
    assert (run.data, run.train, run.finetune.train, run.compress.recovery) == (
        DataConfig(), TrainConfig(), FinetuneConfig().train, CompressStage().recovery)
    compress = from_dict(CompressConfig, composed("compress", "model=x"))
    assert (compress.data, compress.recovery) == (CompressConfig().data, CompressConfig().recovery)
    assert to_export_config(composed("export", "model=x")).data is None  # data.task: null means no task data
    demo = to_export_config(composed("export", "model=x", "data.task=demo"))
    assert demo.data == DataConfig(task="demo")  # the very demo split python -m distill holds out


@pytest.mark.parametrize("name, overrides, key, value", [
    ("config", ["train.epochs=1"], "train.epochs", 1),
    ("config", ["data.task=files", "data.train=a.tsv"], "data.train", "a.tsv"),
    ("config", ["finetune.train.epochs=1"], "finetune.train.epochs", 1),
    ("config", ["finetune.train.eval_every=5"], "finetune.train.eval_every", 5),
    ("config", ["compress.recovery.train.lr=1e-5"], "compress.recovery.train.lr", 1e-5),
    ("config", ["compress.recovery.kd.temperature=3"], "compress.recovery.kd.temperature", 3),
    ("compress", ["model=x", "recovery.train.epochs=2"], "recovery.train.epochs", 2),
    ("compress", ["model=x", "data.task=files", "data.encoding=latin-1"], "data.encoding", "latin-1"),
    ("export", ["model=x", "data.task=demo", "data.max_dev_examples=50"], "data.max_dev_examples", 50),
])
def test_command_line_overrides_reach_the_group_blocks(name, overrides, key, value):
    assert at(composed(name, *overrides), key) == value


@pytest.mark.parametrize("name", ["sst2", "recipes", "conll", "squad"])
def test_every_benchmark_mode_composes_its_rows(name, tmp_path):
    bench = _bench(composed(name, f"data_dir={tmp_path}"))
    for split in ("train", "dev", "test"):  # the files the benchmark names: SST-2's TSV with a header, CoNLL's columns
        text = "\t".join(bench.header) + "\na good film\t1\na bad film\t0\n" if bench.header else CONLL_LINES
        (tmp_path / split_path(bench, split)).write_text(SQUAD_LINES if name == "squad" else text)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for mode in bench.modes:
            rows = compose_rows(dataclasses.replace(bench, mode=mode),
                                lambda overrides: OmegaConf.to_container(compose(config_name="config", overrides=overrides),
                                                                         resolve=True))
            assert rows and all(isinstance(row.config, RunConfig) for row in rows)


def _mappings(node, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _mappings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mappings(value, f"{path}[{i}]")


def _overlay(mapping: dict) -> bool:
    """A group option that composes the block's default file and changes a few keys (data/ner.yaml) copies nothing;
    a benchmark's split -> file-name map (split_files: {train, dev, test}) shares the split names only."""
    return "default" in (mapping.get("defaults") or []) or set(mapping) <= {"train", "dev", "test"} and \
        all(isinstance(value, str) for value in mapping.values())


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_each_block_is_written_only_in_its_group_file(block):
    cls, enough = BLOCKS[block]
    names = {f.name for f in dataclasses.fields(cls)}
    written = sorted(f"{path.relative_to(CONF_DIR)}:{where or '(top level)'}"
                     for path in sorted(CONF_DIR.rglob("*.yaml"))
                     for where, mapping in _mappings(yaml.safe_load(path.read_text()))
                     if len(names & set(mapping)) >= enough and not _overlay(mapping))
    assert written == [f"{block}.yaml:(top level)"]


def test_the_package_data_ships_every_yaml_file():
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["alembert.conf"]
    shipped = {path for pattern in patterns for path in CONF_DIR.glob(pattern)}
    assert sorted(str(p.relative_to(CONF_DIR)) for p in set(CONF_DIR.rglob("*.yaml")) - shipped) == []


def test_the_resolvers_are_plain_functions_registered_from_one_place():
    assert RESOLVERS == {"one_minus": one_minus, "kd_params": kd_params}
    assert one_minus("0.25") == 0.75
    assert kd_params("kd", "2", True) == {"temperature": 2.0, "scale_by_t2": True} and kd_params("logit_mse", 2, True) == {}
    registered = []
    register_resolvers(lambda name, fn, replace: registered.append((name, fn, replace)))
    assert registered == [(name, fn, True) for name, fn in RESOLVERS.items()]
    assert OmegaConf.has_resolver("one_minus") and OmegaConf.has_resolver("kd_params")


def test_nothing_imports_the_distill_entry_point_for_its_side_effects():
    importers = []
    for package in ("alembert", "distill", "compress", "export", "pipeline", "benchmarks", "tests"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                         [f"{node.module}.{alias.name}" for alias in node.names] + [node.module or ""]
                         if isinstance(node, ast.ImportFrom) else [])
                if "distill.__main__" in names:
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == []
