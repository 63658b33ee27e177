"""Optuna sweeps: bad input fails with one line, spaces sample and compose, a tiny sweep end to end with resume,
the Pareto table, pruning through fit's on_evaluate callback."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import optuna
import pytest
from hydra import initialize_config_dir
from optuna.trial import TrialState

from alembert.errors import AlembertError
from pipeline.run import RunConfig
from distill.sweep import __main__ as cli
from pipeline.sweep import results
from pipeline.sweep.driver import Trials, Worker, run_worker
from pipeline.sweep.figures import ExportPlan, measure_trial, onnx_figures
from pipeline.sweep.settings import SWEEP_KEYS, ExportSettings, ObjectiveSpec, SweepConfig
from pipeline.sweep.space import hydra_value, overrides_for, parse_space, sample
from pipeline.sweep.sweep import prepare
from sweep_helpers import ROOT, TINY_BASE, environment, sweep_cli, sweep_file

pytestmark = pytest.mark.timeout(240)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def _main_error(path: Path, *args: str) -> str:
    with pytest.raises(AlembertError) as err:
        cli.main([f"sweep={path}", *args])
    return str(err.value)


@pytest.mark.parametrize("changes, expected", [
    ({"space": {"kd.nope": {"type": "float", "low": 1, "high": 2}}}, "space key kd.nope does not exist"),
    ({"space": {"kd.temperature": {"type": "float", "low": 4, "high": 2}}}, "empty or inverted range: low=4 >= high=2"),
    ({"space": {"kd.temperature": {"type": "float", "low": 2, "high": 2}}}, "empty or inverted range"),
    ({"space": {"student.num_layers": {"type": "categorical", "choices": []}}}, "space entry student.num_layers has no choices"),
    ({"space": {"kd.alpha": {"type": "uniform", "low": 0, "high": 1}}}, "has type 'uniform'; use one of float, int, categorical"),
    ({"space": {"compress.settings.prune_ffn.nope": {"type": "float", "low": 0, "high": 0.5}}}, "compress.settings.prune_ffn.nope does not exist"),
    ({"objectives": [{"metric": "speed", "direction": "maximize"}]}, "objective metric 'speed' is not a figure"),
    ({"objectives": [{"metric": "onnx_latency_ms", "direction": "minimize"}]}, "needs the ONNX export of every trial"),
    ({"pruner": "median"}, "pruner=median needs a single objective"),
    ({"sampler": "grid"}, "sampler=grid is unknown"),
    ({"enqueue": [{"kd.temperature": 2.0}]}, "does not name exactly the space's keys"),
    ({"enqueue": [{"kd.temperature": 9.0, "student.num_layers": 1}]}, "enqueued kd.temperature=9.0 is outside the space"),
    ({"enqueue": [{"kd.temperature": "warm", "student.num_layers": 1}]}, "enqueued kd.temperature=warm is outside the space"),
])
def test_bad_sweep_settings_fail_before_any_trial(tiny_dir, tmp_path, changes, expected):
    message = _main_error(sweep_file(tmp_path, tiny_dir("bert"), **changes))
    assert expected in message
    assert not (tmp_path / "sweep").exists()  # nothing ran, no storage was created


def test_a_study_with_other_objectives_is_refused(tiny_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="tiny", storage=storage, directions=["minimize"])
    study.set_metric_names(["size_mb"])
    message = _main_error(sweep_file(tmp_path, tiny_dir("bert")), f"storage={storage}")
    assert "study 'tiny'" in message and "size_mb (minimize)" in message and "dev_accuracy (maximize)" in message
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 0


@pytest.mark.parametrize("args, expected", [
    (["sweep=nope"], "sweep=nope is neither in"),
    (["sweep=demo", "storage=postgresql+psycopg2://alembert@127.0.0.1:{port}/none", "teacher={teacher}"],
     "cannot reach the storage postgresql+psycopg2://alembert@127.0.0.1:{port}/none"),
])
def test_cli_errors_are_one_line_with_exit_code_2(tiny_dir, tmp_path, args, expected):
    port = _closed_port()
    fill = {"port": port, "teacher": tiny_dir("bert")}
    result = sweep_cli(*(a.format(**fill) for a in args), f"out_dir={tmp_path / 'sweep'}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alembert: error: "), result.stderr
    assert expected.format(**fill) in lines[0]
    assert "demo" in lines[0] or "storage" in lines[0]  # lists the sweeps, or names the storage


def test_sweep_settings_and_run_keys_do_not_collide():
    run_keys = {f.name for f in fields(RunConfig)}
    assert SWEEP_KEYS.isdisjoint(run_keys)
    assert cli.split_args(["sweep=demo", "n_trials=3", "teacher=/t", "+heartbeat.interval=2", "data.max_length=8"])[1:] == (
        ["n_trials=3", "+heartbeat.interval=2"], ["teacher=/t", "data.max_length=8"])


def test_space_samples_and_writes_overrides_that_compose_to_the_same_config():
    space = parse_space({"kd.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": True},
                         "student.num_layers": {"type": "int", "low": 1, "high": 4, "step": 1},
                         "compress.passes": {"type": "categorical", "choices": [[], ["prune_ffn", "quantize_dynamic"]]},
                         "compress.settings.prune_ffn.ratio": {"type": "float", "low": 0.0, "high": 0.5}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    params = sample(study.ask(), space)
    assert 1.0 <= params["kd.temperature"] <= 8.0 and params["student.num_layers"] in range(1, 5)
    assert params["compress.passes"] in ("[]", "[prune_ffn,quantize_dynamic]")
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        base = cli.compose_plain(())
        overrides = overrides_for(params, base)
        config = cli.compose_run(overrides)
    assert overrides[-1].startswith("+compress.settings.prune_ffn.ratio=")  # absent from alembert/conf/config.yaml: added
    assert overrides[0] == f"kd.temperature={params['kd.temperature']!r}"
    assert config.kd.temperature == params["kd.temperature"]  # the float survives the round trip exactly
    assert config.student.num_layers == params["student.num_layers"]
    assert config.compress.settings["prune_ffn"]["ratio"] == params["compress.settings.prune_ffn.ratio"]
    assert config.recipe.stages[0].terms[1].params["temperature"] == params["kd.temperature"]  # resolvers applied
    assert [hydra_value(v) for v in (None, True, 0.1, ["a", 1])] == ["null", "true", "0.1", "[a,1]"]


def test_tiny_sweep_end_to_end_pareto_table_plots_reproduction_and_resume(tiny_dir, tmp_path):
    reference = {"kd.temperature": 4.0, "student.num_layers": 2}  # run first, and once, though the sweep resumes
    path = sweep_file(tmp_path, tiny_dir("bert"), enqueue=[reference])
    sweep_cli(f"sweep={path}")
    out = tmp_path / "sweep"
    first = (out / "trial_0" / "summary.json").stat().st_mtime_ns
    result = sweep_cli(f"sweep={path}", "n_trials=3")  # the same command with a larger budget resumes
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'tiny.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.trials[0].params == reference and all(t.params != reference for t in study.trials[1:])
    assert (out / "trial_0" / "summary.json").stat().st_mtime_ns == first  # finished trials are not run again
    assert sorted(p.name for p in out.glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    assert "# Sweep tiny: Pareto set" in result.stdout
    saved = json.loads((out / "results.json").read_text())
    assert saved["kind"] == "Pareto set" and saved["trials"]["complete"] == 3
    pareto = {row["trial"] for row in saved["rows"]}

    def dominates(a, b):  # maximize dev_accuracy, minimize latency_ms
        return a.values[0] >= b.values[0] and a.values[1] <= b.values[1] and a.values != b.values
    for trial in study.trials:
        assert (trial.number in pareto) == (not any(dominates(other, trial) for other in study.trials))
    for name in ("history", "importances", "pareto_front"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    row = saved["rows"][0]
    assert row["command"].startswith("python -m distill ") and f"kd.temperature={row['sampled']['kd.temperature']!r}" in row["command"]
    assert (out / "results.md").read_text().count("| `python -m distill ") == len(saved["rows"])
    assert [row["trial"] for row in saved["completed"]] == sorted(
        range(3), key=lambda n: (-study.trials[n].values[0], n))  # every trial, best dev accuracy first
    assert ("## Every completed trial" in (out / "results.md").read_text()) == (len(pareto) < 3)
    assert row["params"] == row["figures"]["params"] > 0  # the student's parameter count, beside the sampled values
    rerun = tmp_path / "rerun"
    subprocess.run([sys.executable, "-m", "distill", *shlex.split(row["command"])[3:], f"hydra.run.dir={rerun}"],
                   cwd=ROOT, env=environment(), check=True, capture_output=True, timeout=300)
    again = json.loads((rerun / "summary.json").read_text())[1]
    original = json.loads((out / f"trial_{row['trial']}" / "summary.json").read_text())[1]
    assert (again["accuracy"], again["kl_to_teacher"], again["params"]) == (
        original["accuracy"], original["kl_to_teacher"], original["params"])


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruner_stops_a_trial_at_its_first_dev_evaluation(tiny_dir, tmp_path):
    sweep = SweepConfig(study_name="prune", objectives=(ObjectiveSpec("dev_accuracy"),), n_trials=2, pruner="median",
                        base_overrides=tuple(TINY_BASE + [f"teacher={tiny_dir('bert')}", "train.epochs=3"]),
                        space={"kd.alpha": {"type": "float", "low": 0.0, "high": 1.0}}, out_dir=str(tmp_path))
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        base = cli.compose_plain(sweep.base_overrides)
        trials: Trials = prepare(sweep, base, cli.compose_run)
        study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
        run_worker(Worker(study, trials, nullcontext, heartbeat=False))
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    steps_per_epoch = 64 // 16
    assert all(list(t.intermediate_values) == [steps_per_epoch] for t in study.trials)  # pruned after epoch 1 of 3
    assert not (tmp_path / "trial_0" / "student").exists()  # the run stopped before saving its student


def test_onnx_figures_and_export_best_use_the_trials_model(tiny_dir, tmp_path):
    trial_dir = tmp_path / "trial_0"
    shutil.copytree(tiny_dir("bert"), trial_dir / "student")
    overrides = tuple(TINY_BASE + [f"teacher={tiny_dir('bert')}"])
    quick = {"latency": {"runs": 3, "warmup": 1}, "parity": {"batch_sizes": [1], "max_lengths": [16], "samples": 4}}
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        config = cli.compose_run(overrides)
    figures = onnx_figures(config, trial_dir / "student", tmp_path / "onnx", ExportPlan("fp32", quick))
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert figures["onnx_latency_ms"] == manifest["variants"]["fp32"]["latency_ms"] > 0
    assert figures["onnx_accuracy"] == manifest["variants"]["fp32"]["metric"]
    assert set(manifest["variants"]) == {"fp32"}  # only the measured variant is built
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"trial_dir": str(trial_dir), "overrides": list(overrides)}))
    sweep = SweepConfig(study_name="x", objectives=(ObjectiveSpec("dev_accuracy"),), export_best=True,
                        export=ExportSettings(config={"variants": [], **quick}))
    bundle = results.export_best(results.chosen_trial(study, sweep), config, sweep, tmp_path / "best-onnx")
    assert json.loads((bundle / "manifest.json").read_text())["source_model"] == str((trial_dir / "student").resolve())


def test_trials_that_keep_failing_stop_the_worker_with_the_reason(tiny_dir, tmp_path):
    sweep = SweepConfig(study_name="failing", objectives=(ObjectiveSpec("dev_accuracy"),), n_trials=5, max_failures=2,
                        base_overrides=tuple(TINY_BASE + [f"teacher={tiny_dir('bert')}", "student.init=teacher"]),
                        space={"student.hidden_size": {"type": "categorical", "choices": [16]}}, out_dir=str(tmp_path))
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        trials = prepare(sweep, cli.compose_plain(sweep.base_overrides), cli.compose_run)
        study = optuna.create_study(direction="maximize")
        with pytest.raises(AlembertError, match="2 trials in a row failed, the last with: .*init"):
            run_worker(Worker(study, trials, nullcontext, heartbeat=False))
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2


def test_a_compressed_trial_is_measured_as_the_compressed_model(tiny_dir, tmp_path):
    overrides = tuple(TINY_BASE + [f"teacher={tiny_dir('bert')}", "compress.passes=[prune_ffn]", "+compress.settings.prune_ffn.ratio=0.5"])
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        config = cli.compose_run(overrides)
    figures = measure_trial(config, tmp_path / "trial")
    last = json.loads((tmp_path / "trial" / "compressed" / "compress_report.json").read_text())[-1]
    student = json.loads((tmp_path / "trial" / "summary.json").read_text())[1]
    assert figures["params"] == last["params"] < student["params"]  # FFN pruned: the compressed model's size
    assert figures["latency_ms"] == last["latency_ms"] and figures["dev_accuracy"] == last["metric"]
    assert "agreement" not in figures  # that figure described the student before compression
    assert 0.0 <= figures["accuracy"] <= 1.0 and "mcc" in figures  # the compressed model scored on the eval split


@pytest.mark.parametrize("name", cli.sweep_names())
def test_every_shipped_sweep_passes_the_checks_that_run_before_any_trial(name):
    sweep = cli.load_sweep(cli.sweep_file(name), [], [])
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        base = cli.compose_plain(tuple(sweep.base_overrides))
        trials = prepare(sweep, base, cli.compose_run)  # every choice and range end composes
        if "recipe" in sweep.space:  # the recipe sweep's pkd choice adds the patient term to kd's two
            config = cli.compose_run(tuple(sweep.base_overrides) + overrides_for({"recipe": "pkd", "kd.alpha": 0.25}, base))
            assert [(t.name, t.weight) for t in config.recipe.stages[0].terms][:2] == [("hard", 0.25), ("kd", 0.75)]
            assert config.recipe.stages[0].terms[2].name == "pkd"
    assert {spec.key for spec in trials.space} == set(sweep.space)
