"""The benchmark's outputs: a markdown table, a JSON file and a plot of the task's metric (accuracy, entity F1, ...)
against latency."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from alembert.errors import atomic_write_text  # noqa: E402
from alembert.hardware import cpu  # noqa: E402
from alembert.report import markdown_table  # noqa: E402

METRIC = "{metric}"  # in COLUMNS: the task's primary metric (accuracy, f1, ...)
COLUMNS = ("model", "runtime", METRIC, "pct_of_teacher", "params", "non_embedding_params", "size_mb",
           "latency_ms", "throughput", "speedup", "transfer_set", "train_s", "pareto")


def default_columns(metric: str) -> tuple[str, ...]:
    return tuple(metric if column == METRIC else column for column in COLUMNS)


@dataclass(frozen=True)
class Layout:
    """How a benchmark's results are named and titled, and which columns its table shows."""

    name: str  # file stem: <name>.md, .json, .png
    dataset: str  # what the metric is measured on, e.g. "SST-2 test (GLUE dev)"
    columns: tuple[str, ...] = default_columns("accuracy")
    threads: int = 2
    seq_len: int = 64  # of the timed inputs
    throughput_batch: int = 32
    metric: str = "accuracy"  # the task's primary metric: the key of every entry's figure
    metric_label: str = ""  # its name on the figure; empty: `metric`
    notes: str = ""  # a line under the header

    @property
    def label(self) -> str:
        return self.metric_label or self.metric


def pareto_flags(entries: list[dict], metric: str = "accuracy") -> list[bool]:
    """An entry is on the front when no other scores at least as high and runs as fast, and better in one."""
    def dominated(entry: dict) -> bool:
        return any(other[metric] >= entry[metric] and other["latency_ms"] <= entry["latency_ms"]
                   and (other[metric] > entry[metric] or other["latency_ms"] < entry["latency_ms"])
                   for other in entries)
    return [not dominated(entry) for entry in entries]


def table_rows(entries: list[dict], metric: str = "accuracy") -> list[dict]:
    timed = [entry for entry in entries if "latency_ms" in entry]
    flags = dict(zip(map(id, timed), pareto_flags(timed, metric)))
    return [{**secondary_metrics(entry), **entry, "model": entry["label"], "pareto": "★" if flags.get(id(entry)) else "",
             metric: round(entry[metric], 4), "agreement": round(entry["agreement"], 4) if "agreement" in entry else "",
             "pct_of_teacher": round(entry.get("pct_of_teacher", 0), 1),
             "size_mb": round(entry["size_mb"], 1), "latency_ms": round(entry.get("latency_ms", float("nan")), 2),
             "throughput": round(entry.get("throughput", float("nan")), 1), "speedup": round(entry.get("speedup", 0), 2),
             "runtime": entry["runtime"] + (f" (failed: {entry['error']})" if "error" in entry else "")}
            for entry in entries]


def secondary_metrics(entry: dict) -> dict:
    """The entry's other metrics (QA's exact match beside F1, NER's precision) as columns a table may show."""
    return {name: round(value, 4) for name, value in (entry.get("metrics") or {}).items() if isinstance(value, float)}


def machine() -> str:
    return f"{cpu().describe()}, {date.today().isoformat()}"


def write_results(entries: list[dict], out_dir: Path, layout: Layout, *, command: str) -> Path:
    rows = table_rows(entries, layout.metric)
    notes = f"{layout.notes.strip()}\n" if layout.notes.strip() else ""
    header = (f"{layout.dataset}, {entries[0]['eval_examples']} examples. Latency: batch 1, sequence "
              f"{layout.seq_len}, p50; throughput: sequences/s at batch {layout.throughput_batch}, sequence "
              f"{layout.seq_len}; {layout.threads} threads; {machine()}.\n"
              f"{notes}Reproduce: `{command}`\n\n")
    atomic_write_text(out_dir / f"{layout.name}.md", header + markdown_table(rows, list(layout.columns)) + "\n")
    atomic_write_text(out_dir / f"{layout.name}.json", json.dumps(
        {"command": command, "threads": layout.threads, "machine": machine(), "metric": layout.metric,
         "notes": layout.notes.strip(), "rows": rows},
        indent=2, default=str) + "\n")
    plot(rows, out_dir / f"{layout.name}.png", layout)
    return out_dir / f"{layout.name}.md"


def plot(rows: list[dict], path: Path, layout: Layout) -> None:
    """The metric against batch-1 latency on a log axis; Pareto points are filled and labelled."""
    metric, dataset = layout.metric, layout.dataset
    timed = [row for row in rows if row.get("latency_ms") == row.get("latency_ms") and "error" not in row]
    figure, axes = plt.subplots(figsize=(9, 6))
    for row in timed:
        on_front = row["pareto"] == "★"
        marker = {"PyTorch fp32": "o"}.get(row["runtime"], "s" if "int8" in row["runtime"] else "^")
        axes.scatter(row["latency_ms"], row[metric], marker=marker, s=60,
                     facecolors="tab:red" if on_front else "none", edgecolors="tab:red" if on_front else "tab:blue")
        axes.annotate(f"{row['model']}\n{row['runtime']}", (row["latency_ms"], row[metric]), fontsize=6,
                      xytext=(4, 2), textcoords="offset points")
    front = sorted((row for row in timed if row["pareto"] == "★"), key=lambda row: row["latency_ms"])
    axes.plot([row["latency_ms"] for row in front], [row[metric] for row in front], color="tab:red", linewidth=1,
              label="Pareto front")
    axes.set_xscale("log")
    axes.set_xlabel(f"batch-1 latency at sequence {layout.seq_len}, ms (log scale)")
    axes.set_ylabel(f"{dataset} {layout.label}")
    axes.set_title(f"{dataset}: {layout.label} against latency (o PyTorch, ^ ONNX fp32, s ONNX int8)", fontsize=10)
    axes.legend(loc="lower right")
    save_figure(figure, path)


def save_figure(figure, path: Path) -> None:
    """Write `figure` as a PNG at `path` through a temporary file, so a killed run leaves no half-written image."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as handle:
        figure.savefig(handle.name, dpi=130)
    os.replace(handle.name, path)
    plt.close(figure)
