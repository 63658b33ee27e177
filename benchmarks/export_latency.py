"""Export figures for the README: bundle variants of a trained model, timed against PyTorch in one run.

    python benchmarks/export_latency.py /tmp/run1/student --name student
    python benchmarks/export_latency.py ~/.cache/alembert/teachers/<hash> --name teacher

Builds the bundle (demo task data for calibration and the dev metric), runs the bench grid, and
an int8 study (per-tensor vs per-channel vs reduced range, MinMax/Entropy/Percentile calibration)
at batch 1, sequence 64. Writes benchmarks/export_results/export_<name>*.md|json. Every ratio in one
table comes from one round-robin run; absolute milliseconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.report import save_table
from export.bench import BenchConfig, bench, SUMMARY_COLUMNS, COLUMNS
from export.bundle import build_bundle
from export.config import CalibrationConfig, ExportConfig

RESULTS = Path(__file__).resolve().parent / "export_results"
DEMO = DataConfig(task="demo", demo=DemoConfig(dev_size=2000))
STUDY = {  # int8 settings compared on accuracy and speed; the main bundle uses the first
    "per-tensor, minmax": dict(per_channel=False, reduce_range=False, calibration=CalibrationConfig(method="minmax")),
    "per-channel, entropy": dict(per_channel=True, reduce_range=False, calibration=CalibrationConfig(method="entropy", samples=64)),
    "reduce-range, percentile": dict(per_channel=False, reduce_range=True, calibration=CalibrationConfig(method="percentile")),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/alembert-export-bench"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-study", dest="study", action="store_false")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    bundles = {}
    for label, settings in STUDY.items() if args.study else list(STUDY.items())[:1]:
        variants = ("optimized", "int8_dynamic", "int8_static", "fp16") if not bundles else ("optimized", "int8_dynamic", "int8_static")
        out = args.work / f"{args.name}-{len(bundles)}"
        bundles[label] = build_bundle(ExportConfig(model=str(args.model), out=str(out), data=DEMO, variants=variants, **settings))
    main_bundle = next(iter(bundles.values()))
    rows, summary = bench(BenchConfig(main_bundle, runs=args.runs))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(save_table(summary, SUMMARY_COLUMNS, RESULTS, f"export_{args.name}_summary"))
    print(save_table(rows, COLUMNS, RESULTS, f"export_{args.name}_grid"))
    study_rows = []
    for label, bundle in bundles.items():
        manifest = json.loads((bundle / "manifest.json").read_text())
        timing, _ = bench(BenchConfig(bundle, variants=("optimized", "int8_dynamic", "int8_static"), batches=(1,), seqs=(64,),
                                      runs=args.runs, memory=False))
        speed = {r["runtime"]: r for r in timing}
        for name in ("int8_dynamic", "int8_static"):
            entry = manifest["variants"][name]
            study_rows.append({"settings": label, "variant": name, "accuracy": entry["metric"],
                               "drop_vs_fp32_points": 100 * entry["metric_drop"], "size_mb": entry["size_mb"],
                               "p50_ms_b1_s64": speed[name]["p50_ms"],
                               "speedup_vs_optimized_fp32": speed["optimized"]["p50_ms"] / speed[name]["p50_ms"],
                               "speedup_vs_pytorch": speed[name]["speedup_vs_pytorch"]})
    print(save_table(study_rows, list(study_rows[0]), RESULTS, f"export_{args.name}_int8_study"))
    print(f"load average {load} on {os.cpu_count()} CPUs; 2 threads; bundles under {args.work}")


if __name__ == "__main__":
    main()
