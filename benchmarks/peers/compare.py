"""The bundle against Optimum on one student: every model checked against PyTorch, then all timed in turns.

Optimum's graphs are run on a bare onnxruntime session, as alembert's own are: this leaves out the Python overhead
of Optimum's ORTModel wrapper, so the peer's figures are, if anything, flattered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from alembert import hardware
from alembert.data import DataConfig
from alembert.errors import fail
from alembert.modeldir import load_model_dir, load_tokenizer
from export.backends import open_session
from export.bench import BenchConfig as BundleRunners, PYTORCH, load_runners
from export.bundle import MANIFEST, export_model, label_names
from export.config import ExportConfig, LatencyConfig
from export.feeds import load_task_feeds
from export.judge import task_metric
from export.measure import random_feed, time_in_turns
from export.runtime import read_manifest
from benchmarks.peers.venv import ensure_venv, export_with_optimum

PARITY_SHAPE = (4, 32)  # batch, sequence of the random feed every model's logits are compared on
OPTIMUM = "Optimum"
TRANSFORMERS4 = "transformers 4.x PyTorch (what Optimum exported)"


@dataclass(frozen=True)
class PeersConfig:
    model: Path
    data_dir: Path | None  # SST-2-style train/dev/test.tsv: int8 static calibration and every model's metric
    venv: Path
    work: Path
    batches: tuple[int, ...] = (1, 32)
    threads: tuple[int, ...] = (1, 2)
    seq_len: int = 64
    runs: int = 50  # timed calls per model at batch 1; batch 32 gets a fifth of them


def quantization_for(cpu: hardware.CPU) -> str:
    """The AutoQuantizationConfig an Optimum user picks for this CPU, as its documentation describes them."""
    if cpu.has_vnni and "avx512f" in cpu.flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in cpu.flags else "avx2"


def work_dir(config: PeersConfig) -> Path:
    """One folder per student (its weights' hash), so a rerun reuses both exports."""
    weights = sorted(config.model.glob("*.safetensors")) or sorted(config.model.glob("*.bin"))
    if not (config.model / "config.json").is_file() or not weights:
        raise fail(f"--model {config.model} is not a saved model", "pass a student directory written by python -m distill")
    digest = hashlib.sha256(b"".join(path.read_bytes()[:1 << 20] + str(path.stat().st_size).encode() for path in weights))
    return config.work / digest.hexdigest()[:12]


def data_config(data_dir: Path | None) -> DataConfig | None:
    if data_dir is None:
        return None
    paths = {split: data_dir / f"{split}.tsv" for split in ("train", "dev", "test")}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise fail(f"--data-dir lacks {', '.join(missing)}", "point --data-dir at SST-2's folder, or pass --no-data")
    return DataConfig(task="files", **{split: str(path) for split, path in paths.items()}, max_length=128)


def export_bundle(model, tokenizer, out: Path, data: DataConfig | None) -> Path:
    if (out / MANIFEST).is_file():
        return out
    config = ExportConfig(data=data, latency=LatencyConfig(threads=2))
    return export_model(model, tokenizer, out, config, source=str(out.parent))


def prepare(config: PeersConfig, folder: Path) -> tuple[Path, dict[str, Path], dict]:
    """Both exports of the student (each reused when already there): the bundle's folder, Optimum's graph per name,
    and Optimum's record."""
    model, tokenizer = load_model_dir(str(config.model)), load_tokenizer(str(config.model))
    bundle = export_bundle(model, tokenizer, folder / "bundle", data_config(config.data_dir))
    feed_path = folder / "parity_feed.npz"
    np.savez(feed_path, **parity_feed(read_manifest(bundle), tokenizer))
    optimum = export_with_optimum(ensure_venv(config.venv), config.model, folder / "optimum",
                                  quantization_for(hardware.cpu()), feed_path)
    return bundle, {name: folder / "optimum" / file for name, file in optimum["files"].items()}, optimum


def open_all(bundle: Path, model_dir: Path, optimum: dict[str, Path], threads: int) -> dict[str, object]:
    """Runner per model at `threads`: PyTorch, every bundle variant on every runtime that passed its checks (as
    export.bench opens them), and every Optimum graph on onnxruntime."""
    torch.set_num_threads(threads)
    runners = load_runners(BundleRunners(bundle, model=str(model_dir), threads=threads, memory=False), read_manifest(bundle))[0]
    runners |= {f"{OPTIMUM} {name}": open_session(path, threads=threads).run for name, path in optimum.items()}
    return runners


def side_of(name: str) -> str:
    return "PyTorch" if name == PYTORCH else OPTIMUM if name.startswith(OPTIMUM) else "alembert"


def parity_feed(manifest: dict, tokenizer) -> dict[str, np.ndarray]:
    batch, seq = PARITY_SHAPE
    feed = random_feed(manifest.get("inputs", ["input_ids", "attention_mask"]), batch, seq, len(tokenizer), seed=1)
    feed["attention_mask"][1:, seq // 2:] = 0  # padded rows too: a graph that ignores the mask must show it
    return feed


def check_models(runners: dict[str, object], folder: Path, optimum: dict, config: PeersConfig) -> dict[str, dict]:
    """Each model's max |logit difference| from alembert's PyTorch model on the parity feed and, with data, its task
    metric on the bundle's metric batches; the transformers 4.x model Optimum exported from is compared too."""
    model, tokenizer = load_model_dir(str(config.model)), load_tokenizer(str(config.model))
    feed = dict(np.load(folder / "parity_feed.npz"))
    data = data_config(config.data_dir)
    feeds = load_task_feeds(ExportConfig(data=data), tokenizer, label_names(model), model) if data else None
    reference = first_output(runners[PYTORCH](feed))
    checks = {}
    for name, runner in tqdm(runners.items(), desc="check every model", unit="model"):
        checks[name] = {"max_abs_diff": float(np.abs(first_output(runner(feed)) - reference).max())}
        if feeds is not None:
            metric, metrics = task_metric(runner, feeds)
            checks[name] |= {"metric_name": metric, "metric": metrics[metric]}
    if optimum.get("reference_logits") is not None:
        transformers4 = np.asarray(optimum["reference_logits"], dtype=np.float32)
        checks[TRANSFORMERS4] = {"max_abs_diff": float(np.abs(transformers4 - reference).max())}
    return checks


def first_output(outputs) -> np.ndarray:
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return first.float().numpy() if isinstance(first, torch.Tensor) else np.asarray(first, dtype=np.float32)


def time_all(bundle: Path, optimum: dict[str, Path], config: PeersConfig, vocab: int, inputs: list[str]) -> dict:
    """{(threads, batch): {model name: Timing}}: within each setting every model runs in turns."""
    timings = {}
    for threads in config.threads:
        runners = open_all(bundle, config.model, optimum, threads)
        for batch in tqdm(config.batches, desc=f"time at {threads} threads", unit="batch size"):
            runs = config.runs if batch == 1 else max(10, config.runs // 5)
            feed = random_feed(inputs, batch, config.seq_len, vocab)
            timings[(threads, batch)] = time_in_turns(runners, feed, runs=runs, warmup=5 if batch == 1 else 2)
        del runners  # sessions of one thread count never spin beside the next one's
    return timings
