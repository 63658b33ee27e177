"""Export figures for the README: bundle variants of a trained model, timed against PyTorch in one run.

    python benchmarks/export_latency.py outputs/DATE/TIME/student --name student
    python benchmarks/export_latency.py ~/.cache/alembert/teachers/<hash> --name teacher

Builds the bundle (demo task data for calibration and the dev metric), runs the bench grid, and
an int8 study (per-tensor vs per-channel vs reduced range, MinMax/Entropy/Percentile calibration)
at batch 1, sequence 64. Writes benchmarks/results/export_latency/<name>_{summary,grid,int8_study}.md|json
(bundles go under --work). Every ratio in one table comes from one run, timed in turns; absolute
milliseconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import fail, run_cli
from alembert.report import save_table
from export.bench import BenchConfig, bench, SUMMARY_COLUMNS, COLUMNS
from export.bundle import build_bundle
from export.config import CalibrationConfig, ExportConfig

RESULTS = Path(__file__).resolve().parent / "results" / "export_latency"
WORK = Path("~/.cache/alembert/benchmarks/export_latency")
DEMO = DataConfig(task="demo", demo=DemoConfig(dev_size=2000))
STUDY = {  # int8 settings compared on accuracy and speed; the main bundle uses the first
    "per-tensor, minmax": dict(per_channel=False, reduce_range=False, calibration=CalibrationConfig(method="minmax")),
    "per-channel, entropy": dict(per_channel=True, reduce_range=False, calibration=CalibrationConfig(method="entropy", samples=64)),
    "reduce-range, percentile": dict(per_channel=False, reduce_range=True, calibration=CalibrationConfig(method="percentile")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", help="model directory to export (required)")
    parser.add_argument("--name", default=None, help="result file prefix, e.g. student (required)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the bundles are built")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the result tables")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-study", dest="study", action="store_false")
    args = parser.parse_args()
    if args.model is None:
        raise fail("no model given", "pass a model directory saved by python -m distill or save_pretrained as the first argument")
    if not (args.model.expanduser() / "config.json").is_file():
        raise fail(f"{args.model} is not a saved model directory (no config.json)",
                   "pass a directory saved by python -m distill or save_pretrained")
    if not args.name:
        raise fail("--name is required", "pass --name student (or teacher): it prefixes the result files")
    args.work = args.work.expanduser()
    bundles = {}
    for label, settings in STUDY.items() if args.study else list(STUDY.items())[:1]:
        variants = ("optimized", "int8_dynamic", "int8_static", "fp16") if not bundles else ("optimized", "int8_dynamic", "int8_static")
        out = args.work / f"{args.name}-{len(bundles)}"
        bundles[label] = build_bundle(ExportConfig(model=str(args.model), out=str(out), data=DEMO, variants=variants, **settings))
    main_bundle = next(iter(bundles.values()))
    rows, summary = bench(BenchConfig(main_bundle, runs=args.runs))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(save_table(summary, SUMMARY_COLUMNS, args.out, f"{args.name}_summary"))
    print(save_table(rows, COLUMNS, args.out, f"{args.name}_grid"))
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
    print(save_table(study_rows, list(study_rows[0]), args.out, f"{args.name}_int8_study"))
    print(f"load average {load} on {os.cpu_count()} CPUs; 2 threads; bundles under {args.work}")


if __name__ == "__main__":
    run_cli(main)
