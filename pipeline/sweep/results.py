"""After a sweep: the best trial (one objective) or the Pareto set (several) as a table, plots, and an export.

Each row carries the trial's objective values, its figures, its sampled parameters and the exact command that
reproduces it as a single `python -m distill` run.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from alembert.config import from_dict
from alembert.errors import atomic_write_text, fail
from alembert.report import markdown_table
from pipeline.run import RunConfig
from export.bundle import build_bundle
from export.config import ExportConfig
from pipeline.sweep.settings import SweepConfig
from pipeline.sweep.figures import final_model_dir

TABLE = "results"
SHOWN_FIGURES = ("accuracy", "dev_accuracy", "latency_ms", "size_mb", "params", "onnx_latency_ms")  # beside the objectives


def command(trial: FrozenTrial) -> str:
    """The single run this trial was: python -m distill with its overrides (plus the export it was measured by)."""
    text = "python -m distill " + " ".join(shlex.quote(o) for o in trial.user_attrs.get("overrides", []))
    variant = trial.params.get("export.variant")
    if variant is not None:
        text += f" && python -m export model=<run dir>/student variants=[{variant}]"
    return text


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial, or the Pareto set sorted by the first objective (best first); empty before any completes."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    return _best_first(study, study.best_trials)


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every completed trial, best first by the first objective: the whole sweep, not only its winners."""
    return _best_first(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _best_first(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(trials, key=lambda t: (sign * t.values[0], t.number))


def trial_row(trial: FrozenTrial, sweep: SweepConfig) -> dict:
    """A trial's objective values, the figures shown beside them, and what it sampled."""
    row = {"trial": trial.number, **{spec.metric: value for spec, value in zip(sweep.objectives, trial.values)}}
    figures = trial.user_attrs.get("figures", {})
    row.update({key: figures[key] for key in SHOWN_FIGURES if key in figures and key not in row})
    row["sampled"] = dict(trial.params)
    return row


def result_rows(study: optuna.Study, sweep: SweepConfig) -> list[dict]:
    rows = []
    for trial in best_trials(study):
        row = trial_row(trial, sweep)
        figures = trial.user_attrs.get("figures", {})
        row["figures"] = figures
        row["trial_dir"] = trial.user_attrs.get("trial_dir")
        row["command"] = command(trial)
        rows.append(row)
    return rows


def save_results(study: optuna.Study, sweep: SweepConfig, out_dir: Path) -> str:
    """Write results.md and results.json (atomically) under the sweep dir; return the markdown."""
    rows = result_rows(study, sweep)
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    kind = "best trial" if len(sweep.objectives) == 1 else "Pareto set"
    columns = ["trial", *(s.metric for s in sweep.objectives)]
    columns += [key for key in SHOWN_FIGURES if key not in columns and any(key in row for row in rows)]
    shown = [{**row, "sampled": _sampled_text(row), "command": f"`{row['command']}`"} for row in rows]
    table = markdown_table(shown, columns + ["sampled", "command"]) if rows else "(no completed trial yet)"
    every = [trial_row(trial, sweep) for trial in completed_trials(study)]
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    text = f"# Sweep {sweep.study_name}: {kind}\n\nTrials: {summary}.\n\n{table}\n"
    if len(every) > len(rows):
        listed = [{**row, "sampled": _sampled_text(row)} for row in every]
        text += f"\n## Every completed trial, best first\n\n{markdown_table(listed, columns + ['sampled'])}\n"
    atomic_write_text(out_dir / f"{TABLE}.md", text)
    atomic_write_text(out_dir / f"{TABLE}.json", json.dumps({"study": sweep.study_name, "kind": kind, "trials": counts,
                                                             "objectives": [vars(s) for s in sweep.objectives],
                                                             "rows": rows, "completed": every}, indent=2) + "\n")
    return text


def _sampled_text(row: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["sampled"].items())


def _save_figure(axes, path: Path) -> None:
    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    figure.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        import matplotlib.pyplot as plt

        plt.close(figure)


def save_plots(study: optuna.Study, sweep: SweepConfig, out_dir: Path) -> dict[str, str]:
    """PNG plots; returns {plot: path or the reason it was skipped}. Importances need two completed trials."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    names = [s.metric for s in sweep.objectives]
    first = (lambda t: t.values[0]) if len(names) > 1 else None
    wanted = {"history": lambda: plots.plot_optimization_history(study, target=first, target_name=names[0]),
              "importances": lambda: plots.plot_param_importances(study, target=first, target_name=names[0])}
    if len(names) > 1:
        wanted["pareto_front"] = lambda: plots.plot_pareto_front(study, target_names=names)
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    done = {}
    for name, draw in wanted.items():
        if completed < (2 if name == "importances" else 1):
            done[name] = f"skipped: {completed} completed trial(s)"
            continue
        path = out_dir / "plots" / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
                _save_figure(draw(), path)
            done[name] = str(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances of a constant space
            done[name] = f"skipped: {err}"
    return done


def chosen_trial(study: optuna.Study, sweep: SweepConfig) -> FrozenTrial:
    """The trial export_best exports: `export_trial` (one of the Pareto set), else the best by the first objective."""
    best = best_trials(study)
    if not best:
        raise fail("export_best=true but no trial has completed", "run more trials first")
    if sweep.export_trial is None:
        return best[0]
    matches = [t for t in best if t.number == sweep.export_trial]
    if not matches:
        raise fail(f"export_trial={sweep.export_trial} is not among the best trials", f"choose one of {[t.number for t in best]}")
    return matches[0]


def export_best(trial: FrozenTrial, config: RunConfig, sweep: SweepConfig, out: Path) -> Path:
    """Export the trial's final model (compressed if it was) to an ONNX bundle, with the trial's data for checks."""
    settings = {**sweep.export.config, "model": str(final_model_dir(config, Path(trial.user_attrs["trial_dir"]))), "out": str(out)}
    return build_bundle(replace(from_dict(ExportConfig, settings), data=config.data))
