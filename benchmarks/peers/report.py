"""The peers table (markdown and JSON) and figure: every model's latency per setting, and per setting the bundle's
best against Optimum's best, with the goal for this CPU."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from alembert import hardware  # noqa: E402
from alembert.errors import atomic_write_text  # noqa: E402
from alembert.report import markdown_table  # noqa: E402
from benchmarks.peers.compare import OPTIMUM, side_of  # noqa: E402
from benchmarks.table.report import machine  # noqa: E402
from export.bench import PYTORCH  # noqa: E402

COLOURS = {"PyTorch": "tab:gray", "alembert": "tab:blue", OPTIMUM: "tab:orange"}


def goal_ratio(cpu: hardware.CPU) -> float:
    """The issue's bar: the bundle's best at most half of Optimum's best with AMX, 0.7 of it elsewhere."""
    return 0.5 if "amx_bf16" in cpu.flags or "amx_int8" in cpu.flags else 0.7


def setting_label(threads: int, batch: int) -> str:
    return f"b{batch} {threads}t"


def display(name: str) -> str:
    return "PyTorch fp32 eager" if name == PYTORCH else name if side_of(name) == OPTIMUM else f"bundle {name}"


def model_rows(timings: dict, checks: dict) -> list[dict]:
    settings = list(timings)
    rows = []
    for name in next(iter(timings.values())):
        check = checks.get(name, {})
        row = {"model": display(name), "side": side_of(name), "metric": _fmt(check.get("metric"), 4),
               "max_abs_diff": _fmt(check.get("max_abs_diff"), 6, exp=True)}
        row |= {setting_label(*setting): f"{timings[setting][name].p50_ms:.2f}" for setting in settings}
        rows.append(row)
    return rows


def summary_rows(timings: dict, cpu: hardware.CPU) -> list[dict]:
    goal = goal_ratio(cpu)
    rows = []
    for (threads, batch), by_name in timings.items():
        ms = {name: timing.p50_ms for name, timing in by_name.items()}
        ours = min((n for n in ms if side_of(n) == "alembert"), key=ms.get)
        peer = min((n for n in ms if side_of(n) == OPTIMUM), key=ms.get)
        slower = [display(n) for n in ms if side_of(n) == "alembert" and ms[n] > ms[PYTORCH]]
        ratio = ms[ours] / ms[peer]
        rows.append({"setting": setting_label(threads, batch), "bundle best": f"{display(ours)} {ms[ours]:.2f} ms",
                     "Optimum best": f"{display(peer)} {ms[peer]:.2f} ms", "ratio": f"{ratio:.2f}",
                     f"goal <= {goal}": "met" if ratio <= goal else f"missed by {ratio - goal:.2f}",
                     "vs PyTorch": f"{ms[PYTORCH] / ms[ours]:.2f}x faster",
                     "bundle variants slower than PyTorch": ", ".join(slower) or "none"})
    return rows


def write(out: Path, timings: dict, checks: dict, optimum: dict, manifest: dict, *, command: str, seq_len: int) -> Path:
    cpu = hardware.cpu()
    models, summary = model_rows(timings, checks), summary_rows(timings, cpu)
    versions = ", ".join(f"{name} {value}" for name, value in optimum["versions"].items())
    header = (f"The bundle against Optimum on one student, sequence {seq_len}, p50 ms; every setting's models timed in "
              f"turns in one process. {machine()}.\nOptimum side ({versions}): {optimum['quantization']}; "
              f"{', '.join(optimum['optimization'].values())}; run on a bare onnxruntime session. "
              f"`metric` is the task metric on the bundle's metric split; `max_abs_diff` is the largest logit "
              f"difference from alembert's PyTorch model on a padded random feed.\nReproduce: `{command}`\n\n")
    transformers4 = checks.get(next((k for k in checks if k.startswith("transformers 4")), ""), {})
    note = (f"\nOptimum exported from transformers 4.x, whose logits differ from transformers 5's by "
            f"{transformers4['max_abs_diff']:.2e} on the same feed.\n") if transformers4 else "\n"
    text = (header + markdown_table(summary, list(summary[0])) + "\n\n" + markdown_table(models, list(models[0])) + note)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "peers.md", text)
    atomic_write_text(out / "peers.json", json.dumps({
        "machine": cpu.record(), "command": command, "seq_len": seq_len, "summary": summary, "models": models,
        "checks": checks, "optimum": {k: v for k, v in optimum.items() if k != "reference_logits"},
        "bundle_fastest": manifest.get("fastest")}, indent=2) + "\n")
    figure(out / "peers.png", timings, cpu)
    return out / "peers.md"


def figure(path: Path, timings: dict, cpu: hardware.CPU) -> None:
    """One panel per setting: every model's p50 latency, PyTorch grey, the bundle blue, Optimum orange."""
    fig, axes = plt.subplots(1, len(timings), figsize=(4.2 * len(timings), 0.32 * len(next(iter(timings.values()))) + 1.6),
                             sharey=True)
    axes = axes if len(timings) > 1 else [axes]
    names = list(next(iter(timings.values())))
    for axis, ((threads, batch), by_name) in zip(axes, timings.items()):
        values = [by_name[name].p50_ms for name in names]
        axis.barh([display(n) for n in names], values, color=[COLOURS[side_of(n)] for n in names])
        axis.set_title(f"batch {batch}, {threads} thread{'s' if threads > 1 else ''}")
        axis.set_xlabel("p50 latency, ms (lower is better)")
        axis.invert_yaxis()
    fig.suptitle(f"alembert bundle vs Optimum, {cpu.describe()}", fontsize=9)
    fig.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    fig.savefig(temporary, dpi=110)
    plt.close(fig)
    temporary.replace(path)


def _fmt(value, digits: int, exp: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:.2e}" if exp else f"{value:.{digits}f}"
