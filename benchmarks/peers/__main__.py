"""`python -m benchmarks.peers --model STUDENT_DIR`: the bundle against Optimum on the same student.

    python -m benchmarks.peers --model outputs/DATE/TIME/student                  # SST-2 data from ../shared/data/sst2
    python -m benchmarks.peers --model DIR --no-data --runs 20                     # any model, no metric column

Exports the student as an alembert bundle (every variant, every installed runtime, each checked against PyTorch)
and with Optimum (fp32, O2, O3, dynamic int8 for this CPU) in its own venv, since optimum-onnx pins transformers 4.x;
then times every model in turns in this process at batch 1 and 32, with 1 and 2 threads. Writes peers.md,
peers.json and peers.png to --out. Both exports are cached per student under --work.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from alembert.errors import fail, run_cli

DEFAULT_DATA = Path("../shared/data/sst2")
CACHE = Path("~/.cache/alembert")


def parse_args(argv: list[str] | None):
    from benchmarks.peers.compare import PeersConfig

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a student directory saved by python -m distill")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="train/dev/test.tsv (SST-2 style)")
    parser.add_argument("--no-data", action="store_true", help="no metric column and no int8 static variant")
    parser.add_argument("--venv", type=Path, default=CACHE / "peers-venv", help="the peer's venv (created once)")
    parser.add_argument("--work", type=Path, default=CACHE / "peers", help="both exports, per student")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/peers"))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--runs", type=int, default=50, help="timed calls per model at batch 1 (batch 32: a fifth)")
    args = parser.parse_args(argv)
    if args.runs < 5 or min(args.batches + args.threads) < 1 or args.seq_len < 2:
        raise fail("--runs must be at least 5, batches and threads positive, --seq-len at least 2",
                   "e.g. --runs 50 --batches 1 32 --threads 2 1 --seq-len 64")
    data = None if args.no_data else args.data_dir.expanduser()
    if data is not None and not data.is_dir():
        raise fail(f"--data-dir {args.data_dir} is not a folder", "pass SST-2's folder, or --no-data to skip metrics")
    return PeersConfig(args.model.expanduser(), data, args.venv.expanduser(), args.work.expanduser(), tuple(args.batches),
                       tuple(args.threads), args.seq_len, args.runs), args.out


def main(argv: list[str] | None = None) -> None:
    config, out = parse_args(argv)
    from benchmarks.peers import compare, report
    from export.runtime import read_manifest

    folder = compare.work_dir(config)
    bundle, optimum_files, optimum = compare.prepare(config, folder)
    manifest = read_manifest(bundle)
    checks = compare.check_models(compare.open_all(bundle, config.model, optimum_files, 1), folder, optimum, config)
    vocab = int(manifest.get("vocab_size") or _vocab(config.model))
    timings = compare.time_all(bundle, optimum_files, config, vocab, manifest.get("inputs", ["input_ids", "attention_mask"]))
    command = "python -m benchmarks.peers " + shlex.join(sys.argv[1:] if argv is None else argv)
    print((report.write(out, timings, checks, optimum, manifest, command=command, seq_len=config.seq_len)).read_text())


def _vocab(model_dir: Path) -> int:
    import json

    return int(json.loads((model_dir / "config.json").read_text())["vocab_size"])


if __name__ == "__main__":
    run_cli(main)
