"""The table benchmarks (benchmarks.sst2, benchmarks.recipes) on a tiny teacher and a tiny SST-2-shaped folder
(benchmarks.conll has its own file, tests/test_conll_benchmark.py).

The real figures come from `python -m benchmarks.sst2` and `python -m benchmarks.recipes`; here the same
commands run end to end on tiny models, resume their finished rows, share rows with each other, and
refuse bad data folders with one line. The benchmark scripts refuse a missing or wrong model with one
line, and the committed results sit in one folder per tool, where the README links to them.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alembert.resolvers import register_resolvers

from alembert.conf import CONF_DIR
from benchmarks.table.cli import compose_rows
from benchmarks.table.config import BenchConfig, RowSpec, check_rows
from alembert.config import from_dict
from benchmarks.table.report import pareto_flags
from benchmarks.table.significance import paired_difference
from alembert.errors import AlembertError

register_resolvers(OmegaConf.register_new_resolver)  # the recipe files use one_minus and kd_params
ROOT = Path(__file__).resolve().parents[1]
WORDS = {1: ["good", "great", "fine", "lovely"], 0: ["bad", "awful", "dull", "poor"]}


def write_sst2(folder: Path, rows: int = 48, header: str = "sentence\tlabel") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        lines = [header] + [f"a {WORDS[i % 2][i % 4]} film {i}\t{i % 2}" for i in range(rows)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def benchmark(*args: str, module: str = "benchmarks.sst2") -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def composed_rows(config_name: str, *overrides: str) -> dict:
    """The benchmark's rows as its command would compose them: row id -> Row."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        raw = OmegaConf.to_container(compose(config_name=config_name, overrides=list(overrides)), resolve=True)
        raw.pop("hydra", None)
        def compose_run(run_overrides: list[str]) -> dict:
            return OmegaConf.to_container(compose(config_name="config", overrides=run_overrides), resolve=True)

        return {row.spec.id: row for row in compose_rows(from_dict(BenchConfig, raw), compose_run)}


def test_a_folder_without_the_files_is_refused_in_one_line(tmp_path):
    result = benchmark(f"data_dir={tmp_path}", f"work_dir={tmp_path / 'work'}")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "lacks train.tsv, dev.tsv, test.tsv" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("record.json"))


def test_files_with_other_columns_are_refused(tmp_path):
    data = write_sst2(tmp_path / "data", header="text\ttarget")
    result = benchmark(f"data_dir={data}", f"work_dir={tmp_path / 'work'}")
    assert result.returncode != 0 and "not ['sentence', 'label']" in result.stderr and "Traceback" not in result.stderr


def test_rows_must_name_earlier_parents_and_known_kinds():
    teacher = RowSpec("teacher", "t", "teacher")
    with pytest.raises(AlembertError, match="parent"):
        check_rows((teacher, RowSpec("pruned", "p", "compress", parent="later")))
    with pytest.raises(AlembertError, match="kind=magic"):
        check_rows((teacher, RowSpec("x", "x", "magic")))
    with pytest.raises(AlembertError, match="appears twice"):
        check_rows((teacher, RowSpec("teacher", "again", "distil")))
    with pytest.raises(AlembertError, match="baseline=later, which is not an earlier row"):
        check_rows((teacher, RowSpec("kd", "k", "distil", baseline="later")))


def test_paired_difference_counts_discordant_examples_and_runs_mcnemars_exact_test():
    # 10 examples: a alone right on 8, b alone right on 2, both right on the rest (none here)
    a = [True] * 8 + [False] * 2
    b = [False] * 8 + [True] * 2
    difference = paired_difference(a, b)
    assert difference.delta == pytest.approx(0.6) and (difference.only_a, difference.only_b) == (8, 2)
    assert difference.p_value == pytest.approx(2 * (1 + 10 + 45) / 2**10)  # two-sided binomial, n=10, k<=2
    assert difference.low < 0.6 < difference.high and difference.summary().startswith("+60.0 [")
    same = paired_difference([True, False, True], [True, False, True])
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_pareto_front_keeps_only_undominated_points():
    points = [{"accuracy": 0.9, "latency_ms": 30.0}, {"accuracy": 0.88, "latency_ms": 5.0},
              {"accuracy": 0.85, "latency_ms": 6.0}, {"accuracy": 0.88, "latency_ms": 5.0}, {"accuracy": 0.80, "latency_ms": 2.0}]
    assert pareto_flags(points) == [True, True, False, True, True]


