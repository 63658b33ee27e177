"""setup -> fit every row -> export and time -> report."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sst2.config import BenchConfig, Row
from benchmarks.sst2.measure import Settings, eval_set, measure_all
from benchmarks.sst2.report import COLUMNS, table_rows, write_results
from benchmarks.sst2.rows import build_rows
from distill.report import markdown_table


def run(bench: BenchConfig, rows: list[Row], work: Path, *, command: str) -> list[dict]:
    print(f"benchmark cache: {work} (finished rows are reused)")
    records, ctx = build_rows(rows, work)
    timing = Settings(runs=bench.settings.latency_runs, throughput_runs=bench.settings.throughput_runs, threads=bench.threads)
    entries = measure_all(records, bench.onnx_variants, eval_set(ctx.prepared.loaders.eval), timing, work)
    path = write_results(entries, Path(bench.results_dir), bench.results_name, threads=bench.threads, command=command)
    print(f"\n{markdown_table(table_rows(entries), COLUMNS)}\n\nwritten: {path}, {path.with_suffix('.json')}, {path.with_suffix('.png')}")
    return entries
