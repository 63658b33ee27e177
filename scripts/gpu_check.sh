#!/usr/bin/env bash
# The checks that need a CUDA GPU, kept out of CI (its machines have none). From the repository root, after the
# README's install on a GPU machine:   bash scripts/gpu_check.sh [OUT_DIR]
# It runs the default distillation (python -m distill, the embedded demo) on the CPU and on cuda in fp32, bf16 and
# fp16, then a two-trial demo sweep on each device, and prints every figure beside the CPU's.
set -euo pipefail
out=${1:-gpu-check}
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU; run it on a GPU machine")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
mkdir -p "$out"
distil() {  # NAME DEVICE PRECISION: one run, its own teacher cache, so the teacher's fine-tune is timed on DEVICE too
  local name=$1 device=$2 precision=$3
  echo "gpu_check: distill on $device, $precision"
  python -m distill train.device="$device" train.precision="$precision" finetune.train.device="$device" \
    finetune.train.precision="$precision" finetune.cache_dir="$out/$name/teacher-cache" hydra.run.dir="$out/$name" \
    > "$out/$name.log" 2>&1 || { tail -n 5 "$out/$name.log"; exit 1; }
}
distil cpu-fp32 cpu fp32
distil cuda-fp32 cuda fp32
distil cuda-bf16 cuda bf16
distil cuda-fp16 cuda fp16
for device in cpu cuda; do
  echo "gpu_check: two-trial sweep on $device"
  start=$(date +%s)
  python -m distill.sweep sweep=demo n_trials=2 out_dir="$out/sweep-$device" train.device="$device" \
    finetune.train.device="$device" > "$out/sweep-$device.log" 2>&1 || { tail -n 5 "$out/sweep-$device.log"; exit 1; }
  echo $(( $(date +%s) - start )) > "$out/sweep-$device.seconds"
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = ["cpu-fp32", "cuda-fp32", "cuda-bf16", "cuda-fp16"]
rows = {run: {row["model"]: row for row in json.loads((out / run / "summary.json").read_text())} for run in runs}
metric = next(key for key in rows["cpu-fp32"]["teacher"] if key in ("accuracy", "f1", "pearson", "mse"))
print(f"\n| run | model | {metric} | train s | vs CPU train s | device | dtype |\n|---|---|---|---|---|---|---|")
for run in runs:
    for model, row in rows[run].items():
        cpu_s = rows["cpu-fp32"][model]["train_s"]
        ratio = f"{row['train_s'] / cpu_s:.2f}x" if cpu_s else "-"
        print(f"| {run} | {model} | {row[metric]:.4f} | {row['train_s']:.1f} | {ratio} | {row.get('device_name')} | {row.get('dtype')} |")
sweeps = {device: int((out / f"sweep-{device}.seconds").read_text()) for device in ("cpu", "cuda")}
print(f"\ntwo-trial sweep: cpu {sweeps['cpu']} s, cuda {sweeps['cuda']} s ({sweeps['cuda'] / max(sweeps['cpu'], 1):.2f}x)")
PY
