"""The accuracy-against-depth table (markdown and JSON) and its figure."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from alembert.errors import atomic_write_text  # noqa: E402
from alembert.report import markdown_table  # noqa: E402
from benchmarks.table.report import machine, save_figure  # noqa: E402

COLUMNS = ["layers", "plain", "layerdrop", "layerdrop_vs_plain", "p_value", "latency_ms", "speedup"]


def table_rows(result: dict) -> list[dict]:
    full = result["latency_ms"][max(result["depths"])]
    rows = []
    for depth in result["depths"]:
        rows.append({"layers": depth, **{name: round(v["metric"][depth], 4) for name, v in result["variants"].items()},
                     "layerdrop_vs_plain": result["gaps"][depth]["summary"], "p_value": result["gaps"][depth]["p_value"],
                     "latency_ms": round(result["latency_ms"][depth], 2), "speedup": round(full / result["latency_ms"][depth], 2)})
    return rows


def write_results(result: dict, bench, *, command: str) -> Path:
    out_dir, name = Path(bench.results_dir), bench.results_name
    rows = table_rows(result)
    times = "; ".join(f"{v['label']}: fine-tune {v['finetune_s']:.0f} s" for v in result["variants"].values())
    header = (f"{bench.settings.dataset}, {result['eval_examples']} examples; {result['metric']} of each model cut to "
              f"`layers` by drop_layers strategy=depth, no retraining. plain / layerdrop: {times}. layerdrop_vs_plain: "
              f"points with a 95% paired-bootstrap interval, p_value: exact sign test. Latency: batch 1, sequence "
              f"{bench.seq_len}, p50, PyTorch; {bench.threads} threads; {machine()}.\nReproduce: `{command}`\n\n")
    atomic_write_text(out_dir / f"{name}.md", header + markdown_table(rows, COLUMNS) + "\n")
    atomic_write_text(out_dir / f"{name}.json", json.dumps(
        {"command": command, "machine": machine(), "threads": bench.threads, "rate": bench.rate, **result, "rows": rows},
        indent=2, default=str) + "\n")
    plot(rows, result, out_dir / f"{name}.png", bench.settings.dataset)
    return out_dir / f"{name}.md"


def plot(rows: list[dict], result: dict, path: Path, dataset: str) -> None:
    figure, axes = plt.subplots(figsize=(7, 5))
    depths = [row["layers"] for row in rows]
    for name, style in (("plain", "o--"), ("layerdrop", "s-")):
        axes.plot(depths, [row[name] for row in rows], style, label=result["variants"][name]["label"])
    axes.set_xticks(depths)
    axes.set_xlabel("layers kept (drop_layers strategy=depth, no retraining)")
    axes.set_ylabel(f"{dataset} {result['metric']}")
    axes.set_title(f"{dataset}: {result['metric']} against depth, one model cut to each depth", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    save_figure(figure, path)
