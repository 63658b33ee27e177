"""Data-parallel training: 2 CPU processes (gloo) reach the same weights as 1 process at the same global batch.

The two ranks are started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment), running this file's __main__; the one-process reference runs in the test itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
PER_RANK_BATCH, WORLD = 4, 2


def _train(student_dir: str, work: Path, batch_size: int, layerdrop: float | None = None) -> dict:
    from torch import nn

    from distill import distributed, engine
    from alembert.data import DataConfig, encode, load_task, loader
    from alembert.tasks import task_named
    from alembert.demo import DemoConfig
    from distill.losses import Objective, Term
    from alembert.modeldir import load_classifier, load_tokenizer

    distributed.init_from_env()
    tokenizer = load_tokenizer(student_dir)
    task = load_task(DataConfig(demo=DemoConfig(train_size=32, dev_size=16, test_size=8), max_length=24))
    train = loader(encode(task, "train", tokenizer, DataConfig(max_length=24)), tokenizer, batch_size=batch_size, task=task_named("classification"),
                   shuffle=True, seed=5)
    dev = loader(encode(task, "dev", tokenizer, DataConfig(max_length=24)), tokenizer, batch_size=16, task=task_named("classification"))
    model, _ = load_classifier(student_dir)
    for module in model.modules():  # no dropout: the ranks draw different masks than one process would
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = engine.TrainConfig(epochs=2, batch_size=batch_size, lr=3e-3, warmup_ratio=0.0, seed=11, layerdrop=layerdrop)
    history = engine.fit(model, train, dev, Objective((Term("hard", 1.0),)), config, desc="ddp")
    result = {"logits": engine.predict_logits(model, dev)[0], "history": history.epochs}
    if distributed.is_main():
        work.mkdir(parents=True, exist_ok=True)
        torch.save(result, work / "result.pt")
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# With LayerDrop the ranks match one process only if every rank skips the layers the one process skips at each step.
# (Two layers accumulate more float reordering from the split batch than one, and with length buckets each rank pads
# its share to its own longest row: hence the wider tolerance there.)
@pytest.mark.parametrize("layers, layerdrop, tolerance", [(1, None, 1e-4), (2, 0.5, 3e-3)])
def test_two_processes_match_one_at_the_same_global_batch(tiny_dir, tmp_path, capsys, layers, layerdrop, tolerance):
    student = str(tiny_dir("bert", layers))
    port = _free_port()
    ranks = []
    for rank in range(WORLD):
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        ranks.append(subprocess.Popen([sys.executable, str(HERE), student, str(tmp_path / "ddp"), str(layerdrop)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    expected = _train(student, tmp_path / "single", PER_RANK_BATCH * WORLD, layerdrop)  # meanwhile, one process at the global batch
    outputs = [rank.communicate(timeout=600) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], [err[-2000:] for _, err in outputs]
    got = torch.load(tmp_path / "ddp" / "result.pt", weights_only=True)
    assert torch.allclose(got["logits"], expected["logits"], atol=tolerance), (got["logits"] - expected["logits"]).abs().max()
    assert [r["accuracy"] for r in got["history"]] == [r["accuracy"] for r in expected["history"]]
    assert abs(got["history"][-1]["loss"] - expected["history"][-1]["loss"]) < tolerance
    assert "ddp epoch 2" in outputs[0][0] and "ddp epoch" not in outputs[1][0]  # only rank 0 reports
    assert len(expected["history"]) == 2


if __name__ == "__main__":
    torch.set_num_threads(1)
    _train(sys.argv[1], Path(sys.argv[2]), PER_RANK_BATCH, None if sys.argv[3] == "None" else float(sys.argv[3]))