@pytest.fixture
def tiny_benchmark(tiny_dir, tmp_path):
    """The quick mode with a 4-layer tiny teacher in place of MiniLM and a 48-sentence folder in place of SST-2."""
    data = write_sst2(tmp_path / "data")
    overrides = [f"teacher={tiny_dir('bert', 4)}", f"finetune.cache_dir={tmp_path / 'teachers'}", "data.max_length=32",
                 "train.batch_size=16", "compress.seq_len=16", "latency_seq_len=16",
                 "++compress.settings.factorize_embeddings.embedding_size=8"]
    return [f"data_dir={data}", "mode=quick", f"work_dir={tmp_path / 'work'}", f"results_dir={tmp_path / 'results'}",
            "overrides=[" + ",".join(f"'{item}'" for item in overrides) + "]"]


def test_quick_mode_runs_every_row_end_to_end_and_resumes_from_its_cache(tiny_benchmark, tmp_path):
    first = benchmark(*tiny_benchmark)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "sst2_quick.json").read_text())
    rows = results["rows"]
    students = {"no_kd_3l", "kd_3l", "tinybert_3l", "tinybert_2l", "pruned_3l", "albert_3l", "vocab_3l", "vocab_e128_3l",
                "vocab_ffn_e128_3l", "bilstm", "cnn", "static"}
    assert {row["id"] for row in rows} == {"teacher"} | students
    for student in students:  # PyTorch, fused ONNX and int8 ONNX for every student
        runtimes = {row["runtime"] for row in rows if row["id"] == student}
        assert runtimes == {"PyTorch fp32", "ONNX optimized", "ONNX int8_dynamic"}, (student, runtimes)
    teacher = next(row for row in rows if row["id"] == "teacher")
    assert teacher["speedup"] == 1.0 and teacher["pct_of_teacher"] == 100.0
    pruned = next(row for row in rows if row["id"] == "pruned_3l" and row["runtime"] == "PyTorch fp32")
    parent = next(row for row in rows if row["id"] == "tinybert_3l" and row["runtime"] == "PyTorch fp32")
    assert pruned["non_embedding_params"] < parent["non_embedding_params"]
    by_runtime = {row["runtime"]: row for row in rows if row["id"] == "vocab_3l"}
    assert by_runtime["PyTorch fp32"]["params"] < parent["params"]  # the unused word rows are gone
    # the ONNX graph reads the pruned vocabulary's ids too: the evaluation moved the test sentences into them
    assert by_runtime["ONNX optimized"]["accuracy"] == by_runtime["PyTorch fp32"]["accuracy"]
    assert {row["transfer_set"] for row in rows} == {len((tmp_path / "data" / "train.tsv").read_text().splitlines()) - 1}
    assert any(row["pareto"] == "★" for row in rows)
    assert (tmp_path / "results" / "sst2_quick.png").stat().st_size > 10_000
    assert "| model | runtime | accuracy |" in (tmp_path / "results" / "sst2_quick.md").read_text()

    again = benchmark(*tiny_benchmark)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing the finished row") == 1 + len(students)
    rerun = json.loads((tmp_path / "results" / "sst2_quick.json").read_text())["rows"]
    assert [row["accuracy"] for row in rerun] == [row["accuracy"] for row in rows]


