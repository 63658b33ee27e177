#!/bin/bash
# SST-2 edge students: a BiLSTM, a TextCNN and a static student distilled (kd) from the all-data MiniLM-L6 teacher,
# each trained and timed against the teacher in its own python -m distill run (batch-1 PyTorch latency, sequence 64,
# the summary's latency_ms), on the first 20,000 training sentences for 3 epochs.
#   bash benchmarks/edge_students.sh TEACHER_DIR [DATA_DIR]
# TEACHER_DIR: the SST-2 teacher fine-tuned on every training sentence (python -m benchmarks.sst2 mode=all caches it
# under ~/.cache/alembert/teachers/; its row's record.json names the directory). Results: benchmarks/results/edge/.
set -euo pipefail
teacher=${1:?give the fine-tuned SST-2 teacher directory}
data=${2:-../shared/data/sst2}
out=benchmarks/results/edge
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for kind in bilstm cnn static; do
  python -m distill teacher="$teacher" finetune.mode=never data.task=files data.train="$data/train.tsv" \
    data.dev="$data/dev.tsv" data.test="$data/test.tsv" data.max_length=64 data.max_train_examples=20000 \
    data.max_dev_examples=2000 baseline=false student.kind=$kind train.lr=2e-3 train.epochs=3 hydra.run.dir="$work/$kind"
  cp "$work/$kind/summary.md" "$out/sst2_$kind.md"
  cp "$work/$kind/summary.json" "$out/sst2_$kind.json"
done
