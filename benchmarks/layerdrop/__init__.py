"""Accuracy against depth: the MiniLM-L6 teacher fine-tuned with LayerDrop and without it, each cut to 1 .. 6 layers
by `drop_layers strategy=depth` with no retraining, on SST-2 or on the demo task.

    python -m benchmarks.layerdrop data_dir=../shared/data/sst2   # SST-2, the sst2 benchmark's full-mode subsets
    python -m benchmarks.layerdrop mode=demo                        # the built-in demo task

Both fine-tunes run in this process (their own teacher cache under work_dir, so both are timed here), with the
settings `python -m distill` would use; the only difference is finetune.train.layerdrop=<rate>. At each depth the
two cut models answer the same test examples: the gap carries a 95% paired-bootstrap interval. Latency is the cut
model's batch-1 PyTorch forward at seq_len, in turns with nothing else running. Results: benchmarks/results/layerdrop/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from alembert.config import bounded, from_dict
from alembert.errors import run_cli
from benchmarks.table.cli import Compose, data_overrides
from benchmarks.table.config import BenchConfig
from pipeline.run import RunConfig


@dataclass(frozen=True)
class DepthBenchConfig(BenchConfig):
    rate: float = bounded(0.2, above=0.0, high=0.9)  # finetune.train.layerdrop of the LayerDrop teacher


@dataclass(frozen=True)
class Variant:
    name: str  # a column stem: plain, layerdrop
    label: str
    config: RunConfig


def variants(bench: DepthBenchConfig, compose: Compose) -> list[Variant]:
    cache = Path(bench.work_dir).expanduser() / "layerdrop-teachers"
    shared = [*bench.base_overrides, *data_overrides(bench), *bench.settings.overrides, *bench.overrides,
              f"finetune.cache_dir={cache}", "finetune.mode=auto"]
    plain = from_dict(RunConfig, compose(shared))
    dropped = from_dict(RunConfig, compose([*shared, f"finetune.train.layerdrop={bench.rate}"]))
    return [Variant("plain", "fine-tuned without LayerDrop", plain),
            Variant("layerdrop", f"fine-tuned with LayerDrop p={bench.rate:g}", dropped)]


def run_depth_benchmark(raw: dict, module: str, compose: Compose, command: str) -> None:
    """Check everything, fine-tune both teachers, cut and measure them, report; bad input is one line."""
    def job() -> None:
        bench = from_dict(DepthBenchConfig, {key: value for key, value in raw.items() if key != "hydra"})
        chosen = variants(bench, compose)
        from benchmarks.layerdrop.measure import measure  # after the checks: bad input fails before torch loads
        from benchmarks.layerdrop.report import write_results

        start = time.perf_counter()
        result = measure(chosen, bench)
        path = write_results(result, bench, command=command)
        print(f"written: {path}, {path.with_suffix('.json')}, {path.with_suffix('.png')} "
              f"({time.perf_counter() - start:.0f} s)")

    run_cli(job)