def test_the_recipes_table_composes_the_sst2_rows_it_shares_to_the_same_cache_keys(tmp_path):
    data = write_sst2(tmp_path / "data")
    sst2 = composed_rows("sst2", f"data_dir={data}")
    recipes = composed_rows("recipes", f"data_dir={data}")
    shared = {"teacher", "no_kd_3l", "kd_3l", "tinybert_3l", "tinybert_2l"}
    assert shared <= set(sst2) & set(recipes)
    assert all(sst2[row].folder == recipes[row].folder for row in shared)
    assert recipes["minilm_2l"].config.recipe.name == "minilm" and recipes["minilm_2l"].config.student.num_layers == 2
    assert len({row.key for row in recipes.values()}) == len(recipes)  # no two rows share a cache folder
    other = composed_rows("recipes", f"data_dir={data}", "overrides=['train.lr=5e-5']")
    assert all(other[row].key != recipes[row].key for row in recipes)


def test_the_all_sentences_mode_has_its_own_rows_paired_against_same_size_baselines(tmp_path):
    data = write_sst2(tmp_path / "data")
    rows = composed_rows("sst2", f"data_dir={data}", "mode=all")
    assert {row.spec.baseline for row in rows.values() if row.spec.kind == "distil" and row.config.student.kind == "transformer"} \
        == {"no_kd_3l", "no_kd_2l"}
    assert all(row.config.data.max_train_examples is None for row in rows.values())  # every training sentence
    assert rows["tinybert_3l"].config.train.epochs == 1 and rows["kd_3l"].config.train.epochs == 2
    for student, baseline in (("kd_3l", "no_kd_3l"), ("kd_2l", "no_kd_2l")):
        assert rows[student].config.student.num_layers == rows[baseline].config.student.num_layers
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sst2.yaml"))
    bench = from_dict(BenchConfig, {**{k: v for k, v in raw.items() if k != "hydra"}, "mode": "all"})
    assert "vs_baseline" in bench.active_columns and "vs_baseline" not in from_dict(BenchConfig, {
        **{k: v for k, v in raw.items() if k != "hydra"}, "mode": "full"}).active_columns


def test_the_demo_mode_needs_no_data_folder(tmp_path):
    rows = composed_rows("recipes", "mode=demo", f"data_dir={tmp_path / 'missing'}")
    assert {row.config.data.task for row in rows.values()} == {"demo"}
    assert all(row.config.data.train is None for row in rows.values())


def test_recipes_quick_mode_trains_every_recipe_and_reuses_the_sst2_rows(tiny_benchmark, tmp_path):
    first = benchmark(*tiny_benchmark)  # the SST-2 table first: the recipes table must reuse its shared rows
    assert first.returncode == 0, first.stderr[-3000:]
    recipes = benchmark(*tiny_benchmark, module="benchmarks.recipes")
    assert recipes.returncode == 0, recipes.stderr[-3000:]
    assert recipes.stdout.count("reusing the finished row") == 5
    rows = json.loads((tmp_path / "results" / "recipes_quick.json").read_text())["rows"]
    expected = {f"{recipe}_{layers}l" for recipe in ("no_kd", "kd", "distilbert", "tinybert", "minilm", "pkd", "theseus")
                for layers in (2, 3)}
    assert {row["id"] for row in rows} == {"teacher"} | expected
    assert {row["runtime"] for row in rows} == {"PyTorch fp32"}  # onnx_variants: [] exports nothing
    by_id = {row["id"]: row for row in rows}
    assert by_id["teacher"]["agreement"] == 1.0 and 0.0 <= by_id["minilm_3l"]["agreement"] <= 1.0
    assert by_id["kd_2l"]["non_embedding_params"] < by_id["kd_3l"]["non_embedding_params"]
    for row_id in expected - {"no_kd_2l", "no_kd_3l"}:  # every recipe is tested against its same-size baseline
        wins, losses = map(int, by_id[row_id]["wins_losses"].split("/"))
        delta = 100 * (by_id[row_id]["accuracy"] - by_id[f"no_kd_{row_id[-2:]}"]["accuracy"])
        assert by_id[row_id]["vs_baseline"].startswith(f"{delta:+.1f} [") and (by_id[row_id]["p_value"] == "<0.001" or 0 <= float(by_id[row_id]["p_value"]) <= 1)
        assert wins - losses == round(delta / 100 * by_id[row_id]["eval_examples"])
    table = (tmp_path / "results" / "recipes_quick.md").read_text()
    assert "| model | accuracy | vs_baseline | p_value | wins_losses |" in table and "runtime" not in table.splitlines()[2]


