"""Resumable training checkpoints: everything a run needs to continue as if it had never stopped.

Layout, under the directory `fit` is given (`<run output>/checkpoints/<variant>-stage<N>/` from `pipeline.run`):

    step-00000040/state.pt    model + projections, optimizer, scheduler, grad scaler, every rank's RNG
                              states, the data position (epoch, batches consumed) and the loop's history
    step-00000040/meta.json   the fingerprint of the run that wrote it (readable without torch)
    latest                    the name of the newest complete checkpoint

A checkpoint directory is written beside its final name and renamed into place, and `latest` is replaced
with os.replace, so a run killed at any instant leaves the previous checkpoint intact.

state.pt holds only tensors, numbers, strings and lists/tuples/dicts of them, so it loads with
torch.load(weights_only=True): reading a checkpoint never runs code from the file. Format 2 made it so
(numpy's RNG state is stored as a tensor); a format-1 checkpoint is refused by the fingerprint check.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill import distributed
from alembert.errors import atomic_dir, atomic_write_text, fail

FORMAT = 2  # 2: state.pt loads with weights_only=True
STATE_FILE, META_FILE, LATEST_FILE = "state.pt", "meta.json", "latest"


@dataclass
class History:
    """Dev metrics and mean loss terms at each evaluation, and the best evaluation kept."""

    epochs: list[dict] = field(default_factory=list)  # one record per evaluation: {"epoch", "step", terms..., metrics...}
    best_epoch: int = -1
    best_metric: float = -math.inf
    best_step: int = -1


@dataclass
class LoopState:
    """Where the training loop is; all of it goes into a checkpoint."""

    history: History = field(default_factory=History)
    epoch: int = 0  # the epoch in progress, 0-based
    batch: int = 0  # batches of that epoch already consumed
    step: int = 0  # optimizer steps taken
    sums: dict[str, float] = field(default_factory=dict)  # loss terms summed since the last evaluation
    counted: int = 0  # batches in `sums`
    best_state: dict | None = None
    finished: bool = False
    last_loss: float = math.nan  # the latest batch's loss, for TensorBoard

    def evals_since_best(self) -> int:
        steps = [record["step"] for record in self.history.epochs]
        return len(steps) - 1 - steps.index(self.history.best_step) if self.history.best_step in steps else len(steps)


def capture_rng() -> dict:
    """Every generator's state as tensors and plain types, which torch.load(weights_only=True) accepts."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(_numpy_tuple(state["numpy"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list:
    # ("MT19937", uint32 keys, pos, has_gauss, cached_gaussian): the key array would pickle as an ndarray,
    # which weights_only refuses, so it travels as an int64 tensor (every uint32 fits).
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _numpy_tuple(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


def fingerprint(modules: tuple[nn.Module, ...], *, stage: str, terms: str, config: dict, batches: int) -> dict:
    """What must match for a checkpoint to be resumable by this run (JSON-safe, compared key by key)."""
    shapes = {f"{i}.{name}": list(p.shape) for i, module in enumerate(modules) for name, p in module.state_dict().items()}
    # Ordered so the first difference reported is the cause: a new world size or batch size also changes batches per epoch.
    return {"format": FORMAT, "stage": stage, "loss terms": terms, "world size": distributed.world()[1],
            "parameters": shapes, "settings": config, "batches per epoch": batches}


class Checkpointer:
    """Saves and restores LoopState plus training objects under one directory. Every rank calls save/restore."""

    def __init__(self, directory: str | Path, expected: dict):
        self.directory = Path(directory)
        self.expected = expected

    @property
    def latest(self) -> Path | None:
        pointer = self.directory / LATEST_FILE
        if not pointer.is_file():
            return None
        path = self.directory / pointer.read_text().strip()
        return path if (path / STATE_FILE).is_file() else None

    def describe_latest(self) -> str:
        latest = self.latest
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"

    def save(self, state: LoopState, modules, optimizer, scheduler, scaler) -> None:
        rng = distributed.gather_objects(capture_rng())
        if distributed.is_main():
            name = "final" if state.finished else f"step-{state.step:08d}"
            payload = {"loop": asdict_loop(state), "modules": [m.state_dict() for m in modules], "rng": rng,
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
            with atomic_dir(self.directory / name) as tmp:
                torch.save(payload, tmp / STATE_FILE)
                meta = {"step": state.step, "epoch": state.epoch, "batch": state.batch, "finished": state.finished,
                        "fingerprint": self.expected}
                (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            atomic_write_text(self.directory / LATEST_FILE, name)
            for old in self.directory.iterdir():  # keep only the newest: a checkpoint is a full copy of the run
                if old.is_dir() and old.name != name and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()

    def restore(self, modules, optimizer, scheduler, scaler) -> LoopState | None:
        """Load the latest checkpoint into the given objects; None when there is none to resume."""
        path = self.latest
        if path is None:
            return None
        self._check_compatible(path)
        try:
            payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, foreign, or holding objects weights_only refuses: torch raises several types
            raise fail(f"the checkpoint {path} cannot be read ({type(err).__name__})", f"delete {path} and resume again") from None
        for module, weights in zip(modules, payload["modules"]):
            module.load_state_dict(weights)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        restore_rng(payload["rng"][distributed.world()[0]])
        return loop_from_dict(payload["loop"])

    def _check_compatible(self, path: Path) -> None:
        try:
            found = json.loads((path / META_FILE).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            raise fail(f"the checkpoint {path} has no readable {META_FILE}", f"delete {self.directory} to start afresh") from None
        for key, wanted in self.expected.items():
            if found.get(key) != wanted:
                raise fail(f"cannot resume from {path}: it was written by a run with a different {key} "
                           f"({_difference(found.get(key), wanted)})",
                           f"resume with the settings it was written with, or delete {self.directory} to start afresh")


def _difference(found, wanted) -> str:
    if isinstance(found, dict) and isinstance(wanted, dict):
        for key in sorted(set(found) | set(wanted)):
            if found.get(key) != wanted.get(key):
                return f"{key}: checkpoint {found.get(key)}, now {wanted.get(key)}"
    return f"checkpoint {found}, now {wanted}"


def asdict_loop(state: LoopState) -> dict:
    return {**{k: v for k, v in vars(state).items() if k != "history"}, "history": asdict(state.history)}


def loop_from_dict(data: dict) -> LoopState:
    return LoopState(**{**data, "history": History(**data["history"])})
