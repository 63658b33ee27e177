#!/bin/bash
# SST-2 edge students: a BiLSTM, a TextCNN and a static student distilled (kd) from the all-data MiniLM-L6 teacher,
# each trained and timed against the teacher in its own python -m distill run (batch-1 PyTorch latency, sequence 64,
# the summary's latency_ms), on the first 20,000 training sentences for 3 epochs (cnn_tang: and their Tang variants).
#   bash benchmarks/edge_students.sh TEACHER_DIR [DATA_DIR]
# TEACHER_DIR: the SST-2 teacher fine-tuned on every training sentence (python -m benchmarks.sst2 mode=all caches it
# under ~/.cache/alembert/teachers/; its row's record.json names the directory). Results: benchmarks/results/edge/.
set -euo pipefail
teacher=${1:?give the fine-tuned SST-2 teacher directory}
data=${2:-../shared/data/sst2}
out=benchmarks/results/edge
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
only=${ONLY:-bilstm cnn static cnn_tang}  # ONLY="cnn_tang" reruns one row
declare -A extra=(
  [bilstm]="student.kind=bilstm" [cnn]="student.kind=cnn" [static]="student.kind=static"
  # Tang et al.'s augmentation (4 variants per sentence: about 100k transfer sentences) and a narrower, faster CNN
  [cnn_tang]="student.kind=cnn +student.settings.kernel_sizes=[3,5] augment.enabled=true augment.method=tang"
)
for row in $only; do
  # shellcheck disable=SC2086  # the row's overrides are words
  python -m distill teacher="$teacher" finetune.mode=never data.task=files data.train="$data/train.tsv" \
    data.dev="$data/dev.tsv" data.test="$data/test.tsv" data.max_length=64 data.max_train_examples=20000 \
    data.max_dev_examples=2000 baseline=false train.lr=2e-3 train.epochs=3 ${extra[$row]} hydra.run.dir="$work/$row"
  cp "$work/$row/summary.md" "$out/sst2_$row.md"
  cp "$work/$row/summary.json" "$out/sst2_$row.json"
done
