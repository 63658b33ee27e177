"""setup -> fit every row -> export and time -> report."""

from __future__ import annotations

from pathlib import Path

from benchmarks.table.config import BenchConfig, Row
from benchmarks.table.measure import Settings, eval_set, measure_all
from benchmarks.table.report import Layout, default_columns, table_rows, write_results
from benchmarks.table.rows import build_rows
from benchmarks.table.significance import compare_to_baselines
from alembert.report import markdown_table


def run(bench: BenchConfig, rows: list[Row], work: Path, *, command: str) -> list[dict]:
    print(f"benchmark cache: {work} (finished rows are reused)")
    records, ctx = build_rows(rows, work)
    data = eval_set(ctx.prepared.loaders.eval, ctx.prepared.task.task, ctx.prepared.task.label_names)
    baselines = {row.spec.id: row.spec.baseline for row in rows if row.spec.baseline is not None}
    compare_to_baselines(records, baselines, data, ctx.prepared.loaders.eval)
    timing = Settings(runs=bench.settings.latency_runs, throughput_runs=bench.settings.throughput_runs, threads=bench.threads,
                      seq_len=bench.seq_len, throughput_batch=bench.throughput_batch)
    entries = measure_all(records, bench.active_variants, data, timing)
    layout = Layout(bench.results_name, bench.settings.dataset, bench.active_columns or default_columns(data.metric), bench.threads,
                    seq_len=bench.seq_len, throughput_batch=bench.throughput_batch, metric=data.metric, metric_label=bench.metric_label, notes=bench.settings.notes)
    path = write_results(entries, Path(bench.results_dir), layout, command=command)
    print(f"\n{markdown_table(table_rows(entries, data.metric), list(layout.columns))}\n\n"
          f"written: {path}, {path.with_suffix('.json')}, {path.with_suffix('.png')}")
    return entries