def test_the_layerdrop_benchmark_cuts_both_teachers_to_every_depth(tiny_benchmark, tmp_path):
    done = benchmark(*tiny_benchmark, "rate=0.3", module="benchmarks.layerdrop")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "layerdrop_quick.json").read_text())
    assert [row["layers"] for row in result["rows"]] == [1, 2, 3, 4] and result["rate"] == 0.3
    assert set(result["variants"]) == {"plain", "layerdrop"}
    assert all(0.0 <= row[name] <= 1.0 for row in result["rows"] for name in ("plain", "layerdrop"))
    assert result["rows"][-1]["speedup"] == 1.0 and all(row["latency_ms"] > 0 for row in result["rows"])
    for row in result["rows"]:  # the gap column is the difference of the two accuracy columns
        assert row["layerdrop_vs_plain"].startswith(f"{100 * (row['layerdrop'] - row['plain']):+.1f} [")
    teachers = [path for path in (tmp_path / "work" / "layerdrop-teachers").iterdir() if path.is_dir()]
    assert len(teachers) == 2  # the two fine-tunes differ (finetune.train.layerdrop keys the teacher cache)
    assert (tmp_path / "results" / "layerdrop_quick.png").stat().st_size > 10_000
    assert "| layers | plain | layerdrop | layerdrop_vs_plain |" in (tmp_path / "results" / "layerdrop_quick.md").read_text()


def test_results_live_in_one_folder_per_tool_and_the_readme_links_resolve():
    results = ROOT / "benchmarks" / "results"
    assert sorted(path.name for path in results.iterdir() if not path.is_dir()) == []  # nothing loose at the top
    for name in ("sst2", "recipes", "conll", "layerdrop"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            assert compose(config_name=name).results_dir == f"benchmarks/results/{name}"
    linked = set(re.findall(r"benchmarks/results/[\w./-]+\.(?:md|json|png)", (ROOT / "README.md").read_text()))
    assert {"benchmarks/results/sst2/sst2.png", "benchmarks/results/recipes/recipes.md"} <= linked
    assert sorted(path for path in linked if not (ROOT / path).is_file()) == []


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run benchmarks/<name> as the README does (a plain script), importing this checkout's packages."""
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("name", "args", "message"), [
    ("compress_passes.py", [], "--model is required"),
    ("compress_passes.py", ["--model", "{missing}"], "is not a saved model directory (no config.json)"),
    ("compress_passes.py", ["--model", "{model}", "--data", "{missing}"], "lacks train.tsv, test.tsv"),
    ("compress_passes.py", ["--model", "{model}", "--scenarios", "prune everything"], "unknown scenario(s) 'prune everything'"),
    ("export_latency.py", [], "no model given"),
    ("export_latency.py", ["{missing}", "--name", "student"], "is not a saved model directory (no config.json)"),
    ("export_latency.py", ["{model}"], "--name is required"),
])
def test_benchmark_scripts_refuse_a_missing_or_wrong_argument_in_one_line(name, args, message, tiny_dir, tmp_path):
    paths = {"missing": str(tmp_path / "missing"), "model": str(tiny_dir("bert", 2))}
    result = script(name, *(arg.format(**paths) for arg in args), "--out", str(tmp_path / "out"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("alembert: error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
